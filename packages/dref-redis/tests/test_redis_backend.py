"""Backend behaviour beyond the conformance suite: TTL precision, fences, subscription barrier."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis
from redis_procs import RedisServer

import dref
from dref import lock_value
from dref.changes import ChangeEvent
from dref_compat.conformance import eventually
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
    assert await backend.set_if_not_exist("ttl:b", b"\x01", ttl=1.5)
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


async def test_waiters_get_the_lock_first_come_first_served(
    redis_server: RedisServer, open_backend: Any, raw: aioredis.Redis
) -> None:
    a: RedisBackend = await open_backend(redis_server.url, poll_interval=0.5)
    b: RedisBackend = await open_backend(redis_server.url, poll_interval=0.5)
    t1, t2, t3 = (lock_value.to_bytes(i) for i in (1, 2, 3))
    queue, lives = b"{fifo}:dref-queue", b"{fifo}:dref-lives"
    assert await a.try_lock("fifo", t1, 5) is not None
    assert await raw.exists(queue, lives) == 0  # nobody waits: no line
    assert await b.try_lock("fifo", t2, 5) is None
    assert await a.try_lock("fifo", t3, 5) is None
    assert await b.try_lock("fifo", t2, 5) is None  # trying again keeps the place
    assert await raw.zrange(queue, 0, -1) == [t2, t3]
    assert 0 < await raw.pttl(lives) <= 1500  # three polls without an attempt
    assert await a.release_lock("fifo", t1)
    # The lock is free, but only for the first in line; the releaser queues behind.
    assert await a.try_lock("fifo", t1, 5) is None
    assert await a.try_lock("fifo", t3, 5) is None
    assert await raw.exists("fifo") == 0
    assert await b.try_lock("fifo", t2, 5) is not None
    assert await raw.zrange(queue, 0, -1) == [t3, t1]
    assert await b.release_lock("fifo", t2)
    assert await b.try_lock("fifo", t1, 5) is None
    assert await a.try_lock("fifo", t3, 5) is not None
    assert await a.release_lock("fifo", t3)
    assert await a.try_lock("fifo", t1, 5) is not None
    assert await raw.exists(queue, lives) == 0  # the line is gone with its last waiter
    # Upstream nodes know nothing of the line: their SET NX takes a free lock regardless.
    assert await b.try_lock("fifo", t2, 5) is None
    assert await a.release_lock("fifo", t1)
    assert await raw.set("fifo", lock_value.to_bytes(9), nx=True, px=5000)


async def test_a_waiter_that_stops_trying_loses_its_place(
    redis_server: RedisServer, open_backend: Any, raw: aioredis.Redis
) -> None:
    backend: RedisBackend = await open_backend(redis_server.url, poll_interval=0.1)
    t1, t2, t3 = (lock_value.to_bytes(i) for i in (1, 2, 3))
    assert await backend.try_lock("gone", t1, 5) is not None
    assert await backend.try_lock("gone", t2, 5) is None  # then crashes, never to try again
    assert await backend.release_lock("gone", t1)
    assert await backend.try_lock("gone", t3, 5) is None  # t2 is first and still alive
    await raw.hset(b"{gone}:dref-lives", t2, 0)  # its life runs out
    assert await backend.try_lock("gone", t3, 5) is not None
    assert await raw.zrange(b"{gone}:dref-queue", 0, -1) == []
    # And by the clock: a waiter lives three polls (0.3 s here) after its last attempt.
    assert await backend.try_lock("gone2", t1, 5) is not None
    assert await backend.try_lock("gone2", t2, 5) is None
    assert await backend.release_lock("gone2", t1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    while await backend.try_lock("gone2", t3, 5) is None:
        assert loop.time() - start < DEADLINE
        await asyncio.sleep(0.02)
    assert loop.time() - start > 0.25


async def test_release_of_a_token_not_holding_the_lock_takes_it_out_of_line(
    redis_server: RedisServer, open_backend: Any, raw: aioredis.Redis
) -> None:
    backend: RedisBackend = await open_backend(redis_server.url)
    t1, t2, t3 = (lock_value.to_bytes(i) for i in (1, 2, 3))
    assert await backend.try_lock("leave", t1, 5) is not None
    assert await backend.try_lock("leave", t2, 5) is None
    assert await backend.try_lock("leave", t3, 5) is None
    assert not await backend.release_lock("leave", t2)  # gives up waiting
    assert await raw.zrange(b"{leave}:dref-queue", 0, -1) == [t3]
    assert await raw.get("leave") == t1  # the holder keeps its lock
    assert await backend.release_lock("leave", t1)
    assert await backend.try_lock("leave", t3, 5) is not None


async def test_events_from_before_subscribe_are_not_delivered(
    redis_server: RedisServer, open_backend: Any
) -> None:
    writer: RedisBackend = await open_backend(redis_server.url)
    reader: RedisBackend = await open_backend(redis_server.url)
    for round_ in range(20):
        await writer.set("barrier", b"old%d" % round_)
        async with await reader.subscribe("barrier") as sub:
            await writer.set("barrier", b"new%d" % round_)
            assert await next_event(sub) == ChangeEvent(
                "barrier", b"new%d" % round_, 2 * round_ + 2
            )


async def test_resync_marker_is_delivered_only_when_the_value_changed(
    backend: RedisBackend, raw: aioredis.Redis
) -> None:
    channel = backend.listener.resync_channel
    async with await backend.subscribe("m") as sub:
        await backend.set("m", b"\x01")
        assert await next_event(sub) == ChangeEvent("m", b"\x01", 1)
        await raw.publish(channel, msgpack.packb([b"m", b"\x01"]))  # same: nothing
        await raw.publish(channel, msgpack.packb([b"m", False]))  # gone: a delete
        await raw.publish(channel, b"\xc1")  # garbage: skipped
        await backend.set("m", b"\x02")
        assert await next_event(sub) == ChangeEvent("m", None)  # a marker: no revision
        assert await next_event(sub) == ChangeEvent("m", b"\x02", 2)


async def test_many_subscribers_and_names(backend: RedisBackend) -> None:
    subs = [await backend.subscribe(f"fan:{i % 5}") for i in range(50)]
    for i in range(5):
        await backend.set(f"fan:{i}", bytes([i]))
    for i, sub in enumerate(subs):
        assert await next_event(sub) == ChangeEvent(f"fan:{i % 5}", bytes([i % 5]), 1)
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


async def test_wait_turn_falls_back_after_a_poll_and_keeps_the_place(
    backend: RedisBackend,
) -> None:
    """The turn's BLPOP waits at most a poll interval (0.2 s here) and returns None; the waiter
    then tries again without losing its place; a head that stops trying is dropped after its
    waiter life, and the next one swaps."""
    name = "fair:fallback"
    await backend.set(name, b"\x00")
    head, behind, third = b"t-head", b"t-behind", b"t-third"
    assert (await backend.fair_compare_and_swap(name, b"-", b"\x01", head))[0] is False
    assert await backend.fair_compare_and_swap(name, b"-", b"\x01", behind) == (False, b"\x00", 1)
    assert await asyncio.wait_for(backend.wait_turn(name, behind), DEADLINE) is None
    assert await backend.fair_compare_and_swap(name, b"-", b"\x01", third) == (False, b"\x00", 2)
    # A right guess, but not the head: `behind` keeps its place (1 ahead, not at the back).
    assert await backend.fair_compare_and_swap(name, b"\x00", b"\x01", behind) == (
        False,
        b"\x00",
        1,
    )

    async def behind_swaps() -> bool:
        swapped, _, _ = await backend.fair_compare_and_swap(name, b"\x00", b"\x01", behind)
        return swapped

    await eventually(behind_swaps, what="the dead head dropped from the line")
    assert await backend.get(name) == b"\x01"
    await backend.leave_line(name, third)


async def test_update_behind_a_head_that_never_returns_completes(
    redis_server: RedisServer,
) -> None:
    """Core's runner waits for its turn with the fallback (None) until the dead head's waiter
    life passes, keeping its place, then swaps."""
    async with dref.connect("redis", url=redis_server.url, poll_interval=0.2) as ctx:
        ref = await ctx.make(0, "fair:dead-head")
        backend = ctx.backend
        swapped, _, _ = await backend.fair_compare_and_swap(ref.name, b"-", b"\x01", b"t-dead")
        assert not swapped
        turns: list[bytes | None] = []
        wait_turn = backend.wait_turn

        async def recorded(name: str, ticket: bytes) -> bytes | None:
            turns.append(await wait_turn(name, ticket))
            return turns[-1]

        backend.wait_turn = recorded  # type: ignore[method-assign]
        assert await asyncio.wait_for(ref.update_and_get(lambda n: n + 1), DEADLINE) == 1
        assert None in turns  # the fallback path was taken at least once
