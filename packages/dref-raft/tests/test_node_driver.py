"""`RaftNode` driven over the in-memory transport: election, replication, events, restarts
from disk, snapshot catch-up, leadership loss."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dref.errors import (
    BackendTimeoutError,
    DRefError,
    NoLeaderError,
    NotLeaderError,
    QuorumLostError,
)
from dref_raft.commands import DeleteElement, SetElement, SetIfNotExist
from dref_raft.core import RaftCore, Snapshot
from dref_raft.fsm import PackedEntries
from dref_raft.member.node import NodeConfig, RaftNode
from dref_raft.storage import open_stores
from dref_raft.transport.memory import MemoryNetwork

IDS = ("a", "b", "c")


class Cluster:
    def __init__(self, storage: Path | None, snapshot_every: int = 1000) -> None:
        self.net = MemoryNetwork()
        self.storage = storage
        self.snapshot_every = snapshot_every
        self.nodes: dict[str, RaftNode] = {}

    async def start(self, node_id: str) -> RaftNode:
        peers = {i: f"mem:{i}" for i in IDS if i != node_id}
        config = NodeConfig(node_id, peers, snapshot_every=self.snapshot_every)
        stores = open_stores(self.storage / node_id) if self.storage is not None else None
        node = await RaftNode.open(config, self.net.peer_clients(f"mem:{node_id}"), stores=stores)
        self.net.serve(f"mem:{node_id}", node_id, node)
        node.start()
        self.nodes[node_id] = node
        return node

    async def stop(self, node_id: str) -> None:
        self.net.stop(f"mem:{node_id}")
        await self.nodes.pop(node_id).aclose()

    async def leader(self, timeout: float = 10) -> RaftNode:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            leaders = [n for n in self.nodes.values() if n.is_leader]
            if len(leaders) == 1:
                return leaders[0]
            assert loop.time() < deadline, "no single leader"
            await asyncio.sleep(0.01)


async def until(check: object, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, snapshot_every=50)
    for node_id in IDS:
        await c.start(node_id)
    try:
        yield c
    finally:
        for node_id in list(c.nodes):
            await c.stop(node_id)


async def test_one_leader_and_every_node_applies_in_order(cluster: Cluster) -> None:
    leader = await cluster.leader()
    follower = next(n for n in cluster.nodes.values() if not n.is_leader)
    async with follower.hub.subscribe("k") as events:
        for i in range(30):
            await leader.propose(SetElement("k", b"%d" % i), 5)
        await leader.propose(DeleteElement("k"), 5)
        got = [(await anext(events)).value for _ in range(31)]
    assert got == [b"%d" % i for i in range(30)] + [None]
    seq, result = await leader.propose(SetIfNotExist("x", b"1"), 5)
    assert result.created
    assert seq > 31
    with pytest.raises((NotLeaderError, NoLeaderError)):
        await follower.propose(SetElement("y", b"1"), 5)
    with pytest.raises(NotLeaderError):
        await follower.read_barrier(1)
    await leader.read_barrier(1)


async def test_reads_waiting_together_share_one_read_index_request(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    leader = await cluster.leader()
    await leader.propose(SetElement("k", b"1"), 5)
    requests: list[int] = []
    read_index = leader.core.read_index

    def counted(request_id: int) -> object:
        requests.append(request_id)
        return read_index(request_id)

    monkeypatch.setattr(leader.core, "read_index", counted)
    readers = [asyncio.create_task(leader.read_barrier(5)) for _ in range(50)]
    await asyncio.sleep(0)  # every reader has joined; the driver has not made the request yet
    readers[0].cancel()  # one reader giving up leaves the others waiting for the same round
    await asyncio.gather(*readers[1:])
    assert readers[0].cancelled()
    assert len(requests) == 1
    await leader.read_barrier(5)  # a later read never uses an index taken before it began
    assert len(requests) == 2
    assert not leader._reads


async def test_a_read_without_a_majority_fails_at_its_deadline(cluster: Cluster) -> None:
    leader = await cluster.leader()
    for node_id in [i for i in IDS if i != leader.id]:
        await cluster.stop(node_id)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises((QuorumLostError, NotLeaderError)):
        await asyncio.gather(*(leader.read_barrier(0.3) for _ in range(3)))
    assert loop.time() - started < 5
    await until(lambda: not leader._reads and leader._read_batch is None)


async def test_restart_of_every_node_keeps_all_data(cluster: Cluster) -> None:
    leader = await cluster.leader()
    for i in range(120):  # beyond snapshot_every: snapshot + log on disk
        await leader.propose(SetElement(f"k{i}", b"%d" % i), 5)
    for node_id in IDS:
        await cluster.stop(node_id)
    for node_id in IDS:
        await cluster.start(node_id)
    leader = await cluster.leader()
    await leader.read_barrier(5)
    for node in cluster.nodes.values():
        await until(lambda n=node: n.applied >= leader.applied)  # type: ignore[misc]
        assert all(node.get_local(f"k{i}") == b"%d" % i for i in range(120))


async def test_lagging_follower_catches_up_from_a_snapshot(cluster: Cluster) -> None:
    leader = await cluster.leader()
    lagging = next(i for i in IDS if i != leader.id)
    await cluster.stop(lagging)
    for i in range(200):  # leader compacts past what the stopped node has
        await leader.propose(SetElement(f"s{i}", b"v"), 5)
    assert leader.core.log.base_seq > 0
    node = await cluster.start(lagging)
    async with node.hub.subscribe("s199") as events:
        await until(lambda: node.applied >= leader.applied)
        if node.get_local("s199") is None:
            pytest.fail("snapshot not installed")
        assert events.pending() <= 1
    assert all(node.get_local(f"s{i}") == b"v" for i in range(200))


async def test_a_follower_a_little_behind_a_compaction_catches_up_from_the_log(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The leader compacts past what the stopped follower holds, but keeps the last
    # `min(catch_up_entries, snapshot_every)` = 50 entries its snapshot covers: the follower,
    # fewer than that behind, gets them appended instead of the whole state.
    installs: list[str] = []
    send_install = RaftCore._send_install

    def recording(core: RaftCore, peer: str, snap: Snapshot) -> None:
        installs.append(peer)
        send_install(core, peer, snap)

    monkeypatch.setattr(RaftCore, "_send_install", recording)
    leader = await cluster.leader()
    lagging = next(i for i in IDS if i != leader.id)
    for i in range(40):  # the first compaction comes after 50 applies
        await leader.propose(SetElement(f"s{i}", b"v"), 5)
    await until(lambda: cluster.nodes[lagging].applied >= leader.applied)
    held = cluster.nodes[lagging].applied
    await cluster.stop(lagging)
    for i in range(30):
        await leader.propose(SetElement(f"t{i}", b"v"), 5)
    await until(lambda: leader.core.log.snapshot.seq > held)  # compacted past it
    assert leader.core.log.base_seq <= held  # ... keeping what it lacks
    node = await cluster.start(lagging)
    await until(lambda: node.applied >= leader.applied)
    assert all(node.get_local(f"t{i}") == b"v" for i in range(30))
    assert lagging not in installs
    # A transport that cannot stream snapshots: the core's snapshot stays in memory.
    await leader.hold_snapshot_in_file()
    assert isinstance(leader.core.log.snapshot.data.entries, PackedEntries)


async def test_partitioned_leader_steps_down_and_loses_no_acknowledged_write(
    cluster: Cluster,
) -> None:
    old = await cluster.leader()
    for i in range(10):
        await old.propose(SetElement(f"p{i}", b"1"), 5)
    for other in IDS:
        if other != old.id:
            cluster.net.partition(f"mem:{old.id}", f"mem:{other}")
    with pytest.raises(DRefError):  # outcome unknown, or not leader
        await old.propose(SetElement("lost?", b"1"), 1.0)
    await until(lambda: not old.is_leader, timeout=5)  # check-quorum
    others = [n for n in cluster.nodes.values() if n is not old]
    await until(lambda: any(n.is_leader for n in others), timeout=10)
    new = next(n for n in others if n.is_leader)
    await new.read_barrier(5)
    assert all(new.get_local(f"p{i}") == b"1" for i in range(10))
    cluster.net.heal()
    await until(lambda: old.leader_id == new.id and old.applied >= new.applied)
    assert old.get_local("lost?") == new.get_local("lost?")


async def test_a_proposal_without_a_quorum_times_out_and_a_cancelled_one_frees_its_slot(
    cluster: Cluster,
) -> None:
    leader = await cluster.leader()
    await leader.propose(SetElement("before", b"1"), 5)
    for other in IDS:
        if other != leader.id:
            cluster.net.partition(f"mem:{leader.id}", f"mem:{other}")
    # Both within the election timeout (0.4 s), before check-quorum makes it step down.
    waiting = asyncio.create_task(leader.propose(SetElement("cancelled", b"1"), 30))
    await until(lambda: leader._pending)  # proposed: its entry waits for a quorum
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BackendTimeoutError, match=r"not applied within 0\.2 s"):
        await leader.propose(SetElement("timed out", b"1"), 0.2)
    assert loop.time() - started < 0.4  # failed at its own deadline
    assert leader._slots._value == leader.config.max_pending  # both slots given back
    cluster.net.heal()
