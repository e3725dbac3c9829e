"""`dref.sync`: dref's API without `await`, for threads and scripts (docs/sync.md).

```python
import dref.sync

with dref.sync.connect("redis", url="redis://127.0.0.1:6379/0") as ctx:
    visits = ctx.make(0, "visits")
    visits.update(lambda n: n + 1)
    with ctx.lock("report", ttl=10) as guard:
        ...  # the lease is renewed while this thread works
    for value in visits.changes():
        ...
```

Design: each sync context owns one private event-loop thread that runs the async context; a
call from any thread submits its coroutine there and waits for the result. So every thread may
share one context, the lease of a held lock is renewed by that loop while the calling thread is
busy, and `close()` (or leaving `with`) closes the context, stops the loop and joins the thread.
Functions given to `modify` / `update*` run in a worker thread, never on the loop, so a slow
function does not hold up lock renewals. A lost lock cannot cancel a thread: the next call
into dref from the thread that holds it raises `LockStolenError`, and `guard.lost` says so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, overload

from dref.codecs import Codec
from dref.context import DRefContext
from dref.context import connect as async_connect
from dref.errors import ClosedError, LockStolenError
from dref.ids import IdLike, resolve_name
from dref.lock import Lock, LockGuard
from dref.ref import ChangeStream, DRef
from dref.spi import ReadConsistency

__all__ = ["SyncChangeStream", "SyncContext", "SyncLock", "SyncLockGuard", "SyncRef", "connect"]

T = TypeVar("T")
B = TypeVar("B")

_ids = itertools.count(1)


class _LoopThread:
    """One event loop in one daemon thread; `run(coro)` from any other thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(
            target=self._main, name=f"dref-sync-loop-{next(_ids)}", daemon=True
        )
        self.thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if threading.get_ident() == self.thread.ident:
            coro.close()
            raise RuntimeError("dref.sync called from its own event loop (use the async API)")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.submit(coro).result()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()


def connect(backend: str | None = None, **options: Any) -> SyncContext:
    """Configure and open a backend, like `dref.connect` (same options, same precedence):
    `with dref.sync.connect("redis", url=...) as ctx:`. Invalid configuration raises
    `ConfigurationError` here, before any thread starts."""
    connector = async_connect(backend, **options)
    loop = _LoopThread()
    try:
        ctx = loop.run(connector.open())
    except BaseException:
        loop.stop()
        raise
    return SyncContext(ctx, loop)


class SyncContext:
    """An open connection: makes refs, takes locks, lists names; close with `close()`."""

    def __init__(self, ctx: DRefContext, loop: _LoopThread) -> None:
        self._ctx = ctx
        self._loop = loop
        self._held: dict[int, list[SyncLockGuard]] = {}
        self._streams: set[SyncChangeStream[Any]] = set()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def context(self) -> DRefContext:
        """The async context underneath (use it only from coroutines run on its loop)."""
        return self._ctx

    # -- plumbing -----------------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop; first raise a lost lock held by this thread."""
        if self._closed:
            coro.close()
            raise ClosedError("this dref.sync context is closed")
        try:
            self._check_held()
        except BaseException:
            coro.close()
            raise
        return self._loop.run(coro)

    def _check_held(self) -> None:
        for guard in self._held.get(threading.get_ident(), ()):
            if guard.lost and not guard._reported:
                guard._reported = True
                raise LockStolenError(guard.name, guard.token_int, guard.lost_reason)

    # -- refs -----------------------------------------------------------------------------------
    @overload
    def make(
        self,
        initial: T,
        id: IdLike = None,
        *,
        codec: Codec | str | None = None,
        ttl: float | None = None,
    ) -> SyncRef[T]: ...

    @overload
    def make(
        self,
        initial: Any,
        id: IdLike = None,
        *,
        codec: Codec | str | None = None,
        type: type[T],
        ttl: float | None = None,
    ) -> SyncRef[T]: ...

    def make(
        self,
        initial: Any,
        id: IdLike = None,
        *,
        codec: Codec | str | None = None,
        type: Any = None,
        ttl: float | None = None,
    ) -> SyncRef[Any]:
        """A ref seeded with `initial` if the element does not exist yet, expiring after `ttl`
        seconds when seeded (`DRefContext.make`)."""
        name = resolve_name(id, depth=1)
        kind = type if type is not None else (None if initial is None else initial.__class__)
        ref = self.ref(name, type=kind, codec=codec)
        ref.set_if_not_exist(initial, ttl=ttl)
        return ref

    def ref(self, name: str, *, type: Any = None, codec: Codec | str | None = None) -> SyncRef[Any]:
        """A handle to an element that may already exist, without seeding it."""
        return SyncRef(self, self._ctx.ref(name, type=type, codec=codec))

    def names(self, prefix: str = "") -> list[str]:
        """The names of the live elements starting with `prefix`, sorted (see `ctx.names`)."""

        async def collect() -> list[str]:
            return sorted({name async for name in self._ctx.names(prefix)})

        return self._run(collect())

    # -- locks ----------------------------------------------------------------------------------
    def lock(
        self, id: IdLike = None, *, ttl: float | None = None, timeout: float | None = None
    ) -> SyncLock:
        """`with ctx.lock("name", ttl=10) as guard:` — see `DRefContext.lock`."""
        return SyncLock(
            self, self._ctx._lock_named(resolve_name(id, depth=1), ttl=ttl, timeout=timeout)
        )

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close streams and the context, stop the loop and join its thread; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            for stream in list(self._streams):
                stream._closed = True
            self._loop.run(self._ctx.aclose())
        finally:
            self._loop.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _in_thread(f: Callable[[T], Any]) -> Callable[[T], Awaitable[Any]]:
    """`f` as an async function that runs it in a worker thread (never on the loop)."""

    async def g(value: T) -> Any:
        result = await asyncio.to_thread(f, value)
        if asyncio.iscoroutine(result):  # an `async def` given to the sync API: await it here
            result = await result
        return result

    return g


