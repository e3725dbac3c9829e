"""ReadIndex on the core, and behaviour towards and from upstream (Scala/Rust) peers."""

from __future__ import annotations

import random

import pytest

from dref_raft.commands import CompareAndSet, SetElement, StartNewTerm
from dref_raft.core import (
    AppendEntries,
    AppendEntriesResponse,
    CoreState,
    Entry,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    NotLeader,
    PeerKind,
    PreVoteResponse,
    RaftCore,
    ReadIndex,
    ReadIndexResponse,
    ReadState,
    Role,
    Vote,
    VoteResponse,
)
from dref_raft.fsm import ClusterSnapshot
from dref_raft.simulation.harness import Harness

IDS = ["a", "b", "c"]


def _set(n: int) -> SetElement:
    return SetElement("k", str(n).encode())


def test_read_on_a_follower_is_refused() -> None:
    h = Harness(IDS)
    h.elect("a")
    assert h.cores["b"].read_index(1) == NotLeader("a")


def test_read_waits_for_a_majority_round_and_batches_requests() -> None:
    h = Harness(IDS)
    h.elect("a")
    a = h.cores["a"]
    assert a.read_index(1) is None
    assert a.read_index(2) is None
    h.drain("a")
    rounds = h.take(lambda m: isinstance(m, ReadIndex))
    assert [(m.to, m.read_ctx) for m in rounds] == [("b", 1), ("c", 1)]  # one round, two reads
    assert h.reads["a"] == []
    h.deliver(rounds[0])
    h.stabilize()
    assert h.reads["a"] == [ReadState(1, a.commit), ReadState(2, a.commit)]


def test_read_waits_until_the_leader_committed_in_its_own_term() -> None:
    h = Harness(IDS)
    a = h.cores["a"]
    while a.role is not Role.LEADER:
        h.tick("a")
        for m in h.take(lambda m: not isinstance(m, AppendEntries)):
            h.deliver(m)
    h.take()  # the StartNewTerm appends are lost
    assert a.commit == 0
    assert a.read_index(7) is None
    h.drain("a")
    assert not [m for m in h.inflight if isinstance(m, ReadIndex)]  # not even asked yet
    h.tick("a", 4)
    h.stabilize()
    h.tick("a", 4)
    h.stabilize()
    assert a.commit >= 1
    assert h.reads["a"] == [ReadState(7, a.commit)]


def test_pending_reads_are_dropped_when_leadership_is_lost() -> None:
    h = Harness(IDS)
    h.elect("a")
    a = h.cores["a"]
    a.read_index(5)
    h.drain("a")
    h.take()
    a.step(VoteResponse("b", "a", a.term + 1, False, ext=True))
    h.drain("a")
    assert h.dropped_reads["a"] == [5]


def test_read_index_grant_by_a_follower() -> None:
    h = Harness(IDS)
    h.elect("a")
    b = h.cores["b"]
    b.step(ReadIndex("a", "b", b.term, ext=False))
    b.step(ReadIndex("c", "b", b.term - 1, ext=True, read_ctx=3))
    replies = b.ready().messages
    assert replies == (
        ReadIndexResponse("b", "a", 1, True, 0, True),
        ReadIndexResponse("b", "c", 1, False, 3, True),
    )


# ---------------------------------------------------------------- towards upstream peers


def _leader_with_upstream_peer() -> tuple[RaftCore, list[Message]]:
    """`a` leads term 1 elected by dref peer `b`; `c` has not spoken yet (kind unknown)."""
    a = RaftCore("a", IDS, rng=random.Random(0))
    while a.role is not Role.CANDIDATE:
        a.tick()
        if a.role is Role.PRE_CANDIDATE:
            a.step(PreVoteResponse("b", "a", 0, True, ext=True))
    a.step(VoteResponse("b", "a", 1, True, ext=True))
    assert a.role is Role.LEADER
    ready = a.ready()
    a.advance(ready)
    return a, [m for m in ready.messages if isinstance(m, AppendEntries)]


def test_first_append_to_an_unknown_peer_is_one_entry_at_last_seq_plus_one() -> None:
    _, sent = _leader_with_upstream_peer()
    to_c = [m for m in sent if m.to == "c"]
    assert to_c == [
        AppendEntries("a", "c", 1, 1, StartNewTerm(), 0, True, 0, 0, (Entry(1, 1, StartNewTerm()),))
    ]


