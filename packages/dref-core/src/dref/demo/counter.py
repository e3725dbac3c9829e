"""Live counter: many concurrent `update(lambda n: n + 1)` from several clients; none is lost.

A watcher in its own context follows the counter through `changes()` and reports milestones.
"""

from __future__ import annotations

import asyncio

from rich.console import Console

from dref.demo._common import CHANGE_TIMEOUT, Connect, DemoFailure, bullet, intro, ok, together
from dref.errors import ChangeStreamLaggedError
from dref.ref import DRef

__all__ = ["TOTAL", "run"]

NAME = "demo:counter"
CLIENTS = 4
TASKS = 5
"""Concurrent tasks per client."""
INCREMENTS = 50
"""Increments per task."""
TOTAL = CLIENTS * TASKS * INCREMENTS
MILESTONE = TOTAL // 4


async def run(connect: Connect, out: Console) -> None:
    """`CLIENTS` clients x `TASKS` tasks increment one counter `INCREMENTS` times each."""
    intro(
        out,
        f"{CLIENTS} clients x {TASKS} tasks x {INCREMENTS} increments of [bold]{NAME}[/] "
        "with update(lambda n: n + 1), all at once.",
    )
    async with connect() as ctx:
        counter: DRef[int] = ctx.ref(NAME, type=int)
        await counter.set(0)
        subscribed = asyncio.get_running_loop().create_future()
        watcher = asyncio.create_task(_watch(counter, out, subscribed), name="dref-demo:counter")
        try:
            await asyncio.wait({subscribed, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if watcher.done():
                watcher.result()
            await together(*(_client(connect) for _ in range(CLIENTS)))
            try:
                async with asyncio.timeout(CHANGE_TIMEOUT):
                    await asyncio.shield(watcher)
            except TimeoutError:
                raise DemoFailure(f"the watcher did not see {TOTAL} in time") from None
        finally:
            watcher.cancel()
            await asyncio.wait({watcher})
        total = await counter.get()

    if total != TOTAL:
        raise DemoFailure(f"the counter ended at {total}, expected {TOTAL}: increments were lost")
    ok(out, f"final value {total} = {CLIENTS} x {TASKS} x {INCREMENTS} increments, none lost")


async def _client(connect: Connect) -> None:
    async with connect() as ctx:
        counter: DRef[int] = ctx.ref(NAME, type=int)

        async def task() -> None:
            for _ in range(INCREMENTS):
                await counter.update(lambda n: n + 1)
                await asyncio.sleep(0)  # let the other tasks in, as real work would

        await together(*(task() for _ in range(TASKS)))


async def _watch(counter: DRef[int], out: Console, subscribed: asyncio.Future[None]) -> None:
    """Print each milestone once the counter reaches it; return at `TOTAL`."""
    mark = MILESTONE
    while True:
        try:
            async with counter.changes() as stream:
                if not subscribed.done():
                    subscribed.set_result(None)
                value = await counter.get()  # subscribed first: nothing after this is missed
                while True:
                    while value >= mark and mark <= TOTAL:
                        bullet(out, "watcher", f"counter reached {mark}")
                        mark += MILESTONE
                    if mark > TOTAL:
                        return
                    value = await anext(stream)
        except ChangeStreamLaggedError:
            continue  # fell behind: re-read and subscribe again
