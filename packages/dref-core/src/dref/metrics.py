"""Prometheus metrics of dref (the optional extra `dref-core[metrics]`, i.e. `prometheus-client`).

Off by default. `enable_metrics()` (once per process) turns on the operation histogram and
registers `DRefCollector`, which reads the rest when scraped:

    from dref.metrics import enable_metrics

    enable_metrics()  # prometheus_client.REGISTRY unless registry= is given
    prometheus_client.start_http_server(9100, addr="127.0.0.1")

Cost: with metrics off, each operation pays one attribute check (`metrics.ops is None`); this
module imports `prometheus_client` only when metrics are enabled or scraped, so dref works
without it. With metrics on, each operation adds its duration to plain counts
(`OperationMetrics.observe`), turned into a histogram on scrape;
locks held and lost come from the observer hooks (`dref.hookspecs`), which this module
implements as a built-in plugin; locks waiting and change-stream subscribers are counts read on
scrape. The names and labels are listed in docs/observability.md.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from bisect import bisect_left
from collections.abc import Awaitable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from dref.errors import (
    BackendTimeoutError,
    ElementNotFoundError,
    LockTimeoutError,
    StaleFenceError,
)
from dref.hookspecs import hookimpl

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from dref.changes import ChangeHub

__all__ = [
    "LATENCY_BUCKETS",
    "DRefCollector",
    "OperationMetrics",
    "disable_metrics",
    "enable_metrics",
    "ops",
    "outcome_of",
]

_T = TypeVar("_T")

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Seconds: from an in-memory get (~1 µs, in the first bucket) to a slow lock wait."""


def outcome_of(exc: BaseException | None) -> str:
    """The `outcome` label of an operation that raised `exc` (None: it returned)."""
    if exc is None:
        return "ok"
    if isinstance(exc, ElementNotFoundError):
        return "not_found"
    if isinstance(exc, StaleFenceError):
        return "stale_fence"
    if isinstance(exc, LockTimeoutError | BackendTimeoutError):
        return "timeout"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "error"


class _State:
    """Counts kept by the core whether or not metrics are on (each costs nothing per operation)."""

    def __init__(self) -> None:
        self.hubs: weakref.WeakSet[ChangeHub] = weakref.WeakSet()
        """Every live `ChangeHub` (one per backend instance), for the subscriber gauge."""
        self.lagged = 0
        """Subscriptions ended by `ChangeStreamLaggedError` since the process started."""


state = _State()


class _Series:
    """One histogram series, kept as plain counts and exported on scrape (cheaper than
    prometheus_client's locked `Histogram.observe`)."""

    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: +Inf
        self.count = 0
        self.sum = 0.0


class OperationMetrics:
    """What is recorded per operation while metrics are on (`ops` is this, else None)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.series: dict[tuple[str, str, str], _Series] = {}
        """(backend, kind, outcome) → durations of the operations."""
        self.waiting = 0
        """Tasks in `async with ctx.lock(...)` waiting for the lock."""
        self.held: set[tuple[str, int]] = set()
        """(name, token) of the locks held in this process (from the observer hooks)."""
        self.lost = 0
        """Locks lost while held (`dref_lock_lost`)."""
        self.collector = DRefCollector(self)

    def observe(self, backend: str, kind: str, outcome: str, seconds: float) -> None:
        key = (backend, kind, outcome)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = _Series()
        series.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        series.count += 1
        series.sum += seconds

    async def measure(self, backend: str, kind: str, op: Awaitable[_T]) -> _T:
        """Await `op`, recording its duration and outcome."""
        start = time.perf_counter()
        try:
            result = await op
        except BaseException as exc:
            self.observe(backend, kind, outcome_of(exc), time.perf_counter() - start)
            raise
        self.observe(backend, kind, "ok", time.perf_counter() - start)
        return result

    async def measure_lock(self, backend: str, op: Awaitable[_T]) -> _T:
        """`measure(backend, "lock", op)`, counting the task as waiting meanwhile."""
        self.waiting += 1
        try:
            return await self.measure(backend, "lock", op)
        finally:
            self.waiting -= 1


ops: OperationMetrics | None = None
"""The metrics of this process while enabled; None when off (the per-operation check)."""


def enable_metrics(registry: CollectorRegistry | None = None) -> OperationMetrics:
    """Turn metrics on for this process and register them in `registry` (default:
    `prometheus_client.REGISTRY`). Idempotent for the same registry; another registry replaces
    the previous one. `ImportError` names the extra when `prometheus-client` is missing."""
    global ops
    try:
        import prometheus_client
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "dref metrics need prometheus-client: pip install 'dref-core[metrics]'"
        ) from exc
    if registry is None:
        registry = prometheus_client.REGISTRY
    if ops is not None:
        if ops.registry is registry:
            return ops
        disable_metrics()
    metrics = OperationMetrics(registry)
    registry.register(metrics.collector)
    ops = metrics
    return metrics


def disable_metrics() -> None:
    """Turn metrics off and unregister them (no-op when off)."""
    global ops
    metrics, ops = ops, None
    if metrics is not None:
        metrics.registry.unregister(metrics.collector)


class DRefCollector:
    """Reads lock and change-stream state when scraped (registered by `enable_metrics`)."""

    def __init__(self, metrics: OperationMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Any]:
        return []  # names are known from collect(); nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        m = self._metrics
        durations = HistogramMetricFamily(
            "dref_operation_duration_seconds",
            "Duration of dref operations by backend, kind and outcome (_count: operations).",
            labels=("backend", "kind", "outcome"),
        )
        bounds = [*(repr(b) for b in LATENCY_BUCKETS), "+Inf"]
        for key, series in list(m.series.items()):
            cumulative, total = [], 0
            for bound, n in zip(bounds, series.buckets, strict=True):
                total += n
                cumulative.append((bound, total))
            durations.add_metric(list(key), cumulative, series.sum)
        yield durations
        yield GaugeMetricFamily(
            "dref_locks_waiting", "Tasks waiting to acquire a dref lock.", value=m.waiting
        )
        yield GaugeMetricFamily(
            "dref_locks_held", "dref locks held by this process.", value=len(m.held)
        )
        yield CounterMetricFamily(
            "dref_locks_lost", "dref locks lost while held (LockStolenError).", value=m.lost
        )
        yield GaugeMetricFamily(
            "dref_change_subscribers",
            "Open change-stream subscriptions (change streams, on_change, lock waiters).",
            value=sum(hub.subscriber_count() for hub in list(state.hubs)),
        )
        yield CounterMetricFamily(
            "dref_change_lagged",
            "Change-stream subscriptions ended by ChangeStreamLaggedError.",
            value=state.lagged,
        )


# -- observer hooks (registered as a built-in plugin of every context) ----------------------------
@hookimpl
def dref_lock_acquired(name: str, token: int) -> None:
    if ops is not None:
        ops.held.add((name, token))


@hookimpl
def dref_lock_released(name: str, token: int) -> None:
    if ops is not None:
        ops.held.discard((name, token))


@hookimpl
def dref_lock_lost(name: str, token: int) -> None:
    if ops is not None:
        ops.held.discard((name, token))
        ops.lost += 1