def _offered_snapshot(a: RaftCore) -> InstallSnapshot:
    """The driver's part: the core asks for the state machine at `applied`, and sends it."""
    assert a.wants_snapshot
    a.offer_snapshot(a.applied, ClusterSnapshot((), a.applied))
    assert not a.wants_snapshot
    ready = a.ready()
    a.advance(ready)
    (snap,) = ready.messages
    assert isinstance(snap, InstallSnapshot)
    assert (snap.to, snap.last_seq) == ("c", a.applied)
    return snap


def _synced(a: RaftCore) -> list[Message]:
    a.step(AppendEntriesResponse("c", "a", 1, True, match_seq=1, ext=False))
    ready = a.ready()
    a.advance(ready)
    assert not [m for m in ready.messages if isinstance(m, InstallSnapshot)]
    assert _offered_snapshot(a).last_seq == 0
    a.step(InstallSnapshotResponse("c", "a", 1, True, match_seq=0, ext=False))
    ready = a.ready()
    a.advance(ready)
    return list(ready.messages)


def test_upstream_peer_gets_a_snapshot_before_its_log_is_trusted() -> None:
    a, _ = _leader_with_upstream_peer()
    _synced(a)
    assert a.peer_kinds["c"] is PeerKind.UPSTREAM


def test_upstream_peer_then_gets_single_entries_in_order_and_counts_for_commit() -> None:
    a, _ = _leader_with_upstream_peer()
    (first,) = _synced(a)
    assert isinstance(first, AppendEntries)
    assert (first.seq, len(first.entries)) == (1, 1)
    a.propose([_set(1), _set(2)])
    ready = a.ready()
    a.advance(ready)
    assert not [m for m in ready.messages if m.to == "c" and isinstance(m, AppendEntries)]
    a.step(AppendEntriesResponse("c", "a", 1, True, match_seq=1, ext=False))
    assert a.commit == 1  # majority: a and c
    ready = a.ready()
    to_c = [m for m in ready.messages if m.to == "c" and isinstance(m, AppendEntries)]
    assert [(m.seq, m.command) for m in to_c] == [(2, _set(1))]  # strictly one at a time
    a.advance(ready)


def test_a_dref_only_entry_is_never_sent_to_a_peer_not_known_to_be_dref() -> None:
    a, _ = _leader_with_upstream_peer()
    _synced(a)
    a.step(AppendEntriesResponse("c", "a", 1, True, match_seq=1, ext=False))
    a.propose([CompareAndSet("k", None, b"1"), _set(2)])
    for _ in range(3):
        a.step(AppendEntriesResponse("c", "a", 1, True, match_seq=1, ext=False))
        ready = a.ready()
        a.advance(ready)
        # upstream would apply it as a no-op and diverge: c stays behind at seq 1
        assert not [m for m in ready.messages if m.to == "c" and isinstance(m, AppendEntries)]
    assert a.peer_kinds["c"] is PeerKind.UPSTREAM


def test_upstream_rejection_is_answered_with_a_snapshot_of_the_applied_state() -> None:
    a, _ = _leader_with_upstream_peer()
    _synced(a)
    a.step(AppendEntriesResponse("c", "a", 1, True, match_seq=1, ext=False))
    a.propose([_set(1), _set(2)])
    ready = a.ready()
    a.advance(ready)
    assert a.applied == 1
    a.step(AppendEntriesResponse("c", "a", 1, False, ext=False))
    ready = a.ready()
    a.advance(ready)
    assert not ready.messages  # nothing sent before the driver offers its state
    assert _offered_snapshot(a).last_seq == 1
    # Upstream now holds exactly seq 1: it continues at 2, one entry at a time.
    a.step(InstallSnapshotResponse("c", "a", 1, True, ext=False))
    ready = a.ready()
    a.advance(ready)
    to_c = [m for m in ready.messages if m.to == "c" and isinstance(m, AppendEntries)]
    assert [(m.seq, m.command) for m in to_c] == [(2, _set(1))]


