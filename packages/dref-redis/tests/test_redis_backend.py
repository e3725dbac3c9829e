"""Backend behaviour beyond the conformance suite: TTL precision, fences, subscription barrier."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis
from redis_procs import RedisServer

from dref import lock_value
from dref.changes import ChangeEvent
from dref_redis import RedisBackend

DEADLINE = 10.0


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=redis_server.port)
    yield client
    await client.aclose()


async def next_event(sub: Any) -> ChangeEvent:
    event: ChangeEvent = await asyncio.wait_for(sub.__anext__(), DEADLINE)
    return event


async def test_ttls_are_milliseconds(backend: RedisBackend, raw: aioredis.Redis) -> None:
    await backend.set("ttl:a", b"\x01", ttl=0.25)
    assert 0 < await raw.pttl("ttl:a") <= 250
    assert await backend.set_if_absent("ttl:b", b"\x01", ttl=1.5)
    assert 1000 < await raw.pttl("ttl:b") <= 1500
    assert await backend.expire("ttl:b", 0.05)
    assert 0 < await raw.pttl("ttl:b") <= 50
    await backend.set("ttl:c", b"\x01", ttl=0.0001)  # rounded up to 1 ms, never "no expiry"
    assert await raw.pttl("ttl:c") in (-2, 0, 1)
    await backend.set("ttl:d", b"\x01")
    assert await raw.pttl("ttl:d") == -1
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="ttl"):
            await backend.set("ttl:e", b"\x01", ttl=bad)


async def test_set_without_ttl_clears_an_existing_one(
    backend: RedisBackend, raw: aioredis.Redis
) -> None:
    await backend.set("ttl:f", b"\x01", ttl=30)
    await backend.set("ttl:f", b"\x02")
    assert await raw.pttl("ttl:f") == -1
    assert await backend.compare_and_set("ttl:f", b"\x02", b"\x03", ttl=30)
    assert 0 < await raw.pttl("ttl:f") <= 30000


async def test_fence_grows_across_backends_and_expiries(
    redis_server: RedisServer, open_backend: Any
) -> None:
    a: RedisBackend = await open_backend(redis_server.url)
    b: RedisBackend = await open_backend(redis_server.url)
    fences = []
    for i in range(6):
        token = lock_value.to_bytes(i)
        grant = await (a if i % 2 else b).try_lock("fenced", token, 5)
        assert grant is not None
        assert grant.fence is not None
        fences.append(grant.fence)
        assert await (a if i % 2 else b).release_lock("fenced", token)
    assert fences == sorted(set(fences))


async def test_releaser_of_a_wanted_lock_lets_the_waiters_go_first(
    redis_server: RedisServer, open_backend: Any, raw: aioredis.Redis
) -> None:
    holder: RedisBackend = await open_backend(redis_server.url, poll_interval=0.5)
    waiter: RedisBackend = await open_backend(redis_server.url, poll_interval=0.5)
    t1, t2, t3 = (lock_value.to_bytes(i) for i in (1, 2, 3))
    # Uncontended: release and take again at once.
    assert await holder.try_lock("wanted", t1, 5) is not None
    assert await holder.release_lock("wanted", t1)
    assert await holder.try_lock("wanted", t2, 5) is not None
    # A waiter fails while we hold it: its mark lasts two polls.
    assert await waiter.try_lock("wanted", t3, 5) is None
    assert 0 < await raw.pttl(b"{wanted}:dref-wanted") <= 1000
    assert await holder.release_lock("wanted", t2)
    assert await raw.exists(b"{wanted}:dref-wanted") == 0  # the release takes the mark
    # Our next attempt defers to the woken waiters once (the lock is free), then goes ahead.
    assert await holder.try_lock("wanted", t1, 5) is None
    assert await raw.exists("wanted") == 0
    assert await waiter.try_lock("wanted", t3, 5) is not None
    assert await holder.try_lock("wanted", t1, 5) is None  # held by the waiter: wanted again
    assert await waiter.release_lock("wanted", t3)
    assert await waiter.try_lock("wanted", t3, 5) is None
    assert await holder.try_lock("wanted", t1, 5) is not None
    assert await holder.release_lock("wanted", t1)  # nobody waited meanwhile: no deferral
    assert await holder.try_lock("wanted", t1, 5) is not None


async def test_only_the_releasing_task_defers_to_the_waiters(
    redis_server: RedisServer, open_backend: Any
) -> None:
    """Another task of the releasing client — e.g. its own woken waiter — is not held back."""
    holder: RedisBackend = await open_backend(redis_server.url)
    other: RedisBackend = await open_backend(redis_server.url)
    t1, t2, t3 = (lock_value.to_bytes(i) for i in (1, 2, 3))
    assert await holder.try_lock("wanted2", t1, 5) is not None
    assert await other.try_lock("wanted2", t2, 5) is None
    assert await holder.release_lock("wanted2", t1)
    assert await asyncio.create_task(holder.try_lock("wanted2", t3, 5)) is not None


async def test_events_from_before_subscribe_are_not_delivered(
    redis_server: RedisServer, open_backend: Any
) -> None:
    writer: RedisBackend = await open_backend(redis_server.url)
    reader: RedisBackend = await open_backend(redis_server.url)
    for round_ in range(20):
        await writer.set("barrier", b"old%d" % round_)
        async with await reader.subscribe("barrier") as sub:
            await writer.set("barrier", b"new%d" % round_)
            assert await next_event(sub) == ChangeEvent("barrier", b"new%d" % round_)


async def test_resync_marker_is_delivered_only_when_the_value_changed(
    backend: RedisBackend, raw: aioredis.Redis
) -> None:
    channel = backend.listener.resync_channel
    async with await backend.subscribe("m") as sub:
        await backend.set("m", b"\x01")
        assert await next_event(sub) == ChangeEvent("m", b"\x01")
        await raw.publish(channel, msgpack.packb([b"m", b"\x01"]))  # same: nothing
        await raw.publish(channel, msgpack.packb([b"m", False]))  # gone: a delete
        await raw.publish(channel, b"\xc1")  # garbage: skipped
        await backend.set("m", b"\x02")
        assert await next_event(sub) == ChangeEvent("m", None)
        assert await next_event(sub) == ChangeEvent("m", b"\x02")


async def test_many_subscribers_and_names(backend: RedisBackend) -> None:
    subs = [await backend.subscribe(f"fan:{i % 5}") for i in range(50)]
    for i in range(5):
        await backend.set(f"fan:{i}", bytes([i]))
    for i, sub in enumerate(subs):
        assert await next_event(sub) == ChangeEvent(f"fan:{i % 5}", bytes([i % 5]))
        await sub.aclose()
    assert backend.hub.names() == set()


async def test_unix_socket(tmp_path: Any) -> None:
    path = tmp_path / "redis.sock"
    server = RedisServer(args=["--unixsocket", str(path), "--unixsocketperm", "700"]).start()
    try:
        backend = await RedisBackend.open(_settings(f"unix://{path}?db=1"))
        async with await backend.subscribe("u") as sub:
            await backend.set("u", b"\x01")
            assert (await next_event(sub)).value == b"\x01"
        await backend.aclose()
        assert server.client(db=1).get("u") == b"\x01"
    finally:
        server.cleanup()


def _settings(url: str, **overrides: Any) -> Any:
    from conftest import fast_settings

    return fast_settings(url, **overrides)
