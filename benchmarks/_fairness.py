"""The fairness row every benchmark prints: 4 processes x 4 tasks update one element.

`python benchmarks/<backend>_bench.py --fairness` prints least ÷ most updates per process and the
total updates/s (dref_compat.fairness; in-memory: 4 contexts of one process, as it is not shared
across processes). Target: least ÷ most ≥ 0.5.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dref_compat import fairness

__all__ = ["fairness_row"]


def fairness_row(backend: str, options: dict[str, Any], *, seconds: float = 5.0) -> str:
    """Run the contention for `seconds` (no count bound) and return the printed row."""
    total = 10**9
    if backend == "inmemory":
        result = asyncio.run(
            fairness.run_contexts(
                backend, options, contexts=4, tasks=4, total=total, seconds=seconds
            )
        )
    else:
        result = fairness.run_processes(
            backend, options, processes=4, tasks=4, total=total, seconds=seconds
        )
    verdict = "pass" if result.ratio >= 0.5 else "FAIL"
    return f"fairness ({backend}, 4 processes x 4 tasks, one element): {result.row()} [{verdict}]"
