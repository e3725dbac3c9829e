"""`DRef[T]`: a typed handle to one named value in a backend. It caches nothing."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import random
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from dref import metrics
from dref._aio import awaitable
from dref._aio import call as _call
from dref._combine import SWAPS_PER_YIELD, UpdateLine, new_ticket
from dref.changes import Subscription
from dref.errors import CodecError, ElementNotFoundError, UnsupportedOperationError
from dref.lock import LockGuard
from dref.resources import AsyncResource
from dref.spi import ReadConsistency, WriteFence

if TYPE_CHECKING:
    from dref.codecs import Codec
    from dref.context import DRefContext

__all__ = ["ChangeHandle", "ChangeStream", "DRef"]

T = TypeVar("T")
B = TypeVar("B")

log = logging.getLogger("dref")


class DRef(Generic[T]):
    """Handle to one named value: atomic get/set/modify, deletes and change streams."""

    __slots__ = ("_backend", "_codec", "_ctx", "_name", "_seen", "_type")

    def __init__(self, ctx: DRefContext, name: str, codec: Codec, type: Any) -> None:
        self._ctx = ctx
        self._backend = ctx.backend
        self._name = name
        self._codec = codec
        self._type = type
        # The bytes this handle last read or wrote: only the first guess of a compare-and-swap
        # (never served to readers), so an uncontended update is one round trip.
        self._seen: bytes | None = None

    @property
    def name(self) -> str:
        """The backend key of this value."""
        return self._name

    def __repr__(self) -> str:
        return f"DRef({self._name!r})"

    # -- codec -------------------------------------------------------------------------------------
    def _encode(self, value: T) -> bytes:
        try:
            return self._codec.encode(value)
        except CodecError as exc:
            raise CodecError(str(exc), name=self._name) from exc

    def _decode(self, data: bytes) -> T:
        try:
            return self._codec.decode(data, self._type)  # type: ignore[no-any-return]
        except CodecError as exc:
            raise self._decode_error(exc) from exc

    def _decode_error(self, exc: CodecError) -> CodecError:
        return CodecError(
            f"stored value cannot be decoded by the {self._codec.name} codec: {exc}",
            name=self._name,
        )

    # -- plain operations --------------------------------------------------------------------------
    async def get(self, *, consistency: ReadConsistency | None = None) -> T:
        """The current value; `ElementNotFoundError` if it does not exist.

        `consistency` (docs/concepts.md#read-consistency): None is the backend's own read
        (linearizable where the backend claims `linearizable`); `"linearizable"` requires it;
        `"session"` reads at least this context's own writes and earlier reads, served locally
        where the backend has `session_reads` (a linearizable backend serves it as a
        linearizable read); `UnsupportedOperationError` when the backend offers neither.
        """
        if consistency is not None:
            return await self._get_with(consistency)
        if metrics.ops is not None:
            return await metrics.ops.measure(self._ctx.settings.backend, "get", self._get())
        # `_get` inlined: this is the hottest path (one check is all that metrics cost when off).
        data = self._seen = await self._backend.get(self._name)
        if data is None:
            raise ElementNotFoundError(self._name)
        try:  # _decode inlined too
            return self._codec.decode(data, self._type)  # type: ignore[no-any-return]
        except CodecError as exc:
            raise self._decode_error(exc) from exc

    async def _get(self) -> T:
        data = self._seen = await self._backend.get(self._name)
        if data is None:
            raise ElementNotFoundError(self._name)
        return self._decode(data)

    async def get_with_revision(self) -> tuple[T, int]:
        """The current value and the revision it reflects: `changes(since=revision)` then
        yields every later change. `ElementNotFoundError` if it does not exist;
        `UnsupportedOperationError` without the backend's `revisions` capability."""
        self._require_revisions()
        data, revision = await self._backend.get_with_revision(self._name)
        self._seen = data
        if data is None:
            raise ElementNotFoundError(self._name)
        return self._decode(data), revision

    def _require_revisions(self) -> None:
        if not self._backend.capabilities.revisions:
            raise UnsupportedOperationError(
                f"the {type(self._backend).__name__} backend keeps no change revisions "
                f"(capability revisions is off): cannot read {self._name} with its revision "
                "or resume its changes from one",
                capability="revisions",
            )

    async def _get_with(self, consistency: ReadConsistency) -> T:
        backend = self._backend
        caps = backend.capabilities
        if consistency == "session" and caps.session_reads:
            read = backend.get_session
        elif consistency in ("session", "linearizable") and caps.linearizable:
            read = backend.get
        elif consistency in ("session", "linearizable"):
            wanted = "session_reads" if consistency == "session" else "linearizable"
            raise UnsupportedOperationError(
                f"the {type(backend).__name__} backend cannot serve a {consistency} read of "
                f"{self._name} (capability {wanted} is off)",
                capability=wanted,
            )
        else:
            raise ValueError(
                f"consistency must be None, 'linearizable' or 'session', not {consistency!r}"
            )
        if metrics.ops is not None:
            data = await metrics.ops.measure(self._ctx.settings.backend, "get", read(self._name))
        else:
            data = await read(self._name)
        self._seen = data
        if data is None:
            raise ElementNotFoundError(self._name)
        return self._decode(data)

    async def set(
        self, value: T, *, ttl: float | None = None, fence: LockGuard | None = None
    ) -> None:
        """Write `value` unconditionally; `ttl` seconds until it expires (None: never).

        `fence=guard` (from `ctx.lock`): written only if the guard's lock has not been acquired
        again since, checked by the store atomically with the write; else `StaleFenceError`.
        """
        if metrics.ops is not None:
            await metrics.ops.measure(
                self._ctx.settings.backend, "set", self._set(value, ttl, fence)
            )
            return
        await self._set(value, ttl, fence)

    async def _set(self, value: T, ttl: float | None, fence: LockGuard | None) -> None:
        encoded = self._encode(value)
        ttl = check_ttl(ttl)
        wf = self._write_fence(fence)
        if wf is None:
            await self._backend.set(self._name, encoded, ttl)
        else:
            await self._backend.fenced_set(self._name, encoded, ttl, wf)

    async def set_if_not_exist(
        self, value: T, *, ttl: float | None = None, fence: LockGuard | None = None
    ) -> bool:
        """Write `value` only if the element does not exist; True iff written (`ttl`, `fence`
        as in `set`)."""
        if metrics.ops is not None:
            return await metrics.ops.measure(
                self._ctx.settings.backend,
                "set_if_not_exist",
                self._set_if_not_exist(value, ttl, fence),
            )
        return await self._set_if_not_exist(value, ttl, fence)

    async def _set_if_not_exist(self, value: T, ttl: float | None, fence: LockGuard | None) -> bool:
        encoded = self._encode(value)
        ttl = check_ttl(ttl)
        wf = self._write_fence(fence)
        if wf is None:
            return await self._backend.set_if_not_exist(self._name, encoded, ttl)
        return await self._backend.fenced_set(self._name, encoded, ttl, wf, if_absent=True)

    async def delete(self, *, fence: LockGuard | None = None) -> None:
        """Remove the element (subscribers see a delete); `fence` as in `set`."""
        if metrics.ops is not None:
            await metrics.ops.measure(self._ctx.settings.backend, "delete", self._delete(fence))
            return
        await self._delete(fence)

    async def _delete(self, fence: LockGuard | None) -> None:
        wf = self._write_fence(fence)
        if wf is None:
            await self._backend.delete(self._name)
        else:
            await self._backend.fenced_delete(self._name, wf)

    def _write_fence(self, guard: LockGuard | None) -> WriteFence | None:
        """What the backend checks for `fence=guard`; a clear error where it cannot."""
        if guard is None:
            return None
        if not isinstance(guard, LockGuard):
            raise TypeError(
                f"fence= takes the guard of `async with ctx.lock(...) as guard`, "
                f"got {type(guard).__name__}"
            )
        backend = self._backend
        if not backend.capabilities.fenced_writes:
            raise UnsupportedOperationError(
                f"the {type(backend).__name__} backend cannot check fences in the store "
                f"(capability fenced_writes is off): refusing a fenced write to {self._name}",
                capability="fenced_writes",
            )
        if guard.fence is None:
            raise ValueError(f"lock {guard.name} has no fence: it was taken on another backend")
        return WriteFence(guard.name, guard.token, guard.fence)

    # -- atomic read-modify-write ------------------------------------------------------------------
    async def modify(
        self,
        f: Callable[[T], tuple[B, T] | Awaitable[tuple[B, T]]],
        *,
        fence: LockGuard | None = None,
    ) -> B:
        """Atomically replace the value by `f(old)[1]` and return `f(old)[0]`.

        `f` may be sync or async. With a backend's native compare-and-set, `f` can run more than
        once under contention (keep it free of side effects); otherwise upstream's lock protocol
        (`lock:<name>`, get, set, release) runs it exactly once. On a `fair_updates` backend
        contended calls are served first come, first served, across processes. `fence=guard`:
        the write is checked against the guard's lock as in `set` (`StaleFenceError`).
        """
        if metrics.ops is not None:
            return await metrics.ops.measure(
                self._ctx.settings.backend, "modify", self._modify(f, fence)
            )
        return await self._modify(f, fence)

    async def _modify(
        self, f: Callable[[T], tuple[B, T] | Awaitable[tuple[B, T]]], fence: LockGuard | None
    ) -> B:
        wf = self._write_fence(fence)
        if self._backend.capabilities.native_cas:
            if wf is None and self._backend.capabilities.fair_updates:
                result: B = await self._modify_fair(f)
            else:
                result = await self._modify_cas(f, wf)
        else:
            result = await self._modify_locked(f, wf)
        return result

    async def _modify_cas(self, f: Callable[[T], Any], wf: WriteFence | None) -> Any:
        backend = self._backend
        data = self._seen
        if data is None:
            data = await backend.get(self._name)
        conflicts = 0
        while True:
            if data is None:
                self._seen = None
                raise ElementNotFoundError(self._name)
            result, new = await _call(f, self._decode(data))
            encoded = self._encode(new)
            if wf is None:
                swapped, data = await backend.compare_and_swap(self._name, data, encoded)
            else:
                swapped, data = await backend.fenced_compare_and_swap(self._name, data, encoded, wf)
            if swapped:
                self._seen = encoded
                return result
            conflicts += 1
            if conflicts > 1:  # the first miss is usually just a stale guess
                # Back off with jitter under contention so that contenders interleave.
                await asyncio.sleep(random.uniform(0, min(0.05, 0.0005 * 2 ** min(conflicts, 7))))

    async def _modify_fair(self, f: Callable[[T], Any]) -> Any:
        """Compare-and-swap served in the element's line (`fair_updates`). Uncontended: one
        round trip by the caller (two when its guess was stale and it is first in line).
        Contended: the calls of this context queue behind one runner that holds the context's
        place in the server's line (`dref._combine`)."""
        ctx = self._ctx
        name = self._name
        if not UpdateLine.enter(ctx, name):
            return await UpdateLine.join(ctx, self, f)
        backend = self._backend
        ticket: bytes | None = None
        queued: asyncio.Future[Any] | None = None
        try:
            data = self._seen
            if data is None:
                data = await backend.get(name)
            if data is None:
                self._seen = None
                raise ElementNotFoundError(name)
            ticket = new_ticket()
            retried = False
            while True:
                result, new = await _call(f, self._decode(data))
                encoded = self._encode(new)
                swapped, current, ahead = await backend.fair_compare_and_swap(
                    name, data, encoded, ticket
                )
                if swapped:
                    self._seen = encoded
                    break
                if ahead or retried or current is None:
                    # Contended: go first in this context's queue; the runner keeps our place.
                    queued = UpdateLine.leave(ctx, name, self, f, ticket, current, ahead)
                    break
                # Only our guess was stale, and we are first in line: try again at once.
                retried = True
                data = current
        except BaseException:
            UpdateLine.leave(ctx, name, ticket=ticket)
            raise
        if queued is not None:
            return await UpdateLine.wait(queued)
        UpdateLine.leave(ctx, name)  # the head left the server's line as it swapped
        lines = ctx._update_lines
        lines.swaps += 1
        if lines.swaps >= SWAPS_PER_YIELD:  # let other tasks run, whatever the backend
            lines.swaps = 0
            await asyncio.sleep(0)
        return result

    async def _modify_locked(self, f: Callable[[T], Any], wf: WriteFence | None) -> Any:
        async with self._ctx._lock_named(f"lock:{self._name}"):
            data = await self._backend.get(self._name)
            if data is None:
                raise ElementNotFoundError(self._name)
            result, new = await _call(f, self._decode(data))
            if wf is None:
                await self._backend.set(self._name, self._encode(new))
            else:
                await self._backend.fenced_set(self._name, self._encode(new), None, wf)
            return result

    async def update(
        self, f: Callable[[T], T | Awaitable[T]], *, fence: LockGuard | None = None
    ) -> None:
        """Atomically replace the value by `f(old)` (`fence` as in `modify`)."""
        await self.modify(_pair_new(f), fence=fence)

    async def get_and_update(
        self, f: Callable[[T], T | Awaitable[T]], *, fence: LockGuard | None = None
    ) -> T:
        """Atomically replace the value by `f(old)`; return the old value."""
        return await self.modify(_pair_old(f), fence=fence)

    async def update_and_get(
        self, f: Callable[[T], T | Awaitable[T]], *, fence: LockGuard | None = None
    ) -> T:
        """Atomically replace the value by `f(old)`; return the new value."""
        return await self.modify(_pair_new(f), fence=fence)

    # -- changes -----------------------------------------------------------------------------------
    def changes(self, *, since: int | None = None) -> ChangeStream[T]:
        """New values in commit order (deletes are skipped), as an async iterator.

        `async with ref.changes() as stream:` subscribes on entry, so that nothing written after
        the `async with` line is missed; a bare `async for` subscribes at the first iteration.
        `since=revision` (a `revisions` backend; from `get_with_revision` or `stream.revision`)
        first replays every change after that revision, or raises `ChangeStreamLaggedError`
        when the backend's history no longer holds them.
        """
        if since is not None:
            self._require_revisions()
            if isinstance(since, bool) or not isinstance(since, int) or since < 0:
                raise ValueError(f"since must be a revision (an int >= 0), got {since!r}")
        return ChangeStream(self, since)

    def on_change(self, callback: Callable[[T], Any]) -> ChangeHandle:
        """Call `callback(value)` (sync or async) for every new value until the handle is cancelled.

        `await ref.on_change(cb)` returns once the subscription is active. Callback exceptions are
        logged and the stream goes on.
        """
        return ChangeHandle(self, callback)


class ChangeStream(AsyncResource, Generic[T]):
    """Decoded values of one element's change events; close with `aclose()` or `async with`."""

    def __init__(self, ref: DRef[T], since: int | None = None) -> None:
        self._ref = ref
        self._sub: Subscription | None = None
        self._since = since
        self.revision = since or 0
        """The revision of the last change this stream consumed (deletes included; 0: none
        yet, or a backend without revisions): resume with `ref.changes(since=revision)`."""

    async def _subscription(self) -> Subscription:
        if self._sub is None:
            backend, name = self._ref._backend, self._ref.name
            if self._since is None:
                self._sub = await backend.subscribe(name)
            else:
                self._sub = await backend.subscribe_since(name, self._since)
        return self._sub

    async def __aenter__(self) -> Self:
        await self._subscription()
        return self

    def __aiter__(self) -> ChangeStream[T]:
        return self

    async def __anext__(self) -> T:
        sub = await self._subscription()
        while True:
            event = await sub.__anext__()
            if event.revision:
                self.revision = event.revision
            if event.value is not None:
                return self._ref._decode(event.value)

    async def aclose(self) -> None:
        if self._sub is not None:
            await self._sub.aclose()


class ChangeHandle:
    """A running `on_change` consumer: `cancel()` stops it; `await` it to wait until subscribed."""

    def __init__(self, ref: DRef[Any], callback: Callable[[Any], Any]) -> None:
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = ref._ctx._spawn(self._run(ref, callback), f"dref-on-change:{ref.name}")

    async def _run(self, ref: DRef[Any], callback: Callable[[Any], Any]) -> None:
        try:
            async with ref.changes() as stream:
                if not self._ready.done():
                    self._ready.set_result(None)
                while True:
                    try:
                        value = await stream.__anext__()
                    except CodecError as exc:
                        log.warning(
                            "on_change(%s): skipped a value: %s",
                            ref.name,
                            exc,
                            extra={"dref_element": ref.name},
                        )
                        continue
                    try:
                        result = callback(value)
                        if inspect.isawaitable(result):
                            await result
                    except Exception:
                        log.exception(
                            "on_change(%s) callback failed",
                            ref.name,
                            extra={"dref_element": ref.name},
                        )
        except asyncio.CancelledError:
            self._ready.cancel()
            raise
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    def cancel(self) -> None:
        """Stop calling the callback."""
        self._task.cancel()

    @property
    def done(self) -> bool:
        return self._task.done()

    def __await__(self) -> Generator[Any, None, ChangeHandle]:
        yield from self._ready.__await__()
        return self


def check_ttl(ttl: float | None) -> float | None:
    """`ttl` if it is a positive, finite number of seconds (or None); else ValueError."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"ttl must be a number of seconds or None, got {type(ttl).__name__}")
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"ttl must be a positive, finite number of seconds, got {ttl!r}")
    return float(ttl)


def _pair_new(f: Callable[[T], Any]) -> Callable[[T], Any]:
    """`modify`'s function for `update`/`update_and_get`: sync while `f` returns a value."""

    def g(old: T) -> tuple[T, T] | Awaitable[tuple[T, T]]:
        new = f(old)
        if awaitable(new):
            return _both(new)
        return new, new

    return g


def _pair_old(f: Callable[[T], Any]) -> Callable[[T], Any]:
    """`modify`'s function for `get_and_update`: sync while `f` returns a value."""

    def g(old: T) -> tuple[T, T] | Awaitable[tuple[T, T]]:
        new = f(old)
        if awaitable(new):
            return _old_and(old, new)
        return old, new

    return g


async def _both(new: Awaitable[T]) -> tuple[T, T]:
    value = await new
    return value, value


async def _old_and(old: T, new: Awaitable[T]) -> tuple[T, T]:
    return old, await new
