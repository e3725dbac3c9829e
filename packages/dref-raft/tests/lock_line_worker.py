"""A member process with lock waiters, for test_lock_line_procs.py.

    python lock_line_worker.py OPTIONS_JSON LOCK ORDER

Joins the cluster as the member OPTIONS_JSON describes, prints `ready`, then for every number
read from stdin starts a waiter of LOCK which, once it holds the lock, appends the number to the
element ORDER (so ORDER lists the grants in order). Exits when stdin closes and every waiter
is done (each waits at most 60 s for the lock).
"""

from __future__ import annotations

import asyncio
import json
import sys

import dref


async def waiter(ctx: dref.DRefContext, lock: str, order: str, number: int) -> None:
    async with ctx.lock(lock, ttl=10, timeout=60):
        await ctx.ref(order).update(lambda granted: f"{granted}{number},")


async def main(options: dict[str, object], lock: str, order: str) -> None:
    async with dref.connect("raft", **options) as ctx:
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        waiters = []
        while line := await reader.readline():
            waiters.append(asyncio.create_task(waiter(ctx, lock, order, int(line))))
        await asyncio.gather(*waiters)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]))
