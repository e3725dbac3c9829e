"""`DRefStream` against real member processes over gRPC (docs/raft-wire.md#drefstream): client
mode multiplexes every operation over one stream to the leader; a follower forwards in batches;
a leader killed mid-flight; members that do not serve the stream get unary calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_procs import ProcCluster, follower_member, wait_until

import dref
from dref.errors import DRefError
from dref_raft.client.backend import RaftClientBackend
from dref_raft.transport.grpc_client import LeaderClient
from dref_raft.transport.grpc_stream import StreamSession

pytestmark = pytest.mark.timeout(120)


def client_options(cluster: ProcCluster) -> dict[str, Any]:
    return {"mode": "client", "endpoints": cluster.endpoints}


def leader_session(client: RaftClientBackend) -> StreamSession:
    assert client._leader is not None
    leader = client._leaders[client._leader]
    assert isinstance(leader, LeaderClient)
    assert leader.session is not None
    return leader.session


@pytest.fixture(scope="module")
def cluster() -> Iterator[ProcCluster]:
    with ProcCluster(3).running() as procs:
        yield procs


async def test_every_client_operation_goes_over_one_stream(cluster: ProcCluster) -> None:
    async with dref.connect("raft", **client_options(cluster)) as ctx:
        client = ctx.backend
        assert isinstance(client, RaftClientBackend)
        await client.set("s:warm", b"0")
        session = leader_session(client)
        before = session.calls_sent

        async def mixed(i: int) -> tuple[Any, ...]:
            name = f"s:{i}"
            await client.set(name, b"a%d" % i)
            swapped = await client.compare_and_set(name, b"a%d" % i, b"b%d" % i)
            created = await client.set_if_not_exist(f"s:new:{i}", b"n", ttl=30)
            alive = await client.expire(f"s:new:{i}", 30)
            await client.delete(f"s:new:{i}")
            return swapped, created, alive, await client.get(name), await client.get(f"s:new:{i}")

        results = await asyncio.gather(*(mixed(i) for i in range(150)))
        assert results == [(True, True, True, b"b%d" % i, None) for i in range(150)]
        names = [name async for name in client.names("s:1")]
        assert names == sorted(f"s:{i}" for i in range(150) if f"s:{i}".startswith("s:1"))
        # 7 calls per task (with exactly-once sessions each write is one DRefExt/Compare call),
        # in far fewer messages
        assert session.calls_sent - before >= 150 * 7
        assert session.streams_opened == 1
        assert session.batches_sent < (session.calls_sent - before) / 4


async def test_a_cancelled_operation_leaves_the_others_fine(cluster: ProcCluster) -> None:
    async with dref.connect("raft", **client_options(cluster)) as ctx:
        client = ctx.backend
        assert isinstance(client, RaftClientBackend)
        await client.set("c:warm", b"0")
        session = leader_session(client)
        before = session.calls_sent
        tasks = [asyncio.create_task(client.set(f"c:{i}", b"%d" % i)) for i in range(100)]
        await wait_until(lambda: session.calls_sent - before == 100, 10, "100 calls sent")
        for task in tasks[::3]:  # cancelled in flight
            task.cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        kept = [i for i, r in enumerate(done) if not isinstance(r, BaseException)]
        assert all(done[i] is None for i in kept)
        assert len(kept) >= 66
        values = await asyncio.gather(*(client.get(f"c:{i}") for i in kept))
        assert values == [b"%d" % i for i in kept]
        assert session.streams_opened == 1


async def test_a_follower_forwards_in_batches() -> None:
    with ProcCluster(2, extra=1).running() as procs:
        async with (
            follower_member(procs) as member,
            dref.connect("raft", **procs.member_options(0)) as ctx,
        ):
            await ctx.backend.set("f:warm", b"0")
            leader = member.node.leader_id
            assert leader is not None
            assert leader != member.node.id
            client = member.leader_client(leader)
            assert isinstance(client, LeaderClient)
            assert client.session is not None
            session = client.session
            calls, batches = session.calls_sent, session.batches_sent
            await asyncio.gather(*(ctx.backend.set(f"f:{i}", b"%d" % i) for i in range(200)))
            assert session.calls_sent - calls == 200
            assert session.batches_sent - batches <= 200 / 8, session.batches_sent - batches
            values = await asyncio.gather(*(ctx.backend.get(f"f:{i}") for i in range(200)))
            assert values == [b"%d" % i for i in range(200)]


async def test_leader_kill_fails_or_retries_in_flight_ops_and_reconnects() -> None:
    with ProcCluster(3).running() as procs:
        async with dref.connect("raft", **client_options(procs)) as ctx:
            client = ctx.backend
            assert isinstance(client, RaftClientBackend)
            await client.set("warm", b"0")
            victim_id = client._leader
            victim = next(n for n in procs.nodes if n.node_id == victim_id)
            old = leader_session(client)
            acked: dict[int, int] = {}
            errors: list[DRefError] = []

            async def writer(w: int) -> None:
                for i in range(40):
                    try:
                        await client.set(f"w{w}", b"%d" % i)
                        acked[w] = i
                    except DRefError as exc:  # retry budget spent (outcome unknown)
                        errors.append(exc)
                    if w == 0 and i == 10:
                        victim.kill()  # the others have writes in flight on its stream

            await asyncio.wait_for(asyncio.gather(*(writer(w) for w in range(32))), 90)
            assert client._leader not in (None, victim_id)
            new = leader_session(client)
            assert new is not old
            assert new.streams_opened >= 1
            assert new.calls_sent > 0
            # In-flight writes are retried (with_leader) through the failover: every writer
            # gets its last write acknowledged by the new leader.
            assert acked == dict.fromkeys(range(32), 39), errors
            # Linearizable reads after the failover: each key holds its last acknowledged write
            # or a later attempted one (never an older value).
            for w, i in acked.items():
                value = await client.get(f"w{w}")
                assert value is not None
                assert int(value) >= i


async def test_members_without_the_stream_get_unary_calls() -> None:
    procs = ProcCluster(2, extra=1)
    for node in procs.nodes:
        node.env = {"DREF_RAFT_STREAM": "false"}
    with procs.running():
        # The in-test member streams; the processes (one of them leads) do not serve it.
        async with (
            follower_member(procs) as member,
            dref.connect("raft", **procs.member_options(0)) as ctx,
            dref.connect("raft", **client_options(procs)) as client_ctx,
        ):
            client = client_ctx.backend
            assert isinstance(client, RaftClientBackend)
            await asyncio.gather(*(client.set(f"u:{i}", b"%d" % i) for i in range(50)))
            assert await client.get("u:7") == b"7"
            assert await client.compare_and_set("u:7", b"7", b"8")
            session = leader_session(client)
            assert session.unsupported
            assert session.calls_sent <= 50
            # A streaming member forwarding to the leader falls back the same way.
            await ctx.backend.set("u:f", b"1")
            assert await ctx.backend.get("u:7") == b"8"
            leader = member.node.leader_id
            assert leader is not None
            forward = member.leader_client(leader)
            assert isinstance(forward, LeaderClient)
            assert forward.session is not None
            assert forward.session.unsupported