def _unwrap(fence: SyncLockGuard | None) -> LockGuard | None:
    """The async guard behind a sync one (what `fence=` passes on)."""
    return None if fence is None else fence._guard


class SyncRef(Generic[T]):
    """`DRef` without `await`; the same methods, safe from any thread."""

    __slots__ = ("_ctx", "_ref")

    def __init__(self, ctx: SyncContext, ref: DRef[T]) -> None:
        self._ctx = ctx
        self._ref = ref

    @property
    def name(self) -> str:
        return self._ref.name

    def __repr__(self) -> str:
        return f"SyncRef({self.name!r})"

    def get(self, *, consistency: ReadConsistency | None = None) -> T:
        """The current value; `ElementNotFoundError` if it does not exist. `consistency`: as
        `DRef.get` (`"session"`: at least this context's own writes, served locally)."""
        return self._ctx._run(self._ref.get(consistency=consistency))

    def get_with_revision(self) -> tuple[T, int]:
        """`DRef.get_with_revision`: the value and the revision it reflects."""
        return self._ctx._run(self._ref.get_with_revision())

    def set(
        self, value: T, *, ttl: float | None = None, fence: SyncLockGuard | None = None
    ) -> None:
        """`DRef.set`: `ttl` seconds until it expires; `fence=guard` refused with
        `StaleFenceError` once the guard's lock was acquired again."""
        self._ctx._run(self._ref.set(value, ttl=ttl, fence=_unwrap(fence)))

    def set_if_not_exist(
        self, value: T, *, ttl: float | None = None, fence: SyncLockGuard | None = None
    ) -> bool:
        return self._ctx._run(self._ref.set_if_not_exist(value, ttl=ttl, fence=_unwrap(fence)))

    def delete(self, *, fence: SyncLockGuard | None = None) -> None:
        self._ctx._run(self._ref.delete(fence=_unwrap(fence)))

    def modify(self, f: Callable[[T], tuple[B, T]], *, fence: SyncLockGuard | None = None) -> B:
        """Atomically replace the value by `f(old)[1]`, return `f(old)[0]` (`f` runs in a worker
        thread, and may run more than once with a native compare-and-set)."""
        result: B = self._ctx._run(self._ref.modify(_in_thread(f), fence=_unwrap(fence)))
        return result

    def update(self, f: Callable[[T], T], *, fence: SyncLockGuard | None = None) -> None:
        self._ctx._run(self._ref.update(_in_thread(f), fence=_unwrap(fence)))

    def get_and_update(self, f: Callable[[T], T], *, fence: SyncLockGuard | None = None) -> T:
        return self._ctx._run(self._ref.get_and_update(_in_thread(f), fence=_unwrap(fence)))

    def update_and_get(self, f: Callable[[T], T], *, fence: SyncLockGuard | None = None) -> T:
        return self._ctx._run(self._ref.update_and_get(_in_thread(f), fence=_unwrap(fence)))

    def changes(self, *, since: int | None = None) -> SyncChangeStream[T]:
        """New values in commit order (deletes skipped): `for value in ref.changes():`. `with
        ref.changes() as stream:` subscribes on entry; a bare `for` at the first iteration.
        `since=revision`: first every change after it, as `DRef.changes`."""
        return SyncChangeStream(self._ctx, self._ref.changes(since=since))


