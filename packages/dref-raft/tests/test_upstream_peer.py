"""Scripted upstream peers (tests/upstream_double.py) against a real dref member over gRPC:
an upstream leader replicating to a dref follower, and a dref leader replicating to an
upstream follower. Every byte the double receives is checked against upstream's schema."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cluster_procs import free_ports, wait_until
from upstream_double import (
    UpstreamFollower,
    UpstreamLeader,
    kv,
    serve_upstream,
    set_element,
    upstream_command,
)

import dref
from dref_raft._pb import dref_consensus_pb2 as cpb
from dref_raft.commands import SetElement
from dref_raft.member import node as node_module
from dref_raft.member.backend import RaftBackend
from dref_raft.member.registry import Member, local_members
from dref_raft.settings import RaftSettings

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def ports() -> tuple[int, int]:
    dref_port, upstream_port = free_ports(2)
    return dref_port, upstream_port


def endpoints(ports: tuple[int, int]) -> str:
    return f"d=127.0.0.1:{ports[0]},u=127.0.0.1:{ports[1]}"


@pytest.fixture
async def follower_member(ports: tuple[int, int]) -> AsyncIterator[Member]:
    """A dref member `d` whose only peer is the double `u` (which refuses its pre-votes)."""
    double = UpstreamFollower(grant_prevote=False)
    server = await serve_upstream(double, ports[1])
    settings = RaftSettings.model_validate(
        {
            "node_id": "d",
            "port": ports[0],
            "endpoints": endpoints(ports),
            "mixed_cluster": True,
            "election_timeout": 5.0,  # the scripted leader is the only leader
        }
    )
    member = await local_members.acquire(settings)
    try:
        yield member
    finally:
        await local_members.release(member)
        await server.stop(None)


async def test_upstream_leader_replicates_to_a_dref_follower(
    follower_member: Member, ports: tuple[int, int]
) -> None:
    node = follower_member.node
    events = node.hub.subscribe("k")
    events_a = node.hub.subscribe("a")
    leader = UpstreamLeader(f"127.0.0.1:{ports[0]}")
    try:
        # Upstream's leader: one command per AppendEntries at last_seq + 1, commit_seq = the
        # commit before it (docs/protocol.md#raft-write-path), then the post-commit heartbeat.
        resp = await leader.call(
            "AppendEntries",
            cpb.AppendEntriesRequest(
                leader_id="u", term=5, command=set_element("k", b"v1"), seq=1, commit_seq=0
            ),
        )
        assert (resp.success, resp.term) == (True, 5)
        assert node.leader_id == "u"
        assert node.term == 5
        resp = await leader.call(
            "Heartbeat", cpb.HeartbeatRequest(leader_id="u", term=5, commit_seq=1)
        )
        assert (resp.acknowledged, resp.term) == (True, 5)
        await wait_until(lambda: node.get_local("k") == b"v1", 5, "k = v1 applied")
        assert [(e.name, e.value) for e in events.drain()] == [("k", b"v1")]

        # Entry 2 is applied when entry 3 arrives with commit_seq = 2.
        for seq, value in ((2, b"v2"), (3, b"v3")):
            resp = await leader.call(
                "AppendEntries",
                cpb.AppendEntriesRequest(
                    leader_id="u",
                    term=5,
                    command=set_element("k", value),
                    seq=seq,
                    commit_seq=seq - 1,
                ),
            )
            assert (resp.success, resp.term) == (True, 5)
        await wait_until(lambda: node.get_local("k") == b"v2", 5, "k = v2 applied")

        # Out of order (a gap, and a replay): rejected, so upstream's leader pushes a snapshot.
        for seq in (5, 3):
            resp = await leader.call(
                "AppendEntries",
                cpb.AppendEntriesRequest(
                    leader_id="u", term=5, command=set_element("k", b"x"), seq=seq, commit_seq=3
                ),
            )
            assert (resp.success, resp.term) == (False, 5)
        # A stale term is refused with the follower's term.
        resp = await leader.call(
            "AppendEntries",
            cpb.AppendEntriesRequest(
                leader_id="u", term=4, command=set_element("k", b"x"), seq=4, commit_seq=3
            ),
        )
        assert (resp.success, resp.term) == (False, 5)
        assert node.leader_id == "u"

        # InstallSnapshot replaces the whole state and emits change events.
        resp = await leader.call(
            "InstallSnapshot",
            cpb.InstallSnapshotRequest(
                leader_id="u",
                term=5,
                snapshot=cpb.ClusterSnapshot(entries=[kv("a", b"A"), kv("k", b"v10")], last_seq=10),
                last_seq=10,
            ),
        )
        assert (resp.success, resp.term) == (True, 5)
        await wait_until(lambda: node.get_local("k") == b"v10", 5, "snapshot installed")
        assert node.get_local("a") == b"A"
        assert ("k", b"v10") in [(e.name, e.value) for e in events.drain()]
        assert [(e.name, e.value) for e in events_a.drain()] == [("a", b"A")]

        # Replication continues after the snapshot at last_seq + 1.
        resp = await leader.call(
            "AppendEntries",
            cpb.AppendEntriesRequest(
                leader_id="u", term=5, command=set_element("k", b"v11"), seq=11, commit_seq=10
            ),
        )
        assert (resp.success, resp.term) == (True, 5)
        resp = await leader.call(
            "Heartbeat", cpb.HeartbeatRequest(leader_id="u", term=5, commit_seq=11)
        )
        assert resp.acknowledged
        await wait_until(lambda: node.get_local("k") == b"v11", 5, "k = v11 applied")
        assert [(e.name, e.value) for e in events.drain()] == [("k", b"v11")]

        # ReadIndex keeps upstream's meaning: granted to the known leader in its term only.
        resp = await leader.call("ReadIndex", cpb.ReadIndexRequest(leader_id="u", term=5))
        assert (resp.granted, resp.term) == (True, 5)
        resp = await leader.call("ReadIndex", cpb.ReadIndexRequest(leader_id="u", term=4))
        assert (resp.granted, resp.term) == (False, 5)
        assert not node.is_leader
    finally:
        await events.aclose()
        await events_a.aclose()
        await leader.aclose()


def check_requests(double: UpstreamFollower, leader_term: int) -> list[int]:
    """What the dref leader sent, as upstream reads it; the seqs of the appends received.

    Every request parsed with upstream's schema (the double records violations); each
    AppendEntries carries one upstream StateCommand (no compare-and-*) at the seq after the
    previous one, or after the last InstallSnapshot's last_seq; heartbeats never announce a
    commit above what was sent."""
    assert not double.violations
    last, seqs = 0, []
    for record in double.received:
        msg = record.msg
        if record.method == "InstallSnapshot":
            assert msg.leader_id == "d"
            assert msg.term == leader_term
            last = msg.last_seq
        elif record.method == "AppendEntries":
            assert msg.leader_id == "d"
            assert msg.term == leader_term
            upstream_command(msg.command)
            assert msg.seq == last + 1, f"AppendEntries seq {msg.seq} after seq {last}"
            assert msg.commit_seq < msg.seq
            last = msg.seq
            seqs.append(msg.seq)
        elif record.method == "Heartbeat":
            assert msg.leader_id == "d"
            assert msg.term == leader_term
            assert msg.commit_seq <= max(seqs, default=0)
    return seqs


@pytest.fixture
async def upstream_follower(
    ports: tuple[int, int],
) -> AsyncIterator[tuple[UpstreamFollower, Member]]:
    """The double `u` (upstream's follower/voter rules) and a dref member `d` that it elects."""
    double = UpstreamFollower()
    server = await serve_upstream(double, ports[1])
    settings = RaftSettings.model_validate(
        {
            "node_id": "d",
            "port": ports[0],
            "endpoints": endpoints(ports),
            "mixed_cluster": True,
            "op_timeout": 2.0,
        }
    )
    member = await local_members.acquire(settings)
    try:
        yield double, member
    finally:
        await local_members.release(member)
        await server.stop(None)


async def test_dref_leader_is_elected_by_and_syncs_an_upstream_follower(
    upstream_follower: tuple[UpstreamFollower, Member],
) -> None:
    double, member = upstream_follower
    node = member.node
    await wait_until(lambda: node.is_leader, 10, "d leads")
    # The StartNewTerm entry is committed by the upstream follower's ack (quorum 2 of 2) and
    # applied there through a heartbeat's commit_seq.
    await wait_until(lambda: double.commit_seq >= 1, 5, "the follower applied seq 1")
    await wait_until(lambda: node.applied >= 1, 5, "the leader applied seq 1")

    # Votes: upstream's fields with upstream's meaning (term one above the voter's, last_seq).
    pre, votes = double.of("RequestPreVote"), double.of("RequestVote")
    assert pre
    assert votes
    assert (pre[0].candidate_id, pre[0].term, pre[0].last_seq) == ("d", 1, 0)
    assert (votes[-1].candidate_id, votes[-1].last_seq) == ("d", 0)
    assert votes[-1].term == node.term == double.term
    assert double.voted_for == "d"
    assert double.leader_id == "d"

    # Like an upstream leader after an election, it first resets the follower by a snapshot;
    # then its first entry, StartNewTerm (a no-op upstream), at seq 1.
    methods = [r.method for r in double.received]
    assert "InstallSnapshot" in methods
    assert methods.index("InstallSnapshot") < methods.index("AppendEntries")
    seqs = check_requests(double, node.term)
    assert seqs[0] == 1
    first = upstream_command(double.of("AppendEntries")[0].command)
    assert first.WhichOneof("op") == "start_new_term"
    await wait_until(
        lambda: any(h.commit_seq >= 1 for h in double.of("Heartbeat")),
        5,
        "a heartbeat carrying commit_seq 1",
    )
    check_requests(double, node.term)
    assert node.is_leader


async def test_a_rejected_append_is_repaired_by_a_snapshot_of_the_applied_state(
    upstream_follower: tuple[UpstreamFollower, Member],
) -> None:
    double, member = upstream_follower
    node = member.node
    await wait_until(lambda: node.is_leader, 10, "d leads")
    await node.propose(SetElement("kept", b"1", None), 3.0)
    await wait_until(lambda: double.state == {"kept": b"1"}, 5, "the follower applied kept")
    snapshots = len(double.of("InstallSnapshot"))
    double.reject_next_append = True  # as after a divergence (docs/protocol.md#raft-append-entries)
    await node.propose(SetElement("k", b"v", None), 3.0)  # commits only with u's ack
    await wait_until(
        lambda: double.state == {"kept": b"1", "k": b"v"}, 5, "the follower holds both"
    )
    # One snapshot repaired it: the leader's applied state (not its compacted, empty one),
    # then the rejected entry again at the snapshot's seq + 1.
    repair = double.of("InstallSnapshot")[snapshots:]
    assert len(repair) == 1
    assert repair[0].last_seq == node.applied - 1
    assert {e.key: e.value for e in repair[0].snapshot.entries} == {"kept": b"1"}
    check_requests(double, node.term)


async def test_the_repair_snapshot_of_an_upstream_follower_is_built_off_the_event_loop(
    upstream_follower: tuple[UpstreamFollower, Member], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The driver copies its state a slice at a time and builds the snapshot in a worker
    # thread (a million elements would stall the loop for a second); the follower is repaired
    # by it all the same, then gets the writes made meanwhile.
    double, member = upstream_follower
    node = member.node
    built_on: list[bool] = []
    build = node_module.snapshot_of_state

    def recording(state: Any, seq: int, term: int) -> Any:
        built_on.append(threading.current_thread() is threading.main_thread())
        return build(state, seq, term)

    monkeypatch.setattr(node_module, "snapshot_of_state", recording)
    await wait_until(lambda: node.is_leader, 10, "d leads")
    await node.propose(SetElement("kept", b"1", None), 3.0)
    await wait_until(lambda: double.state == {"kept": b"1"}, 5, "the follower applied kept")
    double.reject_next_append = True
    await node.propose(SetElement("k", b"v", None), 3.0)
    await node.propose(SetElement("after", b"2", None), 3.0)
    await wait_until(
        lambda: double.state == {"kept": b"1", "k": b"v", "after": b"2"},
        5,
        "the follower holds all",
    )
    assert built_on
    assert not any(built_on)
    check_requests(double, node.term)


async def test_steady_writes_reach_an_upstream_follower_once_each_in_order(
    upstream_follower: tuple[UpstreamFollower, Member],
) -> None:
    """Many concurrent proposals while heartbeats run: the upstream follower gets each entry
    exactly once, in seq order (a re-sent entry would be rejected and cost a snapshot)."""
    double, member = upstream_follower
    node = member.node
    await wait_until(lambda: node.is_leader, 10, "d leads")
    await wait_until(lambda: double.commit_seq >= 1, 5, "the follower applied seq 1")
    snapshots = len(double.of("InstallSnapshot"))
    for batch in range(3):
        await asyncio.gather(
            *(node.propose(SetElement(f"k{i}", b"%d" % batch, None), 5.0) for i in range(20))
        )
    expected = {f"k{i}": b"2" for i in range(20)}
    await wait_until(lambda: double.state == expected, 5, "the follower applied every write")
    assert len(double.of("InstallSnapshot")) == snapshots
    seqs = check_requests(double, node.term)
    assert seqs == list(range(1, len(seqs) + 1))


async def test_a_request_from_a_non_member_is_refused_with_the_term(
    upstream_follower: tuple[UpstreamFollower, Member],
    ports: tuple[int, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As upstream answers: success/granted false and the node's term; nothing changes."""
    _, member = upstream_follower
    node = member.node
    await wait_until(lambda: node.is_leader, 10, "d leads")
    term, last = node.term, node.core.log.last_seq
    stranger = UpstreamLeader(f"127.0.0.1:{ports[0]}")
    try:
        resp = await stranger.call(
            "AppendEntries",
            cpb.AppendEntriesRequest(
                leader_id="x", term=term + 5, command=set_element("k", b"v"), seq=last + 1
            ),
        )
        assert (resp.success, resp.term) == (False, term)
        vote = await stranger.call(
            "RequestVote",
            cpb.VoteRequest(candidate_id="x", term=term + 5, last_seq=last + 10),
        )
        assert (vote.granted, vote.term) == (False, term)
    finally:
        await stranger.aclose()
    assert node.is_leader
    assert (node.term, node.core.log.last_seq) == (term, last)
    assert "not a member" in caplog.text
    await node.propose(SetElement("after", b"1", None), 3.0)


async def test_mixed_cluster_backend_never_uses_compare_commands(
    upstream_follower: tuple[UpstreamFollower, Member],
    ports: tuple[int, int],
) -> None:
    """With mixed_cluster the context has no native CAS, so no compare-and-* is proposed:
    writes, updates and locks through the context reach the upstream follower as upstream
    commands only (the double records any other command as a violation)."""
    double, member = upstream_follower
    options: dict[str, Any] = {
        "node_id": "d",
        "port": ports[0],
        "endpoints": endpoints(ports),
        "mixed_cluster": True,
    }
    async with dref.connect("raft", **options) as ctx:
        assert isinstance(ctx.backend, RaftBackend)
        assert ctx.backend.member is member
        assert not ctx.backend.capabilities.native_cas
        assert not ctx.backend.capabilities.owner_checked_locks
        assert not ctx.backend.capabilities.fair_updates  # FairSwap is dref-only
        assert not ctx.backend.capabilities.lock_queue
        await wait_until(lambda: member.node.is_leader, 10, "d leads")
        counter = await ctx.make(0, "counter")
        for _ in range(3):
            await counter.update(lambda n: n + 1)  # upstream's lock protocol, no CAS
        async with ctx.lock("job", ttl=5):
            await ctx.make("x", "inside")
        assert await counter.get() == 3
    await wait_until(lambda: "counter" in double.state, 5, "the follower holds counter")
    assert "job" not in double.state  # released
    check_requests(double, member.node.term)


async def test_without_mixed_cluster_sessions_fall_back_to_upstream_writes(
    ports: tuple[int, int],
) -> None:
    """Exactly-once writes are dref-only: a leader with an upstream voter refuses them (not
    retried), and the context falls back to upstream's plain writes, which the upstream
    follower receives as upstream commands (the double records any other as a violation)."""
    double = UpstreamFollower()
    server = await serve_upstream(double, ports[1])
    options: dict[str, Any] = {
        "node_id": "d",
        "port": ports[0],
        "endpoints": endpoints(ports),
        "op_timeout": 2.0,
    }
    try:
        async with dref.connect("raft", **options) as ctx:
            assert isinstance(ctx.backend, RaftBackend)
            assert ctx.backend._session is not None  # on by default
            node = ctx.backend.node
            await wait_until(lambda: node.is_leader, 10, "d leads")
            ref = ctx.ref("plain", type=int)
            await ref.set(1)  # refused as a session write, sent as upstream's SetElement
            assert ctx.backend._session is None
            await ref.delete()
            await ref.set(2)
            assert await ref.get() == 2
            await wait_until(lambda: double.state.get("plain") is not None, 5, "replicated")
            check_requests(double, node.term)
    finally:
        await server.stop(None)
