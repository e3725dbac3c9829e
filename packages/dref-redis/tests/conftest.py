"""Fixtures: private redis-server processes and backends opened on them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from redis_procs import RedisServer, redis_server_binary

from dref_redis import RedisBackend, RedisSettings


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if redis_server_binary() is not None:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError("redis-server is not on PATH; run tools/ensure-redis-server")
    skip = pytest.mark.skip(reason="redis-server is not on PATH")
    for item in items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One server shared by the tests that do not hurt it (keys are unique per test)."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A server of this test alone, to kill, pause or restart."""
    server = RedisServer().start()
    yield server
    server.cleanup()


def fast_settings(url: str, **overrides: Any) -> RedisSettings:
    """Settings with short timeouts so that fault tests finish quickly."""
    options: dict[str, Any] = {
        "url": url,
        "connect_timeout": 1.0,
        "op_timeout": 1.0,
        "ping_interval": 0.5,
        "reconnect_max_delay": 0.2,
        "poll_interval": 0.2,
    }
    options.update(overrides)
    return RedisSettings(**options)


@pytest.fixture
async def open_backend() -> AsyncIterator[Callable[..., Any]]:
    """`await open_backend(url, **settings)`; every backend opened is closed after the test."""
    opened: list[RedisBackend] = []

    async def open_one(url: str, **overrides: Any) -> RedisBackend:
        backend = await RedisBackend.open(fast_settings(url, **overrides))
        opened.append(backend)
        return backend

    yield open_one
    for backend in opened:
        await backend.aclose()


@pytest.fixture
async def backend(redis_server: RedisServer, open_backend: Callable[..., Any]) -> RedisBackend:
    result: RedisBackend = await open_backend(redis_server.url)
    return result
