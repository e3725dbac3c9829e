"""The public API over the in-memory backend: contexts, refs, streams, locks and cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from pydantic import BaseModel

import dref
from dref.errors import ClosedError, LockStolenError


@dataclass
class Flags:
    dark_mode: bool
    max_items: int
    owner: str | None = None


class Point(BaseModel):
    x: int
    y: int


@pytest.fixture
async def ctx() -> AsyncIterator[dref.DRefContext]:
    async with dref.connect("inmemory", namespace=f"api-{uuid.uuid4().hex}") as c:
        yield c


async def test_connect_can_be_awaited(ctx: dref.DRefContext) -> None:
    other = await dref.connect("inmemory", namespace="api-awaited")
    try:
        assert isinstance(other, dref.DRefContext)
    finally:
        await other.aclose()
    assert other.closed
    with pytest.raises(ClosedError):
        other.ref("x")


async def test_typed_values_round_trip(ctx: dref.DRefContext) -> None:
    flags = await ctx.make(Flags(dark_mode=False, max_items=3), "api:flags")
    await flags.update(lambda f: Flags(True, f.max_items + 1, "ops"))
    assert await flags.get() == Flags(True, 4, "ops")
    point = await ctx.make(Point(x=1, y=2), "api:point")
    assert await point.update_and_get(lambda p: Point(x=p.x + 1, y=p.y)) == Point(x=2, y=2)


async def test_explicit_type_and_codec(ctx: dref.DRefContext) -> None:
    ref = await ctx.make(None, "api:optional", type=int | None)
    assert await ref.get() is None
    await ref.set(5)
    assert await ref.get() == 5
    as_json = await ctx.make([1, 2], "api:json", codec="json")
    assert await ctx.backend.get(as_json.name) == b"[1,2]"


async def test_async_on_change_callback(ctx: dref.DRefContext) -> None:
    ref = await ctx.make(0, "api:onchange")
    seen: list[int] = []
    done = asyncio.Event()

    async def callback(value: int) -> None:
        await asyncio.sleep(0)
        seen.append(value)
        if value == 3:
            done.set()

    handle = await ref.on_change(callback)
    for i in (1, 2, 3):
        await ref.set(i)
    await asyncio.wait_for(done.wait(), 5)
    assert seen == [1, 2, 3]
    handle.cancel()


async def test_failing_callback_is_logged_and_the_stream_goes_on(
    ctx: dref.DRefContext, caplog: pytest.LogCaptureFixture
) -> None:
    ref = await ctx.make(0, "api:failing")
    seen: list[int] = []

    both = asyncio.Event()

    def callback(value: int) -> None:
        seen.append(value)
        if value == 2:
            both.set()
        if value == 1:
            raise RuntimeError("callback bug")

    await ref.on_change(callback)
    await ref.set(1)
    await ref.set(2)
    await asyncio.wait_for(both.wait(), 5)
    assert seen == [1, 2]
    assert "callback bug" in caplog.text


async def test_lock_body_cancelled_from_outside_releases_the_lock(ctx: dref.DRefContext) -> None:
    entered = asyncio.Event()

    async def hold() -> None:
        async with ctx.lock("api:cancel"):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await ctx.backend.get("api:cancel") is None


async def test_outside_cancellation_wins_over_a_simultaneous_loss(ctx: dref.DRefContext) -> None:
    entered = asyncio.Event()

    async def hold() -> None:
        async with ctx.lock("api:both"):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold())
    await entered.wait()
    await ctx.backend.delete("api:both")  # the watchdog will cancel the body...
    task.cancel()  # ...and so does the caller
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_body_swallowing_the_cancellation_still_gets_lock_stolen(
    ctx: dref.DRefContext,
) -> None:
    with pytest.raises(LockStolenError):
        async with ctx.lock("api:swallow"):
            await ctx.backend.set("api:swallow", b"thief123")
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()  # a body ignoring cancellation must not hide the loss
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_release_that_finds_a_successor_raises_and_keeps_it(ctx: dref.DRefContext) -> None:
    with pytest.raises(LockStolenError, match="no longer held when it was released"):
        async with ctx.lock("api:late") as guard:
            guard_token = guard.token
            # Replace the token without an event, as a lost notification would.
            store = ctx.backend.store  # type: ignore[attr-defined]
            store._data["api:late"] = (b"other-00", None)
    assert guard_token != b"other-00"
    assert await ctx.backend.get("api:late") == b"other-00"


async def test_same_lock_object_cannot_be_entered_twice(ctx: dref.DRefContext) -> None:
    lock = ctx.lock("api:twice")
    async with lock:
        with pytest.raises(RuntimeError, match="already held"):
            await lock.__aenter__()
    async with lock:  # sequential reuse is fine
        pass
