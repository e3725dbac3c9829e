"""dref.metrics: scraped with prometheus_client after real in-memory operations."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

import dref
from dref import metrics
from dref.changes import ChangeHub
from dref.errors import (
    ChangeStreamLaggedError,
    ElementNotFoundError,
    LockStolenError,
    LockTimeoutError,
)

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

Labels = tuple[tuple[str, str], ...]


def scrape(registry: CollectorRegistry) -> dict[tuple[str, Labels], float]:
    """Every sample of the text exposition: (name, sorted labels) → value."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def op_count(samples: dict[tuple[str, Labels], float], kind: str, outcome: str) -> float:
    key = (("backend", "inmemory"), ("kind", kind), ("outcome", outcome))
    return samples.get(("dref_operation_duration_seconds_count", key), 0.0)


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    reg = CollectorRegistry()
    metrics.enable_metrics(reg)
    try:
        yield reg
    finally:
        metrics.disable_metrics()


async def test_operations_counted_by_kind_and_outcome(registry: CollectorRegistry) -> None:
    async with dref.connect("inmemory") as ctx:
        ref = await ctx.make(1, "metrics:ops")  # one set_if_not_exist
        await ref.set(2)
        assert await ref.get() == 2
        await ref.update(lambda n: n + 1)  # modify
        await ref.delete()
        with pytest.raises(ElementNotFoundError):
            await ref.get()
    samples = scrape(registry)
    assert op_count(samples, "set_if_not_exist", "ok") == 1
    assert op_count(samples, "set", "ok") == 1
    assert op_count(samples, "get", "ok") == 1
    assert op_count(samples, "get", "not_found") == 1
    assert op_count(samples, "modify", "ok") == 1
    assert op_count(samples, "delete", "ok") == 1
    get_ok = (("backend", "inmemory"), ("kind", "get"), ("outcome", "ok"))
    inf = (*get_ok[:1], *get_ok[1:2], ("le", "+Inf"), get_ok[2])
    assert samples[("dref_operation_duration_seconds_bucket", tuple(sorted(inf)))] == 1
    assert 0 < samples[("dref_operation_duration_seconds_sum", get_ok)] < 1


async def test_locks_waiting_held_lost_and_timeouts(registry: CollectorRegistry) -> None:
    async with dref.connect("inmemory") as ctx:
        async with ctx.lock("metrics:lock"):
            assert scrape(registry)[("dref_locks_held", ())] == 1
            waiter = asyncio.create_task(ctx.lock("metrics:lock", timeout=0.2).__aenter__())
            await asyncio.sleep(0)  # the waiter starts: it is counted before its first try
            assert scrape(registry)[("dref_locks_waiting", ())] == 1
            with pytest.raises(LockTimeoutError):
                await waiter
        samples = scrape(registry)
        assert samples[("dref_locks_waiting", ())] == 0
        assert samples[("dref_locks_held", ())] == 0
        assert samples[("dref_locks_lost_total", ())] == 0
        assert op_count(samples, "lock", "ok") == 1
        assert op_count(samples, "lock", "timeout") == 1

        # Lost: the key is deleted under the holder; the owner-checked release finds it gone.
        with pytest.raises(LockStolenError):
            async with ctx.lock("metrics:stolen"):
                await ctx.backend.delete("metrics:stolen")
        samples = scrape(registry)
        assert samples[("dref_locks_lost_total", ())] == 1
        assert samples[("dref_locks_held", ())] == 0


async def test_change_subscribers_and_lag(registry: CollectorRegistry) -> None:
    before = scrape(registry)
    async with dref.connect("inmemory") as ctx:
        ref = await ctx.make(0, "metrics:changes")
        async with ref.changes():
            during = scrape(registry)
    after = scrape(registry)
    subscribers = ("dref_change_subscribers", ())
    assert during[subscribers] == before[subscribers] + 1
    assert after[subscribers] == before[subscribers]

    hub = ChangeHub(capacity=1)
    sub = hub.subscribe("x")
    hub.publish_all([dref.changes.ChangeEvent("x", b"1"), dref.changes.ChangeEvent("x", b"2")])
    lagged = ("dref_change_lagged_total", ())
    assert scrape(registry)[lagged] == before[lagged] + 1
    await sub.__anext__()
    with pytest.raises(ChangeStreamLaggedError):
        await sub.__anext__()


async def test_disabled_records_nothing() -> None:
    assert metrics.ops is None
    async with dref.connect("inmemory") as ctx:
        ref = await ctx.make(1, "metrics:off")
        await ref.set(3)
        assert await ref.get() == 3
        async with ctx.lock("metrics:off-lock"):
            pass
    registry = CollectorRegistry()
    ops = metrics.enable_metrics(registry)
    try:
        assert ops.series == {}
        assert not ops.held
        assert metrics.enable_metrics(registry) is ops  # idempotent
    finally:
        metrics.disable_metrics()
    assert metrics.ops is None
    assert scrape(registry) == {}  # unregistered


def test_dref_works_without_prometheus_client() -> None:
    """Importing dref and running operations neither needs nor imports prometheus_client."""
    code = textwrap.dedent(
        """
        import asyncio, sys
        sys.modules["prometheus_client"] = None  # as if not installed
        import dref

        async def main():
            async with dref.connect("inmemory") as ctx:
                ref = await ctx.make(1, "x")
                await ref.update(lambda n: n + 1)
                async with ctx.lock("l"):
                    assert await ref.get() == 2

        asyncio.run(main())
        from dref.metrics import enable_metrics
        try:
            enable_metrics()
        except ImportError as exc:
            assert "dref-core[metrics]" in str(exc), exc
        else:
            raise AssertionError("enable_metrics worked without prometheus_client")
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
