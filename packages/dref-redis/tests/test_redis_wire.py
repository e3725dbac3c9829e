"""Byte-for-byte compatibility with upstream's Redis layout (docs/protocol.md#redis,
compat/vectors.json)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis_procs import RedisServer

import dref
from dref import lock_value
from dref.changes import ChangeEvent
from dref_compat.vectors import load_vectors
from dref_redis import RedisBackend
from dref_redis.keys import fence_key, lives_key, queue_key

VECTORS = load_vectors("vectors")
DEADLINE = 10.0
# ChangePayload{name: "k", value: 80 ff}: Scala packs signed bytes (d0 80 = -128, ff = -1),
# Rust unsigned ones (cc 80, cc ff).
SCALA_HIGH_BYTES = "83a46e616d65916ba576616c756592d080ffa664656c657465c2"
RUST_HIGH_BYTES = "83a46e616d65916ba576616c756592cc80ccffa664656c657465c2"


@dataclass
class Wrapper:
    """Upstream's cross-language struct `{value: String}`."""

    value: str


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=redis_server.port)
    yield client
    await client.aclose()


class Published:
    """Raw messages on `dref-change`, as an upstream node would receive them."""

    def __init__(self, pubsub: Any) -> None:
        self._pubsub = pubsub

    async def next(self) -> bytes:
        async with asyncio.timeout(DEADLINE):
            while True:
                msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if msg is not None:
                    data: bytes = msg["data"]
                    return data


@pytest.fixture
async def published(raw: aioredis.Redis) -> AsyncIterator[Published]:
    pubsub = raw.pubsub()
    await pubsub.subscribe("dref-change")
    async with asyncio.timeout(DEADLINE):
        while (await pubsub.get_message(timeout=1)) is None:
            pass
    yield Published(pubsub)
    await pubsub.aclose()


async def next_event(sub: Any) -> ChangeEvent:
    event: ChangeEvent = await asyncio.wait_for(sub.__anext__(), DEADLINE)
    return event


# -- what we write -----------------------------------------------------------------------------
async def test_set_and_delete_publish_the_golden_payloads(
    backend: RedisBackend, raw: aioredis.Redis, published: Published
) -> None:
    await raw.delete("my-key")
    await backend.set("my-key", bytes.fromhex(VECTORS["change_payload_set"]["value_hex"]))
    assert (await published.next()).hex() == VECTORS["change_payload_set"]["payload_hex"]
    assert await raw.get("my-key") == b"\x01\x02\x03"
    await backend.delete("my-key")
    assert (await published.next()).hex() == VECTORS["change_payload_delete"]["payload_hex"]
    assert await raw.exists("my-key") == 0


async def test_every_write_kind_publishes_upstreams_payload(
    backend: RedisBackend, raw: aioredis.Redis, published: Published
) -> None:
    name = "my-key"
    await raw.delete(name)
    set_hex = VECTORS["change_payload_set"]["payload_hex"]
    assert await backend.set_if_not_exist(name, b"\x01\x02\x03")
    assert (await published.next()).hex() == set_hex
    assert not await backend.set_if_not_exist(name, b"\x09")  # nothing written, nothing published
    await backend.set(name, b"\x00")
    await published.next()
    assert await backend.compare_and_set(name, b"\x00", b"\x01\x02\x03")
    assert (await published.next()).hex() == set_hex
    await backend.delete(name)
    assert (await published.next()).hex() == VECTORS["change_payload_delete"]["payload_hex"]


async def test_high_bytes_follow_the_configured_flavor(
    redis_server: RedisServer, open_backend: Callable[..., Any], published: Published
) -> None:
    scala = await open_backend(redis_server.url)
    rust = await open_backend(redis_server.url, payload_flavor="rust")
    await scala.set("k", b"\x80\xff")
    assert (await published.next()).hex() == SCALA_HIGH_BYTES
    await rust.set("k", b"\x80\xff")
    assert (await published.next()).hex() == RUST_HIGH_BYTES


async def test_struct_written_by_dref_has_upstreams_bytes(
    redis_server: RedisServer, raw: aioredis.Redis
) -> None:
    key = f"{VECTORS['redis_crosslang_key']}:{uuid.uuid4().hex}"
    async with dref.connect("redis", url=redis_server.url) as ctx:
        ref = await ctx.make(Wrapper("hello"), key)
        assert await raw.get(key) == bytes.fromhex(VECTORS["msgpack_wrapper_hello"]["hex"])
        await ref.set(Wrapper("python-updated"))
    assert await raw.get(key) == b"\x81\xa5value\xaepython-updated"


async def test_struct_written_by_upstream_reads_through_dref(
    redis_server: RedisServer, raw: aioredis.Redis
) -> None:
    """As upstream's cross-language test: a Scala writer, then a reader in another language."""
    key = VECTORS["redis_crosslang_key"]
    await raw.set(key, bytes.fromhex(VECTORS["msgpack_wrapper_hello"]["hex"]))
    try:
        async with dref.connect("redis", url=redis_server.url) as ctx:
            ref = await ctx.make(Wrapper("ignored: the element exists"), key)
            assert await ref.get() == Wrapper("hello")
            await raw.set(key, b"\x81\xa5value\xadscala-updated")  # Wrapper("scala-updated")
            assert await ref.get() == Wrapper("scala-updated")
    finally:
        await raw.delete(key)


