"""Small asyncio helpers shared by core: clock-based deadlines, shielded cleanup, and calling a
function that may be sync or async."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Coroutine
from types import GeneratorType
from typing import Any, TypeVar

from dref.clock import Clock

T = TypeVar("T")

log = logging.getLogger("dref")

_background: set[asyncio.Task[Any]] = set()

_PLAIN: set[type] = set()
"""Types whose instances are never awaitable (awaitability is a property of the type, except
for generators), learnt on first sight: the check then costs one set lookup."""
_PLAIN_MAX = 256


def awaitable(value: object) -> bool:
    """`inspect.isawaitable(value)`, remembering the types found not to be."""
    kind = type(value)
    if kind in _PLAIN:
        return False
    if inspect.isawaitable(value):
        return True
    if kind is not GeneratorType and len(_PLAIN) < _PLAIN_MAX:
        _PLAIN.add(kind)
    return False


async def call(f: Callable[..., Any], value: Any) -> Any:
    """`f(value)`, awaited when it returns an awaitable (`f` may be sync or async)."""
    result = f(value)
    if awaitable(result):
        result = await result
    return result


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
