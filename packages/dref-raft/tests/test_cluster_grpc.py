"""A 3-member cluster in this process over real gRPC: compare commands from followers go to
the leader over `DRefExt/Compare`, so native CAS and owner-checked locks are on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from cluster_procs import free_ports

import dref
from dref_raft.member.registry import Member, local_members
from dref_raft.settings import RaftSettings

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def grpc_cluster() -> AsyncIterator[tuple[list[Member], str]]:
    ports = free_ports(3)
    endpoints = ",".join(f"g{i}=127.0.0.1:{p}" for i, p in enumerate(ports))
    members = []
    try:
        for i, port in enumerate(ports):
            settings = RaftSettings(node_id=f"g{i}", port=port, endpoints=endpoints)
            members.append(await local_members.acquire(settings))
        for member in members:
            assert await member.node.wait_for_leader(10) is not None
        yield members, endpoints
    finally:
        for member in members:
            if member.refs > 0:
                await local_members.release(member)


async def test_followers_run_compare_commands_over_grpc(
    grpc_cluster: tuple[list[Member], str],
) -> None:
    members, endpoints = grpc_cluster
    follower = next(m for m in members if not m.node.is_leader)
    options = {
        "node_id": follower.settings.node_id,
        "port": follower.settings.port,
        "endpoints": endpoints,
    }
    async with dref.connect("raft", **options) as ctx:
        backend = ctx.backend
        assert backend.capabilities.native_cas
        assert backend.capabilities.owner_checked_locks
        assert not follower.node.is_leader
        assert await backend.set_if_not_exist("k", b"a")
        assert not await backend.set_if_not_exist("k", b"b")
        assert await backend.compare_and_set("k", b"a", b"c")
        assert not await backend.compare_and_set("k", b"a", b"d")
        assert await backend.compare_and_swap("k", b"x", b"y") == (False, b"c")
        grant = await backend.try_lock("lock", b"t1", 5.0)
        assert grant is not None
        assert await backend.refresh_lock("lock", b"t1", 5.0)
        assert not await backend.refresh_lock("lock", b"t2", 5.0)
        assert not await backend.release_lock("lock", b"t2")
        assert await backend.release_lock("lock", b"t1")
        assert await backend.get("lock") is None


async def test_a_member_stops_serving_before_its_node_closes(
    grpc_cluster: tuple[list[Member], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    members, _ = grpc_cluster
    member = members[0]
    server, node = member.server, member.node
    assert server is not None
    order: list[str] = []

    def record(what: str, close: Any) -> Any:
        async def wrapped(*args: Any, **kwargs: Any) -> None:
            order.append(what)
            await close(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(server, "aclose", record("server", server.aclose))
    monkeypatch.setattr(node, "aclose", record("node", node.aclose))
    await local_members.release(member)
    assert order == ["server", "node"]