async def test_lock_key_holds_the_8_byte_token_and_fence_is_a_companion_key(
    redis_server: RedisServer, raw: aioredis.Redis
) -> None:
    name = f"dref:compat:crosslang-lock:{uuid.uuid4().hex}"
    async with dref.connect("redis", url=redis_server.url) as ctx:
        async with ctx.lock(name, ttl=5) as guard:
            stored = await raw.get(name)
            assert stored == guard.token
            assert lock_value.from_bytes(stored) == guard.token_int
            assert 0 < await raw.pttl(name) <= 5000
            fence = await raw.get(b"{" + name.encode() + b"}:dref-fence")
            assert fence == str(guard.fence).encode()
        assert await raw.exists(name) == 0


async def test_lock_taken_by_upstream_blocks_us_until_released(
    backend: RedisBackend, raw: aioredis.Redis
) -> None:
    """Upstream's acquire is SET NX EX with the token; its release a plain DEL + delete payload."""
    name = f"dref:compat:crosslang-lock:{uuid.uuid4().hex}"
    upstream_token = lock_value.to_bytes(0x1234567890ABCDEF)
    assert await raw.set(name, upstream_token, nx=True, ex=30)
    assert await backend.try_lock(name, lock_value.to_bytes(1), 5) is None
    await raw.delete(name)
    assert await backend.try_lock(name, lock_value.to_bytes(1), 5) is not None


# -- what upstream nodes publish ----------------------------------------------------------------
async def test_upstream_payloads_are_decoded(backend: RedisBackend, raw: aioredis.Redis) -> None:
    async with await backend.subscribe("my-key") as sub:
        for vector in ("change_payload_set", "change_payload_delete"):
            await raw.publish("dref-change", bytes.fromhex(VECTORS[vector]["payload_hex"]))
        assert await next_event(sub) == ChangeEvent("my-key", b"\x01\x02\x03")
        assert await next_event(sub) == ChangeEvent("my-key", None)


@pytest.mark.parametrize(
    "payload_hex",
    [SCALA_HIGH_BYTES, RUST_HIGH_BYTES],
    ids=["scala-signed", "rust-unsigned"],
)
async def test_both_high_byte_forms_are_decoded(
    backend: RedisBackend, raw: aioredis.Redis, payload_hex: str
) -> None:
    async with await backend.subscribe("k") as sub:
        await raw.publish("dref-change", bytes.fromhex(payload_hex))
        assert await next_event(sub) == ChangeEvent("k", b"\x80\xff")


async def test_garbage_payload_is_logged_once_and_skipped(
    backend: RedisBackend, raw: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="dref_redis")
    async with await backend.subscribe("g") as sub:
        for _ in range(3):
            await raw.publish("dref-change", b"\xc1garbage")
        await raw.publish("dref-change", b"\x81\xa4name\x90")  # a map without value/delete
        await backend.set("g", b"\x07")
        assert await next_event(sub) == ChangeEvent("g", b"\x07", 1)
    assert backend.listener.bad_payloads == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per distinct reason
    assert all("cannot be decoded" in r.getMessage() for r in warnings)
    assert "c167617262616765" in warnings[0].getMessage()


# -- key prefix ---------------------------------------------------------------------------------
async def test_key_prefix_is_part_of_key_and_payload_name(
    redis_server: RedisServer,
    open_backend: Callable[..., Any],
    raw: aioredis.Redis,
    published: Published,
) -> None:
    prefixed = await open_backend(redis_server.url, key_prefix="tenant-a:")
    async with await prefixed.subscribe("n") as sub:
        await prefixed.set("n", b"\x01")
        assert await raw.get("tenant-a:n") == b"\x01"
        payload = await published.next()
        assert payload.startswith(b"\x83\xa4name\x9a" + b"tenant-a:n")
        assert await next_event(sub) == ChangeEvent("n", b"\x01", 1)
        # Changes of keys outside the prefix do not reach it.
        await raw.publish("dref-change", payload.replace(b"tenant-a", b"tenant-b"))
        await prefixed.set("n", b"\x02")
        assert await next_event(sub) == ChangeEvent("n", b"\x02", 2)


def test_fence_and_queue_keys_share_the_lock_keys_cluster_slot() -> None:
    from redis.crc import key_slot

    for key in [b"lock:x", b"a}b", b"a{tag}b", b"}{", b"a{}b}", b"{a{b", b"", "é".encode()]:
        # The fair update line's turn lists: `<queue key>:turn:<ticket>`.
        turn = queue_key(key) + b":turn:0123456789abcdef"
        companions = [fence_key(key), queue_key(key), lives_key(key), turn]
        assert len({key, *companions}) == 5
        assert {key_slot(k) for k in companions} == {key_slot(key)}, key


# -- revisions ----------------------------------------------------------------------------------
async def test_history_lives_beside_upstream_keys_and_can_be_switched_off(
    redis_server: RedisServer, open_backend: Callable[..., Any], raw: aioredis.Redis
) -> None:
    """With revisions on, the element key holds exactly upstream's bytes and the history is a
    separate bounded stream; `history=0` writes nothing but upstream's key."""
    on = await open_backend(redis_server.url, history=3)
    for value in (b"\x01", b"\x02", b"\x03", b"\x04"):
        await on.set("h", value)
    assert await raw.get("h") == b"\x04"
    assert await raw.type("{h}:dref-rev") == b"stream"
    ids = [entry_id for entry_id, _ in await raw.xrange("{h}:dref-rev")]
    assert ids == [b"0-2", b"0-3", b"0-4"]  # the last 3 of 4 changes
    assert [n async for n in on.names("h")] == ["h"]  # the stream is not an element
    off = await open_backend(redis_server.url, history=0)
    assert not off.capabilities.revisions
    await off.set("o", b"\x01")
    assert await raw.exists("{o}:dref-rev") == 0
