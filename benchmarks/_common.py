"""Helpers shared by the benchmarks: timing async operations, targets, a side-by-side rich table,
JSON results and an optional PNG plot (only if matplotlib is importable).

A benchmark compares a *subject* (dref over some backend) with a *baseline* doing the same work
without dref, operation by operation:

```python
rows = [Row("get", baseline=Stats.of(base_samples), subject=Stats.of(dref_samples),
            target=max_overhead(5))]
console.print(comparison_table(rows, title="…", baseline="dict + msgpack", subject="dref"))
write_plot(rows, Path("benchmarks/out/x.png"), title="…", baseline="…", subject="dref")
```
"""

from __future__ import annotations

import gc
import importlib
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

__all__ = [
    "Row",
    "Sample",
    "Stats",
    "Target",
    "comparison_table",
    "max_overhead",
    "measure",
    "min_throughput",
    "ops_text",
    "results_json",
    "write_plot",
]

Op = Callable[[int], Awaitable[object]]
"""One operation under test; it receives the iteration number (e.g. as the value to set)."""


@dataclass(frozen=True)
class Sample:
    """One measurement of one operation: a throughput phase and a latency phase."""

    ops: int
    elapsed_ns: int
    latencies_ns: list[int]

    @property
    def ops_per_s(self) -> float:
        return self.ops * 1e9 / self.elapsed_ns


async def measure(op: Op, seconds: float, *, batch: int = 64, gc_enabled: bool = True) -> Sample:
    """Run `op` for about `seconds` in one task, after a full collection.

    The first half measures throughput (batches of `batch` calls, each batch timed as a whole, so
    the timer costs nothing per call); the second half times every call with
    `time.perf_counter_ns` for the latency percentiles (which therefore include ~50-100 ns of
    timer overhead). `gc_enabled=False` disables the collector while measuring.
    """
    clock = time.perf_counter_ns
    half = max(1, int(seconds * 1e9 / 2))
    gc.collect()
    was_enabled = gc.isenabled()
    if not gc_enabled:
        gc.disable()
    try:
        i = ops = elapsed = 0
        while elapsed < half:
            start = clock()
            for j in range(i, i + batch):
                await op(j)
            elapsed += clock() - start
            ops += batch
            i += batch
        latencies: list[int] = []
        append = latencies.append
        end = clock() + half
        while True:
            start = clock()
            await op(i)
            stop = clock()
            append(stop - start)
            i += 1
            if stop >= end:
                break
    finally:
        if was_enabled:
            gc.enable()
    return Sample(ops, elapsed, latencies)


def _percentile(ordered: list[int], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


@dataclass(frozen=True)
class Stats:
    """Several samples of one operation: median throughput, pooled latency percentiles."""

    ops_per_s: float
    p50_ns: float
    p99_ns: float
    rounds: list[float] = field(default_factory=list)
    """Throughput of each sample, to show the spread."""

    @classmethod
    def of(cls, samples: list[Sample]) -> Stats:
        rounds = [s.ops_per_s for s in samples]
        latencies = sorted(x for s in samples for x in s.latencies_ns)
        return cls(
            ops_per_s=statistics.median(rounds),
            p50_ns=_percentile(latencies, 0.50),
            p99_ns=_percentile(latencies, 0.99),
            rounds=rounds,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ops_per_s": round(self.ops_per_s, 1),
            "p50_us": round(self.p50_ns / 1e3, 3),
            "p99_us": round(self.p99_ns / 1e3, 3),
            "rounds_ops_per_s": [round(r, 1) for r in self.rounds],
        }


@dataclass(frozen=True)
class Target:
    """A goal for one row: `text` describes it, `met(row)` checks it."""

    text: str
    met: Callable[[Row], bool]


def max_overhead(factor: float) -> Target:
    """The subject takes at most `factor` times the baseline's time per operation."""
    return Target(f"≤{factor:g}x", lambda row: row.overhead <= factor)


def min_throughput(ops_per_s: float) -> Target:
    """The subject reaches at least `ops_per_s`."""
    return Target(f"≥{ops_text(ops_per_s)}/s", lambda row: row.subject.ops_per_s >= ops_per_s)


@dataclass(frozen=True)
class Row:
    """One operation measured on the baseline and on the subject."""

    op: str
    baseline: Stats
    subject: Stats
    target: Target | None = None

    @property
    def overhead(self) -> float:
        """How many times longer the subject takes per operation (baseline ops/s ÷ subject's)."""
        return self.baseline.ops_per_s / self.subject.ops_per_s

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.target.met(self)


def ops_text(value: float) -> str:
    """`3.6M`, `284k`: ops/s to three significant digits."""
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    if value >= 1e3:
        return f"{value / 1e3:.3g}k"
    return f"{value:.3g}"


def _us(ns: float) -> str:
    return f"{ns / 1e3:.2f}"


def comparison_table(rows: list[Row], *, title: str, baseline: str, subject: str) -> Table:
    """A rich table: ops/s, p50 and p99 of both sides (latencies in µs), overhead and target.

    `baseline` and `subject` are short labels for the column headers (say "base", "dref").
    """
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    table.add_column("op")
    for side in (baseline, subject):
        table.add_column(f"{side}\nops/s", justify="right")
        table.add_column(f"{side}\np50", justify="right")
        table.add_column(f"{side}\np99", justify="right")
    table.add_column(f"{subject}÷\n{baseline}", justify="right")
    table.add_column("target", no_wrap=True)
    for row in rows:
        passed = row.passed
        verdict = "" if passed is None else "[green]pass[/] " if passed else "[bold red]FAIL[/] "
        table.add_row(
            row.op,
            ops_text(row.baseline.ops_per_s),
            _us(row.baseline.p50_ns),
            _us(row.baseline.p99_ns),
            ops_text(row.subject.ops_per_s),
            _us(row.subject.p50_ns),
            _us(row.subject.p99_ns),
            f"{row.overhead:.2f}x",
            verdict + (row.target.text if row.target else ""),
        )
    return table


def results_json(rows: list[Row], *, baseline: str, subject: str, **meta: Any) -> dict[str, Any]:
    """The rows as JSON-ready data, with `meta` (settings, versions) alongside."""
    return {
        **meta,
        "baseline": baseline,
        "subject": subject,
        "results": [
            {
                "op": row.op,
                "baseline": row.baseline.as_dict(),
                "subject": row.subject.as_dict(),
                "overhead": round(row.overhead, 3),
                "target": row.target.text if row.target else None,
                "passed": row.passed,
            }
            for row in rows
        ],
    }


def write_plot(
    rows: list[Row], path: Path, *, title: str, baseline: str, subject: str
) -> Path | None:
    """Write a bar plot of ops/s (baseline beside subject) to `path`; None without matplotlib."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(rows), 4.2))
    width = 0.38
    xs = range(len(rows))
    ax.bar([x - width / 2 for x in xs], [r.baseline.ops_per_s for r in rows], width, label=baseline)
    bars = ax.bar(
        [x + width / 2 for x in xs], [r.subject.ops_per_s for r in rows], width, label=subject
    )
    for bar, row in zip(bars, rows, strict=True):
        ax.annotate(
            f"{row.overhead:.1f}x",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_xticks(list(xs), [r.op for r in rows])
    ax.set_ylabel("ops/s")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
