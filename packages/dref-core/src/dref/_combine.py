"""Contended `modify` calls of one context combined behind one representative per element.

On a `fair_updates` backend an uncontended `modify` is one `fair_compare_and_swap` made by the
caller itself (two when its guess was stale but nobody waits: the failed swap made it the head of
the line, so it tries again at once with the value the reply carried). Every `SWAPS_PER_YIELD`-th
uncontended swap of a context yields to the event loop, so that a backend answering without
suspending (in-memory) still lets the other tasks and contexts take their turns. While a call is
in flight (or has failed), later calls on the same element from the
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
import contextlib
import itertools
import logging
import os
import secrets
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dref._aio import call as _call
from dref._aio import in_background
from dref.errors import ClosedError, ElementNotFoundError

if TYPE_CHECKING:
    from dref.context import DRefContext
    from dref.ref import DRef
    from dref.spi import Backend

__all__ = ["MAX_BATCH", "SWAPS_PER_YIELD", "UpdateLine", "UpdateLines", "new_ticket"]

log = logging.getLogger("dref")

MAX_BATCH = 32
"""Most queued calls one contended round trip serves."""

SWAPS_PER_YIELD = 32
"""A context lets other tasks run after this many uncontended swaps in a row, so that a backend
that answers without suspending (in-memory) cannot let one task keep an element to itself."""


_tickets = itertools.count()
_prefix = secrets.token_hex(8).encode()


def _new_prefix() -> None:
    global _prefix
    _prefix = secrets.token_hex(8).encode()


os.register_at_fork(after_in_child=_new_prefix)


def new_ticket() -> bytes:
    """A place in an element's line (part of key names in Redis): 16 random hex digits drawn
    once per process (again in a forked child) and a counter, unique without a system call."""
    return b"%s-%x" % (_prefix, next(_tickets))


class _Entry:
    __slots__ = ("f", "fut", "ref")

    def __init__(self, ref: DRef[Any], f: Callable[[Any], Any], fut: asyncio.Future[Any]) -> None:
        self.ref = ref
        self.f = f
        self.fut = fut


class UpdateLines(dict[str, "UpdateLine | None"]):
    """A context's elements with `modify` calls in flight: None while one call swaps inline and
    nobody waits behind it, its `UpdateLine` once others queue. `swaps` counts the context's
    uncontended swaps since it last yielded (see `SWAPS_PER_YIELD`)."""

    __slots__ = ("swaps",)

    def __init__(self) -> None:
        super().__init__()
        self.swaps = 0


class UpdateLine:
    """This context's contended `modify` calls of one element (see the module docstring)."""

    __slots__ = ("_ctx", "_name", "_pending", "_runner")

    def __init__(self, ctx: DRefContext, name: str) -> None:
        self._ctx = ctx
        self._name = name
        self._pending: deque[_Entry] = deque()
        self._runner: asyncio.Task[None] | None = None

    @staticmethod
    def enter(ctx: DRefContext, name: str) -> bool:
        """True: the element was idle in this context and the caller swaps inline (it then
        calls `leave`); False: calls are in flight, the caller `join`s."""
        lines = ctx._update_lines
        if name in lines:
            return False
        lines[name] = None
        return True

    @staticmethod
    async def join(ctx: DRefContext, ref: DRef[Any], f: Callable[[Any], Any]) -> Any:
        """Queue behind the calls in flight; the runner serves this one in its turn."""
        lines = ctx._update_lines
        line = lines[ref._name]
        if line is None:
            line = lines[ref._name] = UpdateLine(ctx, ref._name)
        entry = _Entry(ref, f, asyncio.get_running_loop().create_future())
        line._pending.append(entry)
        # Cancelling the caller cancels the future: the runner skips it if still queued.
        return await entry.fut

    @staticmethod
    async def wait(fut: asyncio.Future[Any]) -> Any:
        """The outcome of a call the runner serves (cancelling the wait does not withdraw it
        once its batch is in flight)."""
        return await fut

    @staticmethod
    def leave(
        ctx: DRefContext,
        name: str,
        ref: DRef[Any] | None = None,
        f: Callable[[Any], Any] | None = None,
        ticket: bytes | None = None,
        current: bytes | None = None,
        ahead: int = 0,
    ) -> asyncio.Future[Any] | None:
        """The inline caller is done: with `f` (its swap failed) it goes first in the queue and
        the runner takes over its `ticket`'s place in the server's line; the runner starts if
        anyone is queued, else the element is idle again. The caller's future, if queued."""
        lines = ctx._update_lines
        line = lines.get(name)
        if line is None:
            if f is None:
                del lines[name]
                if ticket is not None:
                    _leave_in_background(ctx, name, ticket)
                return None
            line = lines[name] = UpdateLine(ctx, name)
        fut: asyncio.Future[Any] | None = None
        if ref is not None and f is not None:
            fut = asyncio.get_running_loop().create_future()
            line._pending.appendleft(_Entry(ref, f, fut))
        if line._pending and not ctx.closed:
            line._runner = ctx._spawn(line._run(ticket, current, ahead), f"dref-update-line:{name}")
        else:
            line._close(ticket, None)
        return fut

    def _close(self, ticket: bytes | None, error: BaseException | None) -> None:
        if self._ctx._update_lines.get(self._name) is self:
            del self._ctx._update_lines[self._name]
        while self._pending:
            entry = self._pending.popleft()
            if not entry.fut.done():
                entry.fut.set_exception(error or ClosedError("this dref context is closed"))
        if ticket is not None:
            _leave_in_background(self._ctx, self._name, ticket)

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
                        # Callers cancelled while we waited gave up their place: skip them.
                        batch[:] = [entry for entry in batch if not entry.fut.done()]
                        while self._pending and len(batch) < MAX_BATCH:
                            entry = self._pending.popleft()
                            if not entry.fut.done():
                                batch.append(entry)
                        if not batch:
                            break
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
                    # With rejoin the head that swaps takes a new place at the end of the line
                    # at once (callers just served usually come back): no failed swap to queue.
                    swapped, guess, ahead = await backend.fair_compare_and_swap(
                        name, guess, value, ticket, rejoin=True
                    )
                    if swapped:
                        queued = ahead > 0  # else it left the line as it swapped
                        guess = value
                        for entry, result in zip(batch, results, strict=True):
                            entry.ref._seen = value
                            if not entry.fut.done():
                                entry.fut.set_result(result)
                        batch.clear()
                        if queued and not self._pending:
                            # One loop turn: the callers just served queue again (or the
                            # place is given up when nobody did).
                            await asyncio.sleep(0)
        except BaseException as exc:
            error: BaseException = exc
            if isinstance(exc, asyncio.CancelledError):
                error = ClosedError("this dref context is closed")
            for entry in batch:
                if not entry.fut.done():
                    entry.fut.set_exception(error)
            self._close(None, error)
            if queued:
                await _give_back(backend, name, ticket)
            if not isinstance(exc, Exception):
                raise
        else:
            self._close(None, None)
            if queued:
                await _give_back(backend, name, ticket)


async def _give_back(backend: Backend, name: str, ticket: bytes) -> None:
    """The runner's place in the server's line is given back before the runner ends, even when
    it is cancelled meanwhile (a closing context waits for it, within the backend's deadline),
    so that the others do not wait out a dead waiter's life."""
    leave = asyncio.ensure_future(backend.leave_line(name, ticket))
    try:
        await asyncio.shield(leave)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await leave
        raise
    except Exception as exc:  # the place then lapses after the backend's waiter life
        log.debug("leave line %s failed: %s", name, exc)


def _leave_in_background(ctx: DRefContext, name: str, ticket: bytes) -> None:
    in_background(ctx.backend.leave_line(name, ticket), f"leave line {name}")
