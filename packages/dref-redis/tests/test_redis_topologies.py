"""High availability: Sentinel (a primary, a replica, three sentinels) and a 3-master Cluster."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from redis.crc import key_slot
from redis_lost_answers import LosesAnswers
from redis_procs import RedisCluster, SentinelGroup

import dref
from dref.changes import ChangeEvent
from dref.errors import BackendUnavailableError
from dref_compat.conformance import BackendConformance
from dref_redis import RedisBackend

DEADLINE = 20.0
FAST = {
    "connect_timeout": 1.0,
    "op_timeout": 1.0,
    "ping_interval": 0.5,
    "reconnect_max_delay": 0.2,
    "poll_interval": 0.2,
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sentinel_group() -> Iterator[SentinelGroup]:
    group = SentinelGroup().start()
    yield group
    group.cleanup()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    nodes = RedisCluster().start()
    yield nodes
    nodes.cleanup()


class TestSentinelConformance(LosesAnswers, BackendConformance):
    backend = "redis"
    revision_history = 256  # the default `history`

    @pytest.fixture
    def connect_options(self, sentinel_group: SentinelGroup) -> dict[str, Any]:
        return sentinel_options(sentinel_group)


class TestClusterConformance(LosesAnswers, BackendConformance):
    backend = "redis"
    revision_history = 256  # the default `history`

    @pytest.fixture
    def connect_options(self, cluster: RedisCluster) -> dict[str, Any]:
        return {"url": cluster.url, "cluster": True, **FAST}


async def next_event(sub: Any) -> Any:
    return await asyncio.wait_for(sub.__anext__(), DEADLINE)


async def eventually_ok(op: Any, what: str) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while True:
        try:
            return await op()
        except BackendUnavailableError:
            if loop.time() > end:
                raise AssertionError(f"{what} not reached within {DEADLINE} s") from None
            await asyncio.sleep(0.05)


# -- Sentinel -------------------------------------------------------------------------------------
def sentinel_options(group: SentinelGroup) -> dict[str, Any]:
    return {
        "sentinel_master": group.master_name,
        "sentinel_addresses": ",".join(group.addresses),
        **FAST,
    }


async def test_sentinel_values_locks_and_changes(sentinel_group: SentinelGroup) -> None:
    name = f"sentinel:{uuid.uuid4().hex}"
    async with dref.connect("redis", **sentinel_options(sentinel_group)) as ctx:
        assert not ctx.backend.capabilities.linearizable
        ref = await ctx.make(1, name)
        async with ref.changes() as stream:
            await ref.update(lambda n: n + 1)
            assert await next_event(stream) == 2
        async with ctx.lock(f"{name}:lock", ttl=2) as guard:
            assert guard.fence is not None
        primary = sentinel_group.primary.client()
        assert primary.get(name) == b"\x02"


# -- Cluster --------------------------------------------------------------------------------------
async def test_cluster_values_locks_and_changes_across_shards(cluster: RedisCluster) -> None:
    async with (
        dref.connect("redis", url=cluster.url, cluster=True, **FAST) as ctx,
        dref.connect("redis", url=cluster.nodes[2].url, cluster=True, **FAST) as other,
    ):
        assert isinstance(ctx.backend, RedisBackend)
        names = [f"cluster:{uuid.uuid4().hex}:{i}" for i in range(12)]
        slots = {key_slot(n.encode()) * 3 // 16384 for n in names}
        assert len(slots) > 1, "the names should land on several shards"
        refs = [await ctx.make(0, n) for n in names]
        streams = [other.ref(n, type=int).changes() for n in names]
        for stream in streams:
            await stream.__aenter__()
        try:
            await asyncio.gather(*(r.update(lambda n: n + 1) for r in refs))
            for stream in streams:
                assert await next_event(stream) == 1
        finally:
            for stream in streams:
                await stream.__aexit__(None, None, None)
        for n in names[:3]:
            async with ctx.lock(n + ":lock", ttl=2) as guard:
                assert guard.fence is not None
        # a lock name with braces still has its fence in its own slot
        async with ctx.lock("odd}{name", ttl=2) as guard:
            assert guard.fence is not None


async def test_cluster_notifications_from_any_shard_reach_a_raw_subscriber(
    cluster: RedisCluster,
) -> None:
    backend = await RedisBackend.open(_settings(cluster.url, cluster=True))
    try:
        subs = {}
        names = [f"shard:{i}" for i in range(9)]
        for n in names:
            subs[n] = await backend.subscribe(n)
        for n in names:
            await backend.set(n, n.encode())
        for n in names:
            assert await next_event(subs[n]) == ChangeEvent(n, n.encode(), 1)
    finally:
        await backend.aclose()


def _settings(url: str, **overrides: Any) -> Any:
    from conftest import fast_settings

    return fast_settings(url, **overrides)


# -- last: this one kills the primary ----------------------------------------------------------
async def test_sentinel_failover_after_the_primary_dies(sentinel_group: SentinelGroup) -> None:
    """The primary is killed; sentinels promote the replica; writes and streams resume there."""
    name = f"sentinel:{uuid.uuid4().hex}"
    async with dref.connect("redis", **sentinel_options(sentinel_group)) as ctx:
        ref = await ctx.make(0, name)
        old_port = sentinel_group.master_port()
        async with ref.changes() as stream:
            await ref.set(1)
            assert await next_event(stream) == 1
            await _replicated(sentinel_group, name)
            sentinel_group.primary.stop()
            loop = asyncio.get_running_loop()
            end = loop.time() + DEADLINE
            while sentinel_group.master_port() == old_port:
                assert loop.time() < end, "failover did not happen"
                await asyncio.sleep(0.05)

            async def write() -> None:
                await ref.set(2)

            await eventually_ok(write, "a write to the new primary")
            assert await next_event(stream) == 2
            assert await ref.get() == 2
        assert ctx.backend.listener.reconnects >= 1  # type: ignore[attr-defined]


async def _replicated(group: SentinelGroup, name: str) -> None:
    """Wait until the replica has the primary's value of `name` (replication is asynchronous)."""
    replica = group.replica.client()
    primary = group.primary.client()
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while replica.get(name) != primary.get(name):
        assert loop.time() < end, "replica did not catch up"
        await asyncio.sleep(0.01)