def test_an_unanswered_upstream_probe_is_sent_again_only_after_a_timeout() -> None:
    a, _ = _leader_with_upstream_peer()
    (first,) = _synced(a)
    assert isinstance(first, AppendEntries)
    for _ in range(a.config.election_ticks - 1):  # heartbeats come and go meanwhile
        a.tick()
        a.step(HeartbeatResponse("c", "a", 1, True))
        ready = a.ready()
        a.advance(ready)
        assert not [m for m in ready.messages if m.to == "c" and isinstance(m, AppendEntries)]
    a.tick()
    ready = a.ready()
    a.advance(ready)
    again = [m for m in ready.messages if m.to == "c" and isinstance(m, AppendEntries)]
    assert [m.seq for m in again] == [1]


# ---------------------------------------------------------------- from an upstream leader


def test_follower_of_an_upstream_leader_accepts_only_the_next_seq() -> None:
    b = RaftCore("b", IDS, rng=random.Random(0))
    b.step(AppendEntries("a", "b", 1, 2, _set(2), 0))
    b.step(AppendEntries("a", "b", 1, 1, _set(1), 0))
    b.step(Heartbeat("a", "b", 1, 1))
    ready = b.ready()
    replies = [m for m in ready.messages if isinstance(m, AppendEntriesResponse)]
    assert [(m.success, m.match_seq) for m in replies] == [(False, 0), (True, 1)]
    assert ready.entries == (Entry(1, 1, _set(1)),)
    assert ready.committed == (Entry(1, 1, _set(1)),)
    assert b.peer_kinds["a"].value == "upstream"


def test_follower_of_an_upstream_leader_replaces_everything_on_install_snapshot() -> None:
    state = CoreState(term=1, commit=0, entries=[Entry(1, 1, _set(1)), Entry(2, 1, _set(2))])
    b = RaftCore("b", IDS, rng=random.Random(0), state=state)
    b.step(InstallSnapshot("a", "b", 2, ClusterSnapshot(), 1))
    ready = b.ready()
    assert ready.snapshot is not None
    assert ready.truncate_from == 2  # upstream semantics: last_seq = snapshot's
    assert b.log.last_seq == 1


def test_vote_request_from_upstream_compares_last_seq_only() -> None:
    b = RaftCore(
        "b", IDS, rng=random.Random(0), state=CoreState(term=3, entries=[Entry(1, 3, _set(1))])
    )
    b.step(Vote("a", "b", 4, 1))
    (reply,) = b.ready().messages
    assert reply == VoteResponse("b", "a", 4, True, ext=True)


def test_a_stale_message_in_the_other_format_does_not_change_the_peer_kind() -> None:
    b = RaftCore("b", IDS, rng=random.Random(0), state=CoreState(term=3))
    b.step(Heartbeat("a", "b", 3, 0, ext=True))
    assert b.peer_kinds["a"] is PeerKind.DREF
    b.step(AppendEntries("a", "b", 2, 1, _set(1), 0))  # older term, upstream's format
    assert b.peer_kinds["a"] is PeerKind.DREF
    replies = [m for m in b.ready().messages if isinstance(m, AppendEntriesResponse)]
    assert [(m.success, m.term) for m in replies] == [(False, 3)]


def test_an_offer_older_than_the_state_a_peer_asked_at_waits_for_a_newer_one() -> None:
    # A driver may build the state an upstream peer needs while it applies on, and offer it
    # later at the seq it copied: never to a peer that asked when more was applied (it may
    # hold more than that state), never above what is applied.
    a, _ = _leader_with_upstream_peer()
    a.step(AppendEntriesResponse("b", "a", 1, True, match_seq=1, ext=True))
    ready = a.ready()
    a.advance(ready)
    assert a.applied == 1
    a.step(AppendEntriesResponse("c", "a", 1, True, match_seq=1, ext=False))
    a.advance(a.ready())
    assert a.wants_snapshot  # asked at applied 1
    with pytest.raises(ValueError, match="applied is 1"):
        a.offer_snapshot(2, ClusterSnapshot((), 2))
    a.offer_snapshot(0, ClusterSnapshot((), 0))
    assert a.wants_snapshot
    ready = a.ready()
    a.advance(ready)
    assert not [m for m in ready.messages if isinstance(m, InstallSnapshot)]
    a.offer_snapshot(1, ClusterSnapshot((), 1))
    assert not a.wants_snapshot
    ready = a.ready()
    a.advance(ready)
    sent = [m for m in ready.messages if isinstance(m, InstallSnapshot)]
    assert [(m.to, m.last_seq) for m in sent] == [("c", 1)]
