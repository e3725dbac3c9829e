"""Expired-key events (`expiry_events`): detected, configured only when asked, never guessed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from redis_procs import RedisServer

from dref.errors import ConfigurationError
from dref_redis import RedisBackend

DEADLINE = 10.0


@pytest.fixture
def servers() -> Iterator[Any]:
    started: list[RedisServer] = []

    def start(*args: str) -> RedisServer:
        server = RedisServer(args=list(args)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.cleanup()


def flags(server: RedisServer) -> str:
    reply = server.client().config_get("notify-keyspace-events")
    return str(reply["notify-keyspace-events"])


async def test_detect_leaves_a_server_without_the_events_as_it_is(
    servers: Any, open_backend: Any
) -> None:
    server = servers()
    backend: RedisBackend = await open_backend(server.url)  # expiry_events="detect"
    assert not backend.capabilities.expiry_events
    assert flags(server) == ""


async def test_detect_listens_where_the_server_publishes_expired_keys(
    servers: Any, open_backend: Any
) -> None:
    server = servers("--notify-keyspace-events", "Ex")
    backend: RedisBackend = await open_backend(server.url, key_prefix="app:")
    assert backend.capabilities.expiry_events
    async with await backend.subscribe("k") as events:
        await backend.set("k", b"\x01", ttl=0.05)
        assert (await asyncio.wait_for(anext(events), DEADLINE)).value == b"\x01"
        assert (await asyncio.wait_for(anext(events), DEADLINE)).deleted
    off: RedisBackend = await open_backend(server.url, expiry_events="off")
    assert not off.capabilities.expiry_events


async def test_configure_adds_only_what_is_missing(servers: Any, open_backend: Any) -> None:
    server = servers("--notify-keyspace-events", "Kg")
    backend: RedisBackend = await open_backend(server.url, expiry_events="configure")
    assert backend.capabilities.expiry_events
    assert set(flags(server)) >= set("KgEx")  # the operator's flags are kept


async def test_a_server_that_refuses_config(servers: Any, open_backend: Any) -> None:
    server = servers("--rename-command", "CONFIG", "")
    backend: RedisBackend = await open_backend(server.url)
    assert not backend.capabilities.expiry_events  # detect: nothing claimed, no error
    with pytest.raises(ConfigurationError, match="notify-keyspace-events"):
        await open_backend(server.url, expiry_events="configure")
