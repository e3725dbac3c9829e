"""Small asyncio helpers shared by core: clock-based deadlines and shielded cleanup."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from dref.clock import Clock

T = TypeVar("T")

log = logging.getLogger("dref")

_background: set[asyncio.Task[Any]] = set()


async def within(clock: Clock, seconds: float | None, coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro`, raising `TimeoutError` if `clock` passes `seconds` first (None: no limit)."""
    if seconds is None:
        return await coro
    work = asyncio.ensure_future(coro)
    timer = asyncio.ensure_future(clock.sleep(max(0.0, seconds)))
    try:
        await asyncio.wait({work, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not work.done():
            work.cancel()
            await asyncio.wait({work})
    if work.cancelled():
        raise TimeoutError(f"not done within {seconds:g} s")
    return work.result()


async def shielded(coro: Coroutine[Any, Any, T], what: str) -> T:
    """Run `coro` to completion even if the caller is cancelled meanwhile."""
    return await asyncio.shield(in_background(coro, what))


def in_background(coro: Coroutine[Any, Any, T], what: str) -> asyncio.Task[T]:
    """Run `coro` as a task kept alive until it finishes; a failure is logged as `what`."""
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_finish_background(what))
    return task


def _finish_background(what: str) -> Any:
    def done(task: asyncio.Task[Any]) -> None:
        _background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s failed: %s", what, task.exception())

    return done


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has finished, without leaking its exception."""
    if task is None or task.done():
        return
    task.cancel()
    # asyncio.wait neither raises the task's exception nor swallows our own cancellation.
    await asyncio.wait({task})
