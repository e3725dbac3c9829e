"""Fairness of contended updates: several contenders `update` one element, who got how many?

`run_processes` starts `processes` OS processes (spawned, so nothing is shared but the backend),
each opening one context with `dref.connect(backend, **options)` and running `tasks` tasks of
`await ref.update(lambda n: n + 1)` on one element. All of them start together (a barrier after
every process has connected) and stop when the element reaches `total` or `seconds` have passed,
whichever comes first, so a run is bounded in count and in time. `run_contexts` does the same
with contexts of this process (for backends that do not share state across processes).

`FairnessResult.ratio` is least ÷ most updates per contender (process or context), counted in
the window in which every contender was contending: from the last one's first attempt to the
first one's stop. A process the machine schedules late (spawned processes wake from the barrier
at different moments on a loaded machine) is not counted as starved for the time it was not
asking; one that asks and is not served is (its attempts start the window, its updates do not
come).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import dref

__all__ = ["Contention", "FairnessResult", "run_contexts", "run_processes"]


@dataclass(frozen=True)
class Contention:
    """What one contender did: when it first asked, when it stopped, when each update ended."""

    started: float
    stopped: float
    done: tuple[float, ...]


@dataclass(frozen=True)
class FairnessResult:
    counts: tuple[int, ...]
    """Updates done by each contender (process or context) while every one was contending."""
    seconds: float
    """How long every one was contending (the window the counts are from)."""
    updates: int = 0
    """Updates done in the whole run, in the window or not."""

    @classmethod
    def of(cls, contenders: list[Contention]) -> FairnessResult:
        """The counts in the window in which every contender was contending."""
        start = max(c.started for c in contenders)
        end = min(c.stopped for c in contenders)
        counts = tuple(sum(start <= t <= end for t in c.done) for c in contenders)
        return cls(counts, max(0.0, end - start), sum(len(c.done) for c in contenders))

    @property
    def ratio(self) -> float:
        """Least ÷ most updates per contender (0 when someone did none)."""
        return min(self.counts) / max(self.counts) if max(self.counts) else 0.0

    @property
    def per_second(self) -> float:
        return sum(self.counts) / self.seconds if self.seconds > 0 else 0.0

    def row(self) -> str:
        return (
            f"least ÷ most {self.ratio:.3f}, {self.per_second:,.0f} updates/s, "
            f"counts {list(self.counts)} in {self.seconds:.2f} s of {self.updates} updates"
        )


async def _contend(ref: dref.DRef[int], tasks: int, total: int, stop_at: float) -> Contention:
    done: list[float] = []
    stop = False

    async def one() -> None:
        nonlocal stop
        while not stop and time.monotonic() < stop_at:
            value = await ref.update_and_get(lambda n: n + 1)
            done.append(time.monotonic())
            if value >= total:
                stop = True

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(tasks)))
    return Contention(started, time.monotonic(), tuple(done))


def _worker(
    backend: str,
    options: dict[str, Any],
    name: str,
    tasks: int,
    total: int,
    seconds: float,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    async def main() -> Contention:
        async with dref.connect(backend, **options) as ctx:
            ref = await ctx.make(0, name)
            await ref.get()  # warm: connected, and the first guess is loaded
            ready.release()
            await asyncio.to_thread(go.wait, seconds + 60)
            return await _contend(ref, tasks, total, time.monotonic() + seconds)

    try:
        results.put((True, asyncio.run(main()), time.monotonic()))
    except BaseException as exc:  # reported to the parent, which fails the run
        results.put((False, repr(exc), time.monotonic()))


def run_processes(
    backend: str,
    options: dict[str, Any],
    *,
    processes: int = 4,
    tasks: int = 4,
    total: int = 400,
    seconds: float = 10.0,
    start_timeout: float = 60.0,
) -> FairnessResult:
    """Run the contention in `processes` spawned processes; see the module docstring."""
    mp = multiprocessing.get_context("spawn")
    ready = mp.Semaphore(0)
    go = mp.Event()
    results = mp.Queue()
    name = f"fairness:{uuid.uuid4().hex}"
    args = (backend, options, name, tasks, total, seconds, ready, go, results)
    procs = [mp.Process(target=_worker, args=args, daemon=True) for _ in range(processes)]
    for proc in procs:
        proc.start()
    try:
        deadline = time.monotonic() + start_timeout
        for _ in procs:
            if not ready.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"fairness workers not ready within {start_timeout} s")
        go.set()
        outcomes = [results.get(timeout=seconds + start_timeout) for _ in procs]
    finally:
        go.set()
        for proc in procs:
            proc.join(timeout=start_timeout)
            if proc.is_alive():
                proc.kill()
    failures = [detail for ok, detail, _ in outcomes if not ok]
    if failures:
        raise RuntimeError(f"fairness workers failed: {failures}")
    return FairnessResult.of([c for _, c, _ in outcomes])


async def run_contexts(
    backend: str,
    options: dict[str, Any],
    *,
    contexts: int = 4,
    tasks: int = 4,
    total: int = 400,
    seconds: float = 10.0,
) -> FairnessResult:
    """The same contention from `contexts` contexts of this process."""
    name = f"fairness:{uuid.uuid4().hex}"
    async with AsyncExitStack() as stack:
        ctxs = [
            await stack.enter_async_context(dref.connect(backend, **options))
            for _ in range(contexts)
        ]
        refs = [await ctx.make(0, name) for ctx in ctxs]
        for ref in refs:
            await ref.get()
        stop_at = time.monotonic() + seconds
        contenders = await asyncio.gather(*(_contend(ref, tasks, total, stop_at) for ref in refs))
        return FairnessResult.of(list(contenders))
