"""Contended `modify` calls of one context combined behind one representative per element.

On a `fair_updates` backend an uncontended `modify` is one `fair_compare_and_swap` made by the
caller itself. While one is in flight (or has failed), later calls on the same element from the
same context queue here, first come, first served, and one runner task serves them in batches:
it applies the batch's functions one after another to the current value (each to the result of
the previous one, as if the calls ran one by one) and swaps the end result in one
`fair_compare_and_swap`. So each context holds at most one place in the server's line of the
element, and a contended round trip serves a whole batch.

The queue holds only callers that are waiting (one entry each) and a batch takes at most
`MAX_BATCH` of them. A caller cancelled while queued leaves the queue; one cancelled while its
batch is in flight may still see its update applied (as with any cancelled write).
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dref._aio import in_background
from dref.errors import ClosedError, ElementNotFoundError

if TYPE_CHECKING:
    from dref.context import DRefContext
    from dref.ref import DRef

__all__ = ["MAX_BATCH", "UpdateLine", "new_ticket"]

MAX_BATCH = 32
"""Most queued calls one contended round trip serves."""


def new_ticket() -> bytes:
    """A place in an element's line: 16 hex digits (part of key names in Redis)."""
    return secrets.token_hex(8).encode()


class _Entry:
    __slots__ = ("f", "fut", "ref")

    def __init__(self, ref: DRef[Any], f: Callable[[Any], Any], fut: asyncio.Future[Any]) -> None:
        self.ref = ref
        self.f = f
        self.fut = fut


class UpdateLine:
    """This context's contended `modify` calls of one element (see the module docstring)."""

    __slots__ = ("_ctx", "_name", "_pending", "_runner")

    def __init__(self, ctx: DRefContext, name: str) -> None:
        self._ctx = ctx
        self._name = name
        self._pending: deque[_Entry] = deque()
        self._runner: asyncio.Task[None] | None = None

    @staticmethod
    def of(ctx: DRefContext, name: str) -> UpdateLine | None:
        """The element's line if calls of this context are in flight or queued; else None."""
        return ctx._update_lines.get(name)

    @staticmethod
    def open(ctx: DRefContext, name: str) -> UpdateLine:
        """Mark the element busy: the caller swaps inline, later callers queue."""
        line = ctx._update_lines[name] = UpdateLine(ctx, name)
        return line

    async def join(self, ref: DRef[Any], f: Callable[[Any], Any]) -> Any:
        """Queue behind the calls already here; the runner serves this one in its turn."""
        entry = _Entry(ref, f, asyncio.get_running_loop().create_future())
        self._pending.append(entry)
        # Cancelling the caller cancels the future: the runner skips it if still queued.
        return await entry.fut

    @staticmethod
    async def wait(fut: asyncio.Future[Any]) -> Any:
        """The outcome of a call the runner serves (cancelling the wait does not withdraw it
        once its batch is in flight)."""
        return await fut

    def hand_over(
        self,
        ref: DRef[Any] | None,
        f: Callable[[Any], Any] | None,
        ticket: bytes | None,
        current: bytes | None,
        ahead: int,
    ) -> asyncio.Future[Any] | None:
        """The inline caller is done: with `f` (its swap failed) it goes first in the queue and
        the runner takes over its `ticket`'s place in the server's line; the runner starts if
        anyone is queued, else the element is idle again. The caller's future, if queued."""
        fut: asyncio.Future[Any] | None = None
        if ref is not None and f is not None:
            fut = asyncio.get_running_loop().create_future()
            self._pending.appendleft(_Entry(ref, f, fut))
        if self._pending and not self._ctx.closed:
            self._runner = self._ctx._spawn(
                self._run(ticket, current, ahead), f"dref-update-line:{self._name}"
            )
        else:
            self._close(ticket, None)
        return fut

    def _close(self, ticket: bytes | None, error: BaseException | None) -> None:
        if self._ctx._update_lines.get(self._name) is self:
            del self._ctx._update_lines[self._name]
        while self._pending:
            entry = self._pending.popleft()
            if not entry.fut.done():
                entry.fut.set_exception(error or ClosedError("this dref context is closed"))
        if ticket is not None:
            backend = self._ctx.backend
            in_background(backend.leave_line(self._name, ticket), f"leave line {self._name}")

    async def _run(self, ticket: bytes | None, guess: bytes | None, ahead: int) -> None:
        backend = self._ctx.backend
        name = self._name
        queued = ticket is not None  # the backend may hold our ticket in line
        ticket = ticket or new_ticket()
        batch: list[_Entry] = []
        try:
            while self._pending:
                batch.clear()
                while self._pending and len(batch) < MAX_BATCH:
                    entry = self._pending.popleft()
                    if not entry.fut.done():
                        batch.append(entry)
                while batch:
                    if ahead > 0:
                        # Behind others in the server's line: wait until the swap before ours
                        # hands us the value it left (or the backend's fallback wait passes),
                        # taking in the calls that queued here meanwhile.
                        handed = await backend.wait_turn(name, ticket)
                        if handed is not None:
                            guess = handed
                        ahead = 0
                        while self._pending and len(batch) < MAX_BATCH:
                            entry = self._pending.popleft()
                            if not entry.fut.done():
                                batch.append(entry)
                    if guess is None:
                        guess = await backend.get(name)
                    if guess is None:
                        for entry in batch:
                            if not entry.fut.done():
                                entry.fut.set_exception(ElementNotFoundError(name))
                            entry.ref._seen = None
                        break
                    value = guess
                    results: list[Any] = []
                    served: list[_Entry] = []
                    for entry in batch:
                        try:
                            result, new = await _call(entry.f, entry.ref._decode(value))
                            encoded = entry.ref._encode(new)
                        except Exception as exc:  # this caller's own failure ends its call
                            if not entry.fut.done():
                                entry.fut.set_exception(exc)
                            continue
                        value = encoded
                        served.append(entry)
                        results.append(result)
                    batch[:] = served
                    if not batch:
                        break
                    queued = True
                    swapped, guess, ahead = await backend.fair_compare_and_swap(
                        name, guess, value, ticket
                    )
                    if swapped:
                        queued = False  # the head leaves the line as it swaps
                        guess = value
                        for entry, result in zip(batch, results, strict=True):
                            entry.ref._seen = value
                            if not entry.fut.done():
                                entry.fut.set_result(result)
                        batch.clear()
        except BaseException as exc:
            error: BaseException = exc
            if isinstance(exc, asyncio.CancelledError):
                error = ClosedError("this dref context is closed")
            for entry in batch:
                if not entry.fut.done():
                    entry.fut.set_exception(error)
            self._close(ticket if queued else None, error)
            if not isinstance(exc, Exception):
                raise
        else:
            self._close(ticket if queued else None, None)


async def _call(f: Callable[..., Any], value: Any) -> Any:
    result = f(value)
    if asyncio.iscoroutine(result) or hasattr(result, "__await__"):
        result = await result
    return result
