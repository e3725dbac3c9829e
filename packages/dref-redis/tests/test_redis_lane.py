"""The command lane: connections kept between commands must never answer the wrong command."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis_procs import RedisServer

from dref import lock_value
from dref.errors import BackendError, BackendUnavailableError
from dref_redis import RedisBackend, scripts
from dref_redis.lane import ScriptCommand, pack

DEADLINE = 10.0


def test_packed_commands_are_the_bytes_redis_py_sends() -> None:
    conn = Connection()
    args = [b"k", b"", b"\x00\r\n\xff" * 3000]
    assert pack(b"SET", *args) == b"".join(conn.pack_command("SET", *args))
    script = ScriptCommand(scripts.TRY_LOCK, "ab" * 20)
    keys, argv = [b"k", b"k:f", b"k:w"], [b"tok", b"100", b"payload", b"dref-change", b"2"]
    assert script.call(keys, argv) == b"".join(
        conn.pack_command("EVALSHA", "ab" * 20, 3, *keys, *argv)
    )
    assert script.load == b"".join(conn.pack_command("SCRIPT", "LOAD", scripts.TRY_LOCK))


async def test_the_reply_to_a_cancelled_command_never_answers_the_next(
    own_server: RedisServer, open_backend: Callable[..., Any]
) -> None:
    backend: RedisBackend = await open_backend(own_server.url, op_timeout=0.3)
    await backend.set("a", b"\x0a")
    await backend.set("b", b"\x0b")
    for op in (
        lambda: backend.get("a"),
        lambda: backend.try_lock("l", lock_value.to_bytes(7), 30.0),
    ):
        own_server.pause()  # the command is sent; its reply comes only after the resume
        try:
            with pytest.raises(BackendUnavailableError):
                await op()
        finally:
            own_server.resume()
        # Sent at once after the resume, behind the late reply if it used the same connection.
        assert await backend.get("b") == b"\x0b"
        assert await backend.get("a") == b"\x0a"


async def test_idle_connections_work_again_after_a_restart(
    own_server: RedisServer, open_backend: Callable[..., Any]
) -> None:
    backend: RedisBackend = await open_backend(own_server.url)
    await asyncio.gather(*(backend.set(f"k{i}", b"\x01") for i in range(4)))  # 4 kept idle
    # Empty again and scripts flushed; the loop runs on meanwhile, as it would in an application,
    # and sees the idle sockets closed by the server.
    await asyncio.to_thread(own_server.restart)
    raw = aioredis.Redis(host="127.0.0.1", port=own_server.port)
    try:
        # Every kept connection is found closed and reconnected: no operation fails.
        assert await asyncio.gather(*(backend.get(f"k{i}") for i in range(4))) == [None] * 4
        await asyncio.gather(*(backend.set(f"k{i}", b"\x02") for i in range(4)))
        token = lock_value.to_bytes(3)
        assert await backend.try_lock("l", token, 10.0) is not None
        assert await backend.release_lock("l", token)
        assert await raw.get("k3") == b"\x02"
    finally:
        await raw.aclose()


async def test_an_error_reply_keeps_the_connection(
    redis_server: RedisServer, backend: RedisBackend
) -> None:
    raw = aioredis.Redis(host="127.0.0.1", port=redis_server.port)
    name = f"foreign:{uuid.uuid4().hex}"
    await raw.hset(name, "field", "value")
    try:
        await backend.set(f"{name}:ok", b"\x01")
        before = await _connections_received(raw)
        for _ in range(20):
            with pytest.raises(BackendError, match="not a dref element"):
                await backend.get(name)
            assert await backend.get(f"{name}:ok") == b"\x01"
        assert await _connections_received(raw) == before  # no reconnect per error
    finally:
        await raw.aclose()


async def test_callers_waiting_for_the_pool_get_the_connections_the_lane_keeps(
    redis_server: RedisServer, open_backend: Callable[..., Any]
) -> None:
    # Two connections: the listener's pub/sub takes one, the lane keeps at most one idle.
    backend: RedisBackend = await open_backend(redis_server.url, max_connections=2)
    name = f"lane:{uuid.uuid4().hex}"
    await backend.set(name, b"\x01")
    sub = await backend.subscribe(name)
    try:
        # 16 callers at once share one connection; without the hand-over they would wait for
        # the pool until the timeout while the lane held the connection idle.
        for _ in range(5):
            values = await asyncio.wait_for(
                asyncio.gather(*(backend.get(name) for _ in range(16))), DEADLINE
            )
            assert values == [b"\x01"] * 16
        await backend.set(name, b"\x02")
        event = await asyncio.wait_for(sub.__anext__(), DEADLINE)
        assert event.value == b"\x02"
    finally:
        await sub.aclose()


async def _connections_received(raw: aioredis.Redis) -> int:
    info = await raw.info("stats")
    return int(info["total_connections_received"])
