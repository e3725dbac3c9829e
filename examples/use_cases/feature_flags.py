"""Feature flags pushed to every process.

    python examples/use_cases/feature_flags.py

Three worker processes each follow the flags element `examples:flags` through a change stream
and log every version they see. The launcher (a process of its own) flips flags three times and
waits until every worker has logged every version. Runs on a local Raft cluster, or on the store
named by `DREF_BACKEND`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

from _launch import Workers, store, worker_logging

NAME = "examples:flags"
WORKERS = ("worker-a", "worker-b", "worker-c")


@dataclass
class Flags:
    version: int
    dark_mode: bool
    max_items: int


async def follow() -> None:
    import dref

    log = logging.getLogger("flags")
    async with dref.connect() as ctx:
        flags = await ctx.make(Flags(0, False, 10), NAME)  # seeded only if absent
        async with flags.changes() as stream:  # subscribed first, then read: nothing missed
            log.info("ready, flags %s", await flags.get())
            async for value in stream:
                log.info("sees version %d: %s", value.version, value)


async def publish(versions: list[Flags], wait_for: Callable[[str], None]) -> None:
    import dref

    async with dref.connect() as ctx:
        flags = await ctx.make(Flags(0, False, 10), NAME)
        await asyncio.to_thread(wait_for, "ready")
        for value in versions:
            await flags.set(value)
            print(f"launcher: set {value}", flush=True)
            await asyncio.to_thread(wait_for, f"sees version {value.version}:")


def main() -> int:
    versions = [Flags(1, True, 10), Flags(2, True, 50), Flags(3, False, 50)]
    with store() as env:
        workers = Workers(__file__, env)

        def wait_for(text: str) -> None:
            seen: set[str] = set()
            while seen != set(WORKERS):
                name, _ = workers.expect(lambda _, line: text in line, f"every worker: {text}")
                seen.add(name)

        try:
            for name in WORKERS:
                workers.start(name)
            asyncio.run(publish(versions, wait_for))
        finally:
            workers.stop()
    print("launcher: every worker saw every version", flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker_logging(sys.argv[2])
        asyncio.run(follow())
    else:
        sys.exit(main())
