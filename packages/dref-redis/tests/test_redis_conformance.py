"""The backend conformance suite against a private redis-server."""

from __future__ import annotations

from typing import Any

import pytest
from redis_lost_answers import LosesAnswers
from redis_procs import RedisServer

import dref
from dref_compat.conformance import BackendConformance
from dref_redis import RedisBackend


class TestRedisConformance(LosesAnswers, BackendConformance):
    """With expired-key events turned on in our private server (`expiry_events`)."""

    backend = "redis"
    revision_history = 16

    @pytest.fixture
    def connect_options(self, redis_server: RedisServer) -> dict[str, Any]:
        return {
            "url": redis_server.url,
            "poll_interval": 0.2,
            "expiry_events": "configure",
            "history": self.revision_history,
        }


class TestRedisConformanceLockStrategy(LosesAnswers, BackendConformance):
    """`modify_strategy = "lock"`: `update` goes through upstream's lock protocol; and session
    records are read and written with `GET` then `SET` (`session_set_get = false`), the path of
    servers older than Redis 6.2."""

    backend = "redis"
    revision_history = 256  # the default `history`

    @pytest.fixture
    def connect_options(self, redis_server: RedisServer) -> dict[str, Any]:
        return {
            "url": redis_server.url,
            "poll_interval": 0.2,
            "modify_strategy": "lock",
            "expiry_events": "off",
            "session_set_get": False,
        }

    async def test_session_records_take_the_two_call_path(self, ctx: dref.DRefContext) -> None:
        assert isinstance(ctx.backend, RedisBackend)
        assert not ctx.backend._swap_records


class TestRedisConformanceKeyPrefix(LosesAnswers, BackendConformance):
    backend = "redis"
    revision_history = 256  # the default `history`

    @pytest.fixture
    def connect_options(self, redis_server: RedisServer) -> dict[str, Any]:
        return {
            "url": redis_server.url,
            "poll_interval": 0.2,
            "key_prefix": "app1:",
            "expiry_events": "configure",
        }
