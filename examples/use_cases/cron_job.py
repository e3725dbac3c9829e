"""A cron job that runs on one node at a time, once per slot.

    python examples/use_cases/cron_job.py

Three worker processes share a schedule of one run every `PERIOD` seconds. At each slot every
worker tries the lock `examples:cron`; the holder claims the slot in `examples:cron:last`
(atomically, so a slot already run is never run again) and runs the job. The launcher waits for
`RUNS` runs and checks that each slot ran exactly once and no two runs overlapped. Runs on a local
Raft cluster, or on the store named by `DREF_BACKEND`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import sys
import time

from _launch import Workers, store, worker_logging

LOCK = "examples:cron"
LAST = "examples:cron:last"
PERIOD = 0.5
RUNS = 6
RAN = re.compile(r"runs the job for slot (\d+) from ([\d.]+) to ([\d.]+)")


async def schedule() -> None:
    import dref

    log = logging.getLogger("cron")
    async with dref.connect() as ctx:
        last = await ctx.make(-1, LAST)
        while True:
            slot = int(time.time() // PERIOD) + 1
            await asyncio.sleep(slot * PERIOD - time.time())  # until the next slot
            async with ctx.lock(LOCK, ttl=5):
                claimed = await last.modify(lambda done, due=slot: (done < due, max(done, due)))
                if claimed:
                    started = time.time()
                    await asyncio.sleep(0.05)  # the job
                    log.info(
                        "runs the job for slot %d from %.3f to %.3f", slot, started, time.time()
                    )


def main() -> int:
    with store() as env:
        workers = Workers(__file__, env)
        runs: list[tuple[int, float, float]] = []
        try:
            for name in ("worker-a", "worker-b", "worker-c"):
                workers.start(name)
            while len(runs) < RUNS:
                _, line = workers.expect(lambda _, text: RAN.search(text) is not None, "a run")
                slot, start, end = RAN.search(line).groups()  # type: ignore[union-attr]
                runs.append((int(slot), float(start), float(end)))
        finally:
            workers.stop()
    slots = [slot for slot, _, _ in runs]
    if len(set(slots)) != len(slots):
        print(f"launcher: a slot ran twice: {slots}", flush=True)
        return 1
    ordered = sorted(runs, key=lambda run: run[1])
    if any(b[1] < a[2] for a, b in itertools.pairwise(ordered)):
        print("launcher: two runs overlapped", flush=True)
        return 1
    print(f"launcher: {len(runs)} runs, one per slot, never two at once", flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker_logging(sys.argv[2])
        asyncio.run(schedule())
    else:
        sys.exit(main())
