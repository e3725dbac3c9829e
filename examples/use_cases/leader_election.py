"""Leader election with failover, across real processes.

    python examples/use_cases/leader_election.py

Three worker processes campaign for the lock `examples:leader`; the holder leads (and renews
its lease in the background) until it dies. The launcher kills the leader's process with
SIGKILL: its lease runs out (TTL 2 s), another worker takes over and logs it, with a higher
fence. Runs on a local Raft cluster, or on the store named by `DREF_BACKEND`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time

from _launch import Workers, store, worker_logging

LOCK = "examples:leader"
TTL = 2.0
LEADS = re.compile(r"leads with fence (\d+)")


async def campaign(name: str) -> None:
    import dref

    log = logging.getLogger("leader")
    async with dref.connect() as ctx:
        log.info("campaigning")
        async with ctx.lock(LOCK, ttl=TTL) as guard:
            log.info("leads with fence %s", guard.fence)
            await asyncio.Event().wait()  # lead until killed


def main() -> int:
    with store() as env:
        workers = Workers(__file__, env)
        try:
            for name in ("worker-a", "worker-b", "worker-c"):
                workers.start(name)
            first, line = workers.expect(
                lambda _, text: LEADS.search(text) is not None, "an election"
            )
            fence = int(LEADS.search(line).group(1))  # type: ignore[union-attr]
            print(f"launcher: killing the leader {first} (SIGKILL)", flush=True)
            killed = time.monotonic()
            workers.kill(first)
            second, line = workers.expect(
                lambda who, text: who != first and LEADS.search(text) is not None, "a failover"
            )
            new_fence = int(LEADS.search(line).group(1))  # type: ignore[union-attr]
            took = time.monotonic() - killed
            print(
                f"launcher: {second} took over from {first} after {took:.1f} s "
                f"(fence {fence} -> {new_fence})",
                flush=True,
            )
            if new_fence <= fence:
                print("launcher: the fence did not grow", flush=True)
                return 1
        finally:
            workers.stop()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker_logging(sys.argv[2])
        asyncio.run(campaign(sys.argv[2]))
    else:
        sys.exit(main())
