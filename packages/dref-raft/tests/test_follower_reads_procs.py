"""Reads served by any member (`read_from = "any"`, docs/raft.md#read-modes) on real member
processes: linearizable follower reads (the follower asks the leader for its read index, then
serves from its own state) and session reads (no leader round at all)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_procs import (
    ProcCluster,
    check_session_reads_see_own_writes,
    follower_member,
    wait_until,
)

import dref
from dref.errors import DRefError
from dref_compat import HistoryRecorder, check_linearizable
from dref_raft.client.backend import RaftClientBackend
from dref_raft.reads import FOLLOWER_READ, ReadRequest
from dref_raft.transport import LeaderClient

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster() -> Iterator[ProcCluster]:
    with ProcCluster(3).running() as procs:
        yield procs


def client_options(cluster: ProcCluster, **more: Any) -> dict[str, Any]:
    return {"mode": "client", "endpoints": cluster.endpoints, **more}


async def roles(cluster: ProcCluster) -> tuple[str, list[str]]:
    """The leader's id and the followers' ids, once every process agrees on a leader (20 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    clients = {n.node_id: LeaderClient(n.address, timeout=1.0) for n in cluster.nodes}
    try:
        while True:
            try:
                views = {i: await c.status(timeout=1.0) for i, c in clients.items()}
            except DRefError:
                views = {}
            leaders = {v.leader for v in views.values()}
            if len(views) == len(clients) and len(leaders) == 1 and None not in leaders:
                leader = leaders.pop()
                assert leader is not None
                return leader, sorted(i for i in clients if i != leader)
            assert loop.time() < deadline, f"no agreed leader within 20 s: {views}"
            await asyncio.sleep(0.02)
    finally:
        for client in clients.values():
            await client.aclose()


def client_of(ctx: dref.DRefContext) -> RaftClientBackend:
    backend = ctx.backend
    assert isinstance(backend, RaftClientBackend)
    return backend


async def test_session_reads_on_followers_see_the_callers_own_writes(
    cluster: ProcCluster,
) -> None:
    """Contexts with `read_from = "any"` take the followers as readers in turn; each context's
    session reads there see its own writes (through the leader) at once."""
    readers = set()
    # Contexts in turn until each follower served one (6 at most): a context whose leader an
    # election moved, or whose reader moved on to the leader after a follower read failed
    # under load, does not count; one that never reads from a follower leaves `readers` short.
    for c in range(6):
        if len(readers) == 2:
            break
        async with dref.connect("raft", **client_options(cluster, read_from="any")) as ctx:
            assert ctx.backend.capabilities.session_reads
            backend = client_of(ctx)
            refs = [ctx.ref(f"sess:{c}:{i}", type=int) for i in range(3)]
            await refs[0].set(-1)
            leader = backend._leader
            await check_session_reads_see_own_writes(refs, 30)
            assert backend._reader is not None
            if backend._leader == leader and backend._reader != backend._leader:
                readers.add(backend._reader)  # a follower served them
    assert len(readers) == 2  # both followers


async def test_session_reads_never_go_back_across_member_switches(cluster: ProcCluster) -> None:
    """Another context counts up through the leader; session reads switching member at every
    read (as after failures) never return a value older than one an earlier read returned
    (monotonic reads: the context carries the highest seq it saw to the next member)."""
    async with (
        dref.connect("raft", **client_options(cluster)) as writer,
        dref.connect("raft", **client_options(cluster, read_from="any")) as reader,
    ):
        counter = writer.ref("mono", type=int)
        await counter.set(0)
        seen = reader.ref("mono", type=int)
        backend = client_of(reader)
        members = sorted(n.node_id for n in cluster.nodes)
        done = asyncio.Event()

        async def count() -> None:
            try:
                for n in range(1, 151):
                    await counter.set(n)
            finally:
                done.set()

        async def read() -> list[int]:
            values = [await seen.get()]  # linearizable: at least 0
            while not done.is_set():
                backend._reader = members[len(values) % len(members)]  # switch member
                values.append(await seen.get(consistency="session"))
            return values

        _, values = await asyncio.gather(count(), read())
        assert len(values) > 20
        assert values == sorted(values), values
        assert all(backend._leaders[m].applied_seq > 0 for m in members)  # all answered


async def test_follower_reads_are_linearizable(cluster: ProcCluster) -> None:
    """Writers through the leader, readers switching over every member; the history of both
    checks linearizable (`dref_compat.check_linearizable`)."""
    rec = HistoryRecorder()
    keys = ["lin:a", "lin:b"]
    leader, followers = await roles(cluster)
    async with (
        dref.connect("raft", **client_options(cluster)) as writers,
        dref.connect("raft", **client_options(cluster, read_from="any")) as readers,
    ):
        members = [leader, *followers]

        async def write(key: str, client: int) -> None:
            for i in range(25):
                value = f"{client}-{i}".encode()
                async with rec.op(client, key, "set", value):
                    await writers.backend.set(key, value)

        async def read(key: str, client: int) -> None:
            backend = client_of(readers)
            for i in range(40):
                backend._reader = members[i % 3]  # the followers, and the leader
                async with rec.op(client, key, "get") as op:
                    op.output = await backend.get(key)

        tasks = [write(k, n) for n, k in enumerate(keys)]
        tasks += [read(k, 10 + 3 * n + r) for n, k in enumerate(keys) for r in range(3)]
        await asyncio.gather(*tasks)
        assert all(client_of(readers)._leaders[m].applied_seq > 0 for m in members)
    history = rec.history()
    assert all(op.ret is not None for op in history)
    result = check_linearizable(history, timeout=30)
    assert result, result.explanation


async def test_a_lagging_follower_waits_for_the_read_index(cluster: ProcCluster) -> None:
    """A follower that missed a write (stopped while it was acknowledged) and is asked for a
    linearizable read as soon as it resumes answers with that write, never the older value."""
    leader_id, followers = await roles(cluster)
    nodes = {n.node_id: n for n in cluster.nodes}
    lagging = nodes[followers[0]]
    async with (
        LeaderClient(nodes[leader_id].address, timeout=5) as leader,
        LeaderClient(lagging.address, timeout=5, stream_window=16) as follower,
    ):
        assert follower.session is not None
        for n in range(5):
            await leader.set_element("lag", b"old%d" % n)
            assert await follower.get_element("lag", read=FOLLOWER_READ) == b"old%d" % n
            lagging.signal(signal.SIGSTOP)
            try:
                await leader.set_element("lag", b"new%d" % n)  # the other follower acks it
                session, sent = follower.session, follower.session.calls_sent
                read = asyncio.create_task(follower.get_element("lag", read=FOLLOWER_READ))
                await wait_until(lambda: session.calls_sent > sent, 5, "read sent")  # noqa: B023
            finally:
                lagging.signal(signal.SIGCONT)
            assert await read == b"new%d" % n


async def test_a_cut_off_follower_serves_no_linearizable_read(cluster: ProcCluster) -> None:
    """With the two other processes stopped the follower cannot get a read index: its
    linearizable read fails (after the caller's timeout), and it still answers a session read
    from its own state."""
    leader_id, followers = await roles(cluster)
    nodes = {n.node_id: n for n in cluster.nodes}
    alone = nodes[followers[0]]
    async with (
        LeaderClient(nodes[leader_id].address, timeout=5) as leader,
        LeaderClient(alone.address, timeout=5) as follower,
    ):
        await leader.set_element("cut", b"v1")
        seq = leader.last_applied_seq
        assert await follower.get_element("cut", read=FOLLOWER_READ) == b"v1"
        others = [n for n in cluster.nodes if n is not alone]
        for node in others:
            node.signal(signal.SIGSTOP)
        try:
            with pytest.raises(DRefError):
                await follower.get_element("cut", read=FOLLOWER_READ, timeout=1.5)
            session = ReadRequest(session_seq=seq)
            assert await follower.get_element("cut", read=session, timeout=1.5) == b"v1"
        finally:
            for node in others:
                node.signal(signal.SIGCONT)
    await roles(cluster)  # the cluster is whole again for the next test


async def test_member_follower_reads_share_read_index_rounds() -> None:
    """In member mode with `read_from = "any"` a follower serves `get()` itself: every read
    waiting there shares one read-index request to the leader, and each sees every write
    acknowledged (by another process) before it started."""
    with ProcCluster(2, extra=1).running() as procs:
        async with (
            follower_member(procs, read_from="any") as member,
            dref.connect("raft", **procs.member_options(0), read_from="any") as ctx,
        ):
            reads = member.handler.reads
            assert reads is not None
            leader = await member.node.wait_for_leader(5)
            assert leader is not None
            address = procs.nodes[procs.ids.index(leader)].address
            backend = ctx.backend
            async with LeaderClient(address, timeout=5) as writer:
                for n in range(20):
                    await writer.set_element("member:k", b"%d" % n)
                    assert await backend.get("member:k") == b"%d" % n
                before = reads.rounds
                values = await asyncio.gather(*(backend.get("member:k") for _ in range(200)))
            assert values == [b"19"] * 200
            assert 1 <= reads.rounds - before <= 50
            assert not member.node.is_leader
