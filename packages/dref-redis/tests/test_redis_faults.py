"""Faults and bad input, each against a real redis-server process."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis_procs import RedisServer, free_port

import dref
from dref import lock_value
from dref.changes import ChangeEvent
from dref.errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    ChangeStreamLaggedError,
    ClosedError,
    ConfigurationError,
    LockStolenError,
    LockTimeoutError,
)
from dref_redis import RedisBackend

DEADLINE = 10.0
FAST = {
    "connect_timeout": 1.0,
    "op_timeout": 1.0,
    "ping_interval": 0.5,
    "reconnect_max_delay": 0.2,
    "poll_interval": 0.2,
}


async def eventually(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    delay = 0.001
    while not await check():
        if loop.time() > end:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


async def next_event(sub: Any, timeout: float = DEADLINE) -> Any:
    return await asyncio.wait_for(sub.__anext__(), timeout)


@pytest.fixture
async def raw_own(own_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=own_server.port)
    yield client
    await client.aclose()


# -- restarts and reconnects ----------------------------------------------------------------------
async def test_changes_stream_survives_kill_and_restart(own_server: RedisServer) -> None:
    async with dref.connect("redis", url=own_server.url, **FAST) as ctx:
        ref = await ctx.make(0, "survivor")
        async with ref.changes() as stream:
            await ref.set(1)
            assert await next_event(stream) == 1
            own_server.stop()
            with pytest.raises(BackendUnavailableError):
                await ref.set(2)
            own_server.restart()  # empty: no persistence

            async def written() -> bool:
                try:
                    await ref.set(42)
                except BackendUnavailableError:
                    return False
                return True

            await eventually(written, "a write after the restart")
            assert await next_event(stream) == 42
        assert ctx.backend.listener.reconnects >= 1  # type: ignore[attr-defined]


async def test_resync_after_reconnect_delivers_what_pubsub_lost(
    own_server: RedisServer, raw_own: aioredis.Redis, open_backend: Callable[..., Any]
) -> None:
    backend: RedisBackend = await open_backend(own_server.url)
    sub_a = await backend.subscribe("a")
    sub_b = await backend.subscribe("b")
    sub_c = await backend.subscribe("c")
    for name in ("a", "b", "c"):
        await backend.set(name, b"\x01")
    for sub in (sub_a, sub_b, sub_c):
        assert (await next_event(sub)).value == b"\x01"
    # Keep the listener out while the raw client changes the keys without any notification.
    await raw_own.config_set("requirepass", "locked-out")
    await raw_own.client_kill_filter(_type="pubsub")
    await eventually(lambda: _false(backend.listener.connected), "listener disconnected")
    await raw_own.set("a", b"\x02")
    await raw_own.delete("b")
    await raw_own.config_set("requirepass", "")
    assert await next_event(sub_a) == ChangeEvent("a", b"\x02")
    assert await next_event(sub_b) == ChangeEvent("b", None)
    await backend.set("c", b"\x03")
    # unchanged "c": no duplicate; a dref write carries its revision (the raw ones do not)
    assert await next_event(sub_c) == ChangeEvent("c", b"\x03", 2)
    assert backend.listener.reconnects == 1


async def test_changes_missed_while_disconnected_are_replayed_from_the_history(
    own_server: RedisServer, raw_own: aioredis.Redis
) -> None:
    """Five writes while the pub/sub connection is down arrive as five changes, in order,
    with their revisions (not only the last value); a write beyond the history ends the
    stream with ChangeStreamLaggedError instead."""
    options = {**FAST, "history": 8}
    async with (
        dref.connect("redis", url=own_server.url, **options) as ctx,
        dref.connect("redis", url=own_server.url, **options) as writer_ctx,
    ):
        ref = await ctx.make(0, "missed")
        writer = writer_ctx.ref("missed", type=int)
        backend: RedisBackend = ctx.backend  # type: ignore[assignment]
        async with ref.changes() as stream, ctx.ref("gone", type=int).changes() as gone:
            await ref.set(1)
            assert await next_event(stream) == 1
            first = stream.revision
            await writer_ctx.ref("gone", type=int).set(0)
            assert await next_event(gone) == 0
            await raw_own.config_set("requirepass", "locked-out")
            await raw_own.client_kill_filter(_type="pubsub")
            await eventually(lambda: _false(backend.listener.connected), "listener disconnected")
            for i in range(2, 7):
                await writer.set(i)
            for i in range(10):  # more than the history of "gone" keeps
                await writer_ctx.ref("gone", type=int).set(i + 1)
            await raw_own.config_set("requirepass", "")
            assert [await next_event(stream) for _ in range(5)] == [2, 3, 4, 5, 6]
            assert stream.revision == first + 5
            with pytest.raises(ChangeStreamLaggedError, match="after revision 1"):
                await next_event(gone)
            await writer.set(7)
            assert await next_event(stream) == 7  # live again, nothing repeated
        assert backend.listener.reconnects == 1


async def _false(value: bool) -> bool:
    return not value


# -- unreachable ----------------------------------------------------------------------------------
async def test_open_fails_fast_when_nothing_listens() -> None:
    start = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="unavailable"):
        await RedisBackend.open(
            _settings(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=1, op_timeout=1)
        )
    assert time.monotonic() - start < 3


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


async def test_open_fails_after_the_timeout_when_redis_never_answers(black_hole: int) -> None:
    start = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        await RedisBackend.open(
            _settings(f"redis://127.0.0.1:{black_hole}/0", connect_timeout=0.5, op_timeout=0.5)
        )
    assert isinstance(info.value, BackendTimeoutError)
    assert 0.9 < time.monotonic() - start < 3


async def test_operations_fail_after_the_timeout_while_redis_hangs(
    own_server: RedisServer, open_backend: Callable[..., Any]
) -> None:
    backend: RedisBackend = await open_backend(
        own_server.url, connect_timeout=0.5, op_timeout=0.5, ping_interval=0.3
    )
    await backend.set("k", b"\x01")
    await (await backend.subscribe("k")).aclose()  # notifications start on first subscribe
    own_server.pause()
    try:
        for op in (
            lambda: backend.get("k"),
            lambda: backend.set("k", b"\x02"),
            lambda: backend.try_lock("l", lock_value.to_bytes(1), 1.0),
        ):
            start = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                await op()
            assert time.monotonic() - start < 2
        await eventually(lambda: _false(backend.listener.connected), "listener noticed")
        with pytest.raises(BackendUnavailableError, match="not connected"):
            await backend.subscribe("k")
    finally:
        own_server.resume()
    await eventually(lambda: _true(backend.listener.connected), "listener back")
    assert await backend.get("k") == b"\x01"


async def _true(value: bool) -> bool:
    return value


async def test_scripts_are_loaded_again_after_script_flush(
    own_server: RedisServer, raw_own: aioredis.Redis, open_backend: Callable[..., Any]
) -> None:
    backend: RedisBackend = await open_backend(own_server.url)
    await backend.set("k", b"\x01")
    await raw_own.script_flush()  # as after a restart without persistence
    await backend.set("k", b"\x02")
    assert await backend.compare_and_set("k", b"\x02", b"\x03")
    assert await raw_own.get("k") == b"\x03"
    await raw_own.script_flush()
    token = lock_value.to_bytes(5)
    assert await backend.try_lock("l", token, 10.0) is not None
    assert await backend.release_lock("l", token)


async def test_cancelled_operation_leaves_the_backend_usable(
    backend: RedisBackend,
) -> None:
    for _ in range(20):
        task = asyncio.create_task(backend.set("c", b"\x01"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await backend.set("c", b"\x02")
    assert await backend.get("c") == b"\x02"


# -- locks under interference ---------------------------------------------------------------------
@pytest.mark.parametrize("how", ["delete", "overwrite"])
async def test_raw_interference_with_a_held_lock_cancels_the_body(
    redis_server: RedisServer, how: str
) -> None:
    """Someone deletes or overwrites the key without any notification: the owner-checked
    renewal (every ttl/3) notices and cancels the body."""
    name = f"lock:{uuid.uuid4().hex}"
    raw = aioredis.Redis(host="127.0.0.1", port=redis_server.port)
    cancelled = False
    start = time.monotonic()
    try:
        async with dref.connect("redis", url=redis_server.url, **FAST) as ctx:
            with pytest.raises(LockStolenError, match=f"^Lock {name} with value"):
                async with ctx.lock(name, ttl=1.5):
                    if how == "delete":
                        await raw.delete(name)
                    else:
                        await raw.set(name, lock_value.to_bytes(99))
                    try:
                        await asyncio.sleep(DEADLINE)
                    except asyncio.CancelledError:
                        cancelled = True
                        raise
        assert cancelled
        assert time.monotonic() - start < 2
    finally:
        await raw.aclose()


async def test_theft_is_noticed_from_the_notification_without_polling(
    redis_server: RedisServer,
) -> None:
    slow = {**FAST, "poll_interval": 60.0}
    name = f"lock:{uuid.uuid4().hex}"
    async with (
        dref.connect("redis", url=redis_server.url, **slow) as ctx,
        dref.connect("redis", url=redis_server.url, **slow) as thief,
    ):
        start = time.monotonic()
        with pytest.raises(LockStolenError):
            async with ctx.lock(name, ttl=60):
                await thief.backend.set(name, lock_value.to_bytes(7))
                await asyncio.sleep(DEADLINE)
        assert time.monotonic() - start < 2


async def test_waiter_is_woken_by_the_release_notification(redis_server: RedisServer) -> None:
    slow = {**FAST, "poll_interval": 60.0}
    name = f"lock:{uuid.uuid4().hex}"
    async with (
        dref.connect("redis", url=redis_server.url, **slow) as a,
        dref.connect("redis", url=redis_server.url, **slow) as b,
    ):
        holding = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:
            async with a.lock(name, ttl=60):
                holding.set()
                await release.wait()

        task = asyncio.create_task(holder())
        await holding.wait()
        waiter = asyncio.create_task(_hold_once(b, name))
        await eventually(lambda: _true(b.backend.hub.subscribers(name) > 0), "waiter waiting")
        start = time.monotonic()
        release.set()
        await asyncio.wait_for(waiter, DEADLINE)
        assert time.monotonic() - start < 2
        await task


async def _hold_once(ctx: dref.DRefContext, name: str) -> None:
    async with ctx.lock(name, ttl=60, timeout=DEADLINE):
        pass


@pytest.mark.parametrize("body", ["short", "watched"])
async def test_caller_cancelled_during_the_release_still_releases(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, body: str
) -> None:
    """The release request of a cancelled caller may be lost (here: it never gets out); the
    lock is released anyway, long before its TTL, and the caller sees its cancellation."""
    name = f"lock:{uuid.uuid4().hex}"
    raw = aioredis.Redis(host="127.0.0.1", port=redis_server.port)
    try:
        async with dref.connect("redis", url=redis_server.url, **FAST) as ctx:
            release_lock = ctx.backend.release_lock
            calls: list[bytes] = []

            async def first_request_lost(lock: str, token: bytes) -> bool:
                calls.append(token)
                if len(calls) == 1:
                    await asyncio.Event().wait()
                return await release_lock(lock, token)

            monkeypatch.setattr(ctx.backend, "release_lock", first_request_lost)

            async def hold() -> None:
                async with ctx.lock(name, ttl=60):
                    if body == "watched":  # long enough for the watchdog to subscribe
                        await eventually(
                            lambda: _true(ctx.backend.hub.subscribers(name) > 0), "watching"
                        )

            task = asyncio.create_task(hold())
            await eventually(lambda: _true(len(calls) == 1), "release sent")
            assert await raw.get(name) is not None
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await eventually(lambda: _true(len(calls) == 2), "release sent again")
            await eventually(lambda: _is_none(raw.get(name)), "lock released")
            assert calls[0] == calls[1]
    finally:
        await raw.aclose()


async def _is_none(value: Awaitable[object]) -> bool:
    return await value is None


async def test_contending_clients_get_the_lock_in_turn(redis_server: RedisServer) -> None:
    """Four contexts of one process: their waits are served first come, first served, so each
    gets about a quarter (without the line, the client whose notification came first won)."""
    name = f"lock:{uuid.uuid4().hex}"
    counts = [0, 0, 0, 0]
    inside = 0
    async with (
        dref.connect("redis", url=redis_server.url, **FAST) as c0,
        dref.connect("redis", url=redis_server.url, **FAST) as c1,
        dref.connect("redis", url=redis_server.url, **FAST) as c2,
        dref.connect("redis", url=redis_server.url, **FAST) as c3,
    ):
        stop = asyncio.Event()

        async def client(i: int, ctx: dref.DRefContext) -> None:
            nonlocal inside
            while not stop.is_set():
                async with ctx.lock(name, ttl=5, timeout=DEADLINE):
                    inside += 1
                    assert inside == 1
                    counts[i] += 1
                    if sum(counts) >= 120:
                        stop.set()
                    await asyncio.sleep(0)
                    inside -= 1

        await asyncio.wait_for(
            asyncio.gather(*(client(i, c) for i, c in enumerate((c0, c1, c2, c3)))), 60
        )
    assert min(counts) >= max(counts) / 2, counts


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_a_waiter_that_gives_up_leaves_the_line(redis_server: RedisServer, how: str) -> None:
    name = f"lock:{uuid.uuid4().hex}"
    queue = b"{" + name.encode() + b"}:dref-queue"
    raw = aioredis.Redis(host="127.0.0.1", port=redis_server.port)
    slow = {**FAST, "poll_interval": 1.0}  # a waiter's place lasts 3 s without an attempt
    async with (
        dref.connect("redis", url=redis_server.url, **slow) as holder,
        dref.connect("redis", url=redis_server.url, **slow) as waiter,
        dref.connect("redis", url=redis_server.url, **slow) as later,
    ):
        try:
            async with holder.lock(name, ttl=5):
                if how == "timeout":
                    with pytest.raises(LockTimeoutError):
                        async with waiter.lock(name, ttl=5, timeout=0.3):
                            pass
                else:
                    task = asyncio.create_task(_acquire(waiter, name))
                    await eventually(lambda: _queued(raw, queue, 1), "waiter in line")
                    task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await task
                # Gone from the line at once, not when its place runs out.
                await eventually(lambda: _queued(raw, queue, 0), "line empty", timeout=2.0)
            # Nobody waits, so the next client takes the free lock at its first attempt.
            async with later.lock(name, ttl=5, timeout=0):
                pass
        finally:
            await raw.aclose()


async def _acquire(ctx: dref.DRefContext, name: str) -> None:
    async with ctx.lock(name, ttl=5):
        pass


async def _queued(raw: aioredis.Redis, queue: bytes, n: int) -> bool:
    return await raw.zcard(queue) == n


# -- bad configuration and foreign data -----------------------------------------------------------
@pytest.fixture
def password_server() -> Iterator[RedisServer]:
    server = RedisServer(password="s3cret").start()
    yield server
    server.cleanup()


async def test_wrong_password_fails_at_open(password_server: RedisServer) -> None:
    url = f"redis://127.0.0.1:{password_server.port}/0"
    with pytest.raises(ConfigurationError, match="authentication failed") as info:
        await RedisBackend.open(_settings(url, password="wrong"))
    assert "wrong" not in str(info.value)
    with pytest.raises(ConfigurationError, match="authentication failed"):
        await RedisBackend.open(_settings(url))  # no password at all
    backend = await RedisBackend.open(
        _settings(f"redis://:s3cret@127.0.0.1:{password_server.port}")
    )
    await backend.set("x", b"\x01")
    await backend.aclose()


async def test_acl_user(password_server: RedisServer) -> None:
    admin = aioredis.Redis(host="127.0.0.1", port=password_server.port, password="s3cret")
    await admin.acl_setuser(
        "app", enabled=True, passwords=["+app-pw"], keys=["*"], channels=["*"], commands=["+@all"]
    )
    await admin.aclose()
    url = f"redis://127.0.0.1:{password_server.port}"
    backend = await RedisBackend.open(_settings(url, username="app", password="app-pw"))
    async with await backend.subscribe("acl") as sub:
        await backend.set("acl", b"\x01")
        assert (await next_event(sub)).value == b"\x01"
    await backend.aclose()
    with pytest.raises(ConfigurationError, match="authentication failed"):
        await RedisBackend.open(_settings(url, username="nobody", password="app-pw"))


async def test_wrong_database_fails_at_open(redis_server: RedisServer) -> None:
    with pytest.raises(ConfigurationError, match="database does not exist"):
        await RedisBackend.open(_settings(redis_server.url, db=4000))


async def test_non_dref_value_under_a_key(redis_server: RedisServer, backend: RedisBackend) -> None:
    raw = aioredis.Redis(host="127.0.0.1", port=redis_server.port)
    name = f"foreign:{uuid.uuid4().hex}"
    await raw.hset(name, "field", "value")
    try:
        with pytest.raises(BackendError, match="not a dref element"):
            await backend.get(name)
        with pytest.raises(BackendError, match=f"compare_and_set of '{name}'"):
            await backend.compare_and_set(name, b"\x01", b"\x02")
        async with dref.connect("redis", url=redis_server.url) as ctx:
            with pytest.raises(BackendError, match="not a dref element"):
                await ctx.ref(name, type=int).get()
        # The backend goes on working.
        await backend.set(f"{name}:ok", b"\x01")
        assert await backend.get(f"{name}:ok") == b"\x01"
    finally:
        await raw.aclose()


async def test_closed_backend(redis_server: RedisServer) -> None:
    backend = await RedisBackend.open(_settings(redis_server.url))
    sub = await backend.subscribe("closing")
    await backend.aclose()
    await backend.aclose()  # idempotent
    with pytest.raises(StopAsyncIteration):
        await next_event(sub)
    with pytest.raises(ClosedError):
        await backend.get("closing")
    with pytest.raises(ClosedError):
        await backend.subscribe("closing")
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("dref-redis")]


def _settings(url: str, **overrides: Any) -> Any:
    from conftest import fast_settings

    return fast_settings(url, **overrides)


async def test_contended_lock_modify_never_reports_a_false_theft(
    redis_server: RedisServer,
) -> None:
    """Stale notifications (earlier holders' set/release) must not look like a theft."""
    name = f"contended:{uuid.uuid4().hex}"
    options = {**FAST, "modify_strategy": "lock"}
    async with contextlib.AsyncExitStack() as stack:
        ctxs = [
            await stack.enter_async_context(dref.connect("redis", url=redis_server.url, **options))
            for _ in range(4)
        ]
        await ctxs[0].make(0, name)
        refs = [ctx.ref(name, type=int) for ctx in ctxs]

        async def worker(i: int) -> None:
            for _ in range(20):
                await refs[i % 4].update(lambda n: n + 1)

        await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(12))), 60)
        assert await refs[0].get() == 240


async def test_notifications_start_on_the_first_subscription(
    own_server: RedisServer, open_backend: Callable[..., Any]
) -> None:
    backend: RedisBackend = await open_backend(own_server.url)
    await backend.set("k", b"\x01")
    assert not backend.listener.started  # a context that never subscribes reads nothing
    async with await backend.subscribe("k") as events:
        assert backend.listener.started
        await backend.set("k", b"\x02")
        assert (await asyncio.wait_for(events.__anext__(), 5)).value == b"\x02"
