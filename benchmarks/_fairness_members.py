"""Fairness of contended updates between Raft member processes (`raft_bench.py --fairness
--members`): each of N spawned processes runs one member of an N-member cluster (the whole
cluster) and `tasks` tasks of `await ref.update_and_get(lambda n: n + 1)` on one element, all
starting together after every member has a leader, for `seconds`. The leader's process is one of
the contenders, so without a line its local compare-and-sets win the race to the log."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from typing import Any

from dref_raft.cli.local_cluster import free_ports

__all__ = ["measure_members"]


def _member(
    index: int,
    ports: list[int],
    options: dict[str, Any],
    tasks: int,
    seconds: float,
    ready: Any,
    go: Any,
    done: Any,
    results: Any,
) -> None:
    import dref

    endpoints = ",".join(f"m{i}=127.0.0.1:{port}" for i, port in enumerate(ports))
    settings = {**options, "node_id": f"m{index}", "port": ports[index], "endpoints": endpoints}

    async def main() -> int:
        async with dref.connect("raft", **settings) as ctx:
            ref = await ctx.make(0, "fairness-members")
            await ref.get()  # a leader is known and the first guess is loaded
            ready.release()
            await asyncio.to_thread(go.wait, seconds + 60)
            stop_at = time.monotonic() + seconds
            count = 0

            async def one() -> None:
                nonlocal count
                while time.monotonic() < stop_at:
                    await ref.update_and_get(lambda n: n + 1)
                    count += 1

            await asyncio.gather(*(one() for _ in range(tasks)))
            results.put((True, index, count))
            # Keep the member up until every contender is done (the others need a quorum).
            await asyncio.to_thread(done.wait, seconds + 60)
            return count

    try:
        asyncio.run(main())
    except BaseException as exc:  # reported to the parent, which fails the run
        results.put((False, index, repr(exc)))


def measure_members(
    options: dict[str, Any], seconds: float, *, members: int = 3, tasks: int = 4
) -> dict[str, Any]:
    """One run: the updates of each member process, least ÷ most and updates/s (bounded by
    `seconds` plus start-up and stop timeouts)."""
    mp = multiprocessing.get_context("spawn")
    ready, go, done, results = mp.Semaphore(0), mp.Event(), mp.Event(), mp.Queue()
    ports = free_ports(members)
    procs = [
        mp.Process(
            target=_member,
            args=(i, ports, options, tasks, seconds, ready, go, done, results),
            daemon=True,
        )
        for i in range(members)
    ]
    for proc in procs:
        proc.start()
    try:
        deadline = time.monotonic() + 60
        for _ in procs:
            if not ready.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise TimeoutError("fairness members not ready within 60 s")
        started = time.monotonic()
        go.set()
        outcomes = [results.get(timeout=seconds + 60) for _ in procs]
        elapsed = time.monotonic() - started
    finally:
        done.set()
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    failed = [o for o in outcomes if not o[0]]
    if failed:
        raise RuntimeError(f"fairness members failed: {failed}")
    counts = [count for _, _, count in sorted(outcomes, key=lambda o: o[1])]
    return {
        "counts": counts,
        "seconds": elapsed,
        "ratio": min(counts) / max(counts) if max(counts) else 0.0,
        "per_second": sum(counts) / elapsed if elapsed > 0 else 0.0,
    }
