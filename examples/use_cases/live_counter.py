"""A live counter: several processes increment one counter; a watcher follows it live.

    python examples/use_cases/live_counter.py

A watcher process follows `examples:counter` through a change stream and logs it; three writer
processes each add 1 to it `ADDS` times with `update` (atomic across processes). The launcher
waits until the watcher has seen the final total, which must be exactly 3 times `ADDS` more than
where it started. Runs on a local Raft cluster, or on the store named by `DREF_BACKEND`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys

from _launch import Workers, store, worker_logging

NAME = "examples:counter"
ADDS = 50
WRITERS = ("writer-a", "writer-b", "writer-c")
SEES = re.compile(r"counter is (\d+)")


async def watch() -> None:
    import dref

    log = logging.getLogger("counter")
    async with dref.connect() as ctx:
        counter = await ctx.make(0, NAME)
        async with counter.changes() as stream:
            log.info("watching; counter is %d", await counter.get())
            async for value in stream:
                log.info("counter is %d", value)


async def add() -> None:
    import dref

    log = logging.getLogger("counter")
    async with dref.connect() as ctx:
        counter = await ctx.make(0, NAME)
        for _ in range(ADDS):
            await counter.update(lambda n: n + 1)
        log.info("added %d", ADDS)


def main() -> int:
    with store() as env:
        workers = Workers(__file__, env)
        try:
            workers.start("watcher")
            _, line = workers.expect(lambda _, text: "watching" in text, "the watcher")
            start = int(SEES.search(line).group(1))  # type: ignore[union-attr]
            for name in WRITERS:
                workers.start(name)
            total = start + ADDS * len(WRITERS)
            workers.expect(
                lambda who, text: who == "watcher" and f"counter is {total}" in text,
                f"the watcher seeing {total}",
            )
            for name in WRITERS:
                if workers.wait(name) != 0:
                    print(f"launcher: {name} failed", flush=True)
                    return 1
        finally:
            workers.stop()
    print(
        f"launcher: {len(WRITERS)} writers added {ADDS} each; the watcher saw {total}", flush=True
    )
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker_logging(sys.argv[2])
        asyncio.run(watch() if sys.argv[2] == "watcher" else add())
    else:
        sys.exit(main())