class SyncChangeStream(Generic[T]):
    """A blocking iterator of an element's new values; close with `close()` or `with`."""

    def __init__(self, ctx: SyncContext, stream: ChangeStream[T]) -> None:
        self._ctx = ctx
        self._stream = stream
        self._open = False
        self._closed = False

    def _subscribe(self) -> None:
        if not self._open:
            self._ctx._run(self._stream.__aenter__())
            self._open = True
            self._ctx._streams.add(self)

    def __enter__(self) -> Self:
        self._subscribe()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[T]:
        return self

    @property
    def revision(self) -> int:
        """The revision of the last change consumed (`ChangeStream.revision`)."""
        return self._stream.revision

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        self._subscribe()
        try:
            return self._ctx._run(self._stream.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ctx._streams.discard(self)
        if self._open and not self._ctx.closed:
            self._ctx._loop.run(self._stream.aclose())


class SyncLockGuard:
    """What `with ctx.lock(...) as guard` gives: token, fence, and whether the lock was lost."""

    def __init__(self, guard: LockGuard) -> None:
        self._guard = guard
        self._reported = False

    @property
    def name(self) -> str:
        return self._guard.name

    @property
    def token(self) -> bytes:
        return self._guard.token

    @property
    def token_int(self) -> int:
        return self._guard.token_int

    @property
    def fence(self) -> int | None:
        return self._guard.fence

    @property
    def ttl(self) -> float:
        return self._guard.ttl

    @property
    def lost(self) -> bool:
        """True once the lock is known to be lost (renewal refused, key replaced, lease out)."""
        return self._guard.lost_reason is not None

    @property
    def lost_reason(self) -> str | None:
        return self._guard.lost_reason

    @property
    def held(self) -> bool:
        return self._guard.held


class SyncLock:
    """A context manager holding one distributed lock from a thread (see the module docstring)."""

    def __init__(self, ctx: SyncContext, lock: Lock) -> None:
        self._ctx = ctx
        self._lock = lock
        self._release: asyncio.Event | None = None
        self._holder: concurrent.futures.Future[None] | None = None
        self._guard: SyncLockGuard | None = None
        self._thread = 0

    async def _hold(self, acquired: concurrent.futures.Future[LockGuard]) -> None:
        """On the loop: hold the lock until released; the watchdog cancels this task if lost."""
        self._release = release = asyncio.Event()
        entered = False
        try:
            async with self._lock as guard:
                entered = True
                acquired.set_result(guard)
                await release.wait()
        except BaseException as exc:
            if not entered and not acquired.done():
                acquired.set_exception(exc)
                return
            if not isinstance(exc, LockStolenError):
                raise

    def __enter__(self) -> SyncLockGuard:
        acquired: concurrent.futures.Future[LockGuard] = concurrent.futures.Future()
        self._ctx._check_held()
        if self._ctx.closed:
            raise ClosedError("this dref.sync context is closed")
        self._holder = self._ctx._loop.submit(self._hold(acquired))
        guard = SyncLockGuard(acquired.result())
        self._guard = guard
        self._thread = threading.get_ident()
        with self._ctx._lock:
            self._ctx._held.setdefault(self._thread, []).append(guard)
        return guard

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        guard, holder, release = self._guard, self._holder, self._release
        assert guard is not None
        assert holder is not None
        assert release is not None
        with self._ctx._lock:
            held = self._ctx._held.get(self._thread, [])
            if guard in held:
                held.remove(guard)
            if not held:
                self._ctx._held.pop(self._thread, None)
        self._ctx._loop.loop.call_soon_threadsafe(release.set)
        holder.result()  # released (owner-checked) or lost
        if guard.lost and not guard._reported and not isinstance(exc, LockStolenError):
            guard._reported = True
            raise LockStolenError(guard.name, guard.token_int, guard.lost_reason)
