"""Live counter: many concurrent `update(lambda n: n + 1)` from several clients; none is lost.

A watcher in its own context follows the counter through `changes()` and reports milestones.
Without a native compare-and-set (e.g. Raft over gRPC), every increment takes upstream's lock
protocol, a handful of consensus round trips under contention: each task then does
`LOCKED_INCREMENTS` instead of `INCREMENTS`, to keep the demo short.
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
LOCKED_INCREMENTS = 5
"""Increments per task when `modify` runs upstream's lock protocol (no native compare-and-set)."""
TOTAL = CLIENTS * TASKS * INCREMENTS


async def run(connect: Connect, out: Console) -> None:
    """`CLIENTS` clients x `TASKS` tasks increment one counter `INCREMENTS` times each."""
    async with connect() as ctx:
        native = ctx.backend.capabilities.native_cas
        increments = INCREMENTS if native else LOCKED_INCREMENTS
        expected = CLIENTS * TASKS * increments
        how = "" if native else " (no native compare-and-set: each one takes the lock protocol)"
        intro(
            out,
            f"{CLIENTS} clients x {TASKS} tasks x {increments} increments of [bold]{NAME}[/] "
            f"with update(lambda n: n + 1), all at once{how}.",
        )
        counter: DRef[int] = ctx.ref(NAME, type=int)
        await counter.set(0)
        subscribed = asyncio.get_running_loop().create_future()
        watcher = asyncio.create_task(
            _watch(counter, out, subscribed, expected), name="dref-demo:counter"
        )
        try:
            await asyncio.wait({subscribed, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if watcher.done():
                watcher.result()
            await together(*(_client(connect, increments) for _ in range(CLIENTS)))
            try:
                async with asyncio.timeout(CHANGE_TIMEOUT):
                    await asyncio.shield(watcher)
            except TimeoutError:
                raise DemoFailure(f"the watcher did not see {expected} in time") from None
        finally:
            watcher.cancel()
            await asyncio.wait({watcher})
        total = await counter.get()

    if total != expected:
        raise DemoFailure(
            f"the counter ended at {total}, expected {expected}: increments were lost"
        )
    ok(out, f"final value {total} = {CLIENTS} x {TASKS} x {increments} increments, none lost")


async def _client(connect: Connect, increments: int) -> None:
    async with connect() as ctx:
        counter: DRef[int] = ctx.ref(NAME, type=int)

        async def task() -> None:
            for _ in range(increments):
                await counter.update(lambda n: n + 1)
                await asyncio.sleep(0)  # let the other tasks in, as real work would

        await together(*(task() for _ in range(TASKS)))


async def _watch(
    counter: DRef[int], out: Console, subscribed: asyncio.Future[None], total: int
) -> None:
    """Print each milestone (every quarter) once the counter reaches it; return at `total`."""
    milestone = max(1, total // 4)
    mark = milestone
    while True:
        try:
            async with counter.changes() as stream:
                if not subscribed.done():
                    subscribed.set_result(None)
                value = await counter.get()  # subscribed first: nothing after this is missed
                while True:
                    while value >= mark and mark <= total:
                        bullet(out, "watcher", f"counter reached {mark}")
                        mark += milestone
                    if mark > total:
                        return
                    value = await anext(stream)
        except ChangeStreamLaggedError:
            continue  # fell behind: re-read and subscribe again
