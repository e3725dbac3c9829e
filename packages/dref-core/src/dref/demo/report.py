"""Throttled job: several workers try to run the daily report; a lock lets one run it at a time.

Impatient workers wait briefly (`timeout=`) and give up with `LockTimeoutError`; a patient one
waits its turn, then finds the report already done (the last run is recorded in a `DRef`).
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass

from rich.console import Console
from rich.padding import Padding
from rich.table import Table

from dref.demo._common import Connect, DemoFailure, bullet, intro, ok, together
from dref.errors import LockTimeoutError

__all__ = ["run"]

LOCK = "demo:daily-report"
LAST_RUN = "demo:daily-report:last-run"
JOB = 0.3
"""Seconds the report takes."""
WORKERS: tuple[tuple[str, float], ...] = (
    ("worker-1", 0.1),
    ("worker-2", 0.1),
    ("worker-3", 0.1),
    ("worker-4", 10.0),
)
"""Each worker and how long it waits for the lock."""


@dataclass
class _Outcome:
    worker: str
    timeout: float
    result: str = ""
    ran: bool = False


async def run(connect: Connect, out: Console) -> None:
    """Four workers start the daily report at once; it runs exactly once."""
    intro(
        out,
        f"{len(WORKERS)} workers start the daily report at once; the lock [bold]{LOCK}[/] "
        f"admits one at a time (the job takes {JOB:g} s).",
    )
    today = datetime.date.today().isoformat()
    inside: set[str] = set()

    async with connect() as ctx:
        await ctx.ref(LAST_RUN, type=dict[str, str]).set({})

    async def worker(name: str, timeout: float) -> _Outcome:
        outcome = _Outcome(name, timeout)
        async with connect() as ctx:
            last_run = ctx.ref(LAST_RUN, type=dict[str, str])
            try:
                async with ctx.lock(LOCK, timeout=timeout) as guard:
                    inside.add(name)
                    if len(inside) > 1:
                        raise DemoFailure(f"two workers inside the lock: {sorted(inside)}")
                    fence = "" if guard.fence is None else f" (fence {guard.fence})"
                    done = await last_run.get()
                    if done.get("day") == today:
                        outcome.result = f"waited its turn{fence}; already done, skipped"
                        bullet(out, name, f"gets the lock{fence}: today's report is already done")
                    else:
                        bullet(out, name, f"gets the lock{fence}: generating today's report…")
                        await asyncio.sleep(JOB)
                        await last_run.set({"day": today, "by": name})
                        outcome.result, outcome.ran = f"ran the report{fence}", True
                        bullet(out, name, "published the report and releases the lock")
                    inside.discard(name)
            except LockTimeoutError as exc:
                outcome.result = f"[yellow]gave up[/]: {type(exc).__name__}"
        return outcome

    outcomes = await together(*(worker(name, timeout) for name, timeout in WORKERS))

    table = Table(box=None, padding=(0, 2, 0, 0))
    table.add_column("worker")
    table.add_column("waits up to", justify="right")
    table.add_column("outcome")
    for outcome in outcomes:
        table.add_row(outcome.worker, f"{outcome.timeout:g} s", outcome.result)
    out.print(Padding(table, (0, 0, 0, 2), expand=False))

    runs = sum(o.ran for o in outcomes)
    if runs != 1:
        raise DemoFailure(f"the report ran {runs} times, expected once")
    timed_out = sum("gave up" in o.result for o in outcomes)
    ok(out, f"the report ran exactly once; {timed_out} workers timed out instead of piling up")
