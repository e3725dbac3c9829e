"""Replication by the Raft core: batches, majority commit, log matching, repair, snapshots."""

from __future__ import annotations

import random

from dref_raft.commands import SetElement, StartNewTerm
from dref_raft.core import (
    AppendEntries,
    AppendEntriesResponse,
    CoreConfig,
    CoreState,
    Entry,
    Heartbeat,
    InstallSnapshot,
    NotLeader,
    PreVoteResponse,
    Proposed,
    RaftCore,
    Role,
    VoteResponse,
    restore_entries,
)
from dref_raft.fsm import ClusterSnapshot
from dref_raft.simulation.harness import Harness

IDS = ["a", "b", "c"]


def _set(n: int) -> SetElement:
    return SetElement("k", str(n).encode())


def _log(*terms: int) -> list[Entry]:
    return [Entry(i + 1, t, _set(i + 1)) for i, t in enumerate(terms)]


def test_propose_on_a_follower_is_refused_with_the_leader_hint() -> None:
    h = Harness(IDS)
    h.elect("a")
    assert h.cores["b"].propose([_set(1)]) == NotLeader("a")


def test_a_batch_is_one_proposal_one_append_and_commits_everywhere() -> None:
    h = Harness(IDS)
    h.elect("a")
    proposed = h.cores["a"].propose([_set(i) for i in range(10)])
    assert proposed == Proposed(1, 2, 11)
    h.drain("a")
    appends = [m for m in h.inflight if isinstance(m, AppendEntries)]
    assert len(appends) == 2
    assert all(len(m.entries) == 10 for m in appends)
    h.stabilize()
    for node in IDS:
        assert [e.seq for e in h.applied[node]] == list(range(1, 12))


def test_batches_respect_the_entry_limit() -> None:
    h = Harness(IDS, config=CoreConfig(max_batch_entries=3, max_inflight=2))
    h.elect("a")
    h.cores["a"].propose([_set(i) for i in range(10)])
    h.drain("a")
    to_b = [m for m in h.take() if m.to == "b" and isinstance(m, AppendEntries)]
    assert [[e.seq for e in m.entries] for m in to_b] == [[2, 3, 4], [5, 6, 7]]  # 2 in flight


def test_commit_needs_a_majority_not_all() -> None:
    h = Harness(IDS)
    h.elect("a")
    h.down.add("c")
    h.cores["a"].propose([_set(1)])
    h.stabilize()
    assert h.cores["a"].commit == 2
    assert [e.seq for e in h.applied["b"]][-1] <= 2


def test_no_commit_without_a_majority() -> None:
    h = Harness(IDS)
    h.elect("a")
    h.down.update({"b", "c"})
    h.cores["a"].propose([_set(1)])
    h.stabilize()
    assert h.cores["a"].commit == 1


def test_old_term_entries_are_committed_only_through_an_own_term_entry() -> None:
    # a leads term 3 with an uncommitted term-2 entry at 2 that b also holds.
    state = CoreState(term=3, vote="a", commit=1, entries=_log(1, 2))
    h = Harness(IDS, states={"a": state, "b": CoreState(term=3, commit=1, entries=_log(1, 2))})
    h.elect("a")
    a = h.cores["a"]
    assert a.log.entry(3) == Entry(3, a.term, StartNewTerm())
    assert a.commit == 3  # committed via the StartNewTerm of its own term


def test_commit_is_not_counted_for_an_old_term_entry() -> None:
    state = CoreState(term=2, commit=1, entries=_log(1, 2))
    a = RaftCore("a", IDS, rng=random.Random(0), state=state)
    while a.role is Role.FOLLOWER:
        a.tick()
    a.step(PreVoteResponse("b", "a", 2, True, ext=True))
    a.step(VoteResponse("b", "a", 3, True, ext=True))
    assert a.role is Role.LEADER
    assert a.log.entry(3) == Entry(3, 3, StartNewTerm())
    a.advance(a.ready())
    a.step(AppendEntriesResponse("b", "a", 3, True, match_seq=2, ext=True))
    assert a.commit == 1  # seq 2 is from term 2: counting replicas does not commit it
    a.step(AppendEntriesResponse("b", "a", 3, True, match_seq=3, ext=True))
    assert a.commit == 3  # the own-term StartNewTerm commits it and everything before


def test_follower_truncates_a_conflicting_uncommitted_suffix() -> None:
    follower = RaftCore(
        "b", IDS, rng=random.Random(0), state=CoreState(term=2, commit=1, entries=_log(1, 2, 2))
    )
    new = (Entry(2, 3, StartNewTerm()), Entry(3, 3, _set(9)))
    follower.step(AppendEntries("a", "b", 3, 2, new[0].command, 1, True, 1, 1, new))
    ready = follower.ready()
    assert ready.truncate_from == 2
    assert ready.entries == new
    assert ready.messages == (AppendEntriesResponse("b", "a", 3, True, 3, True, 0),)
    follower.advance(ready)


def test_follower_never_truncates_committed_entries() -> None:
    state = CoreState(term=2, commit=2, entries=_log(1, 2))
    follower = RaftCore("b", IDS, rng=random.Random(0), state=state)
    stale = (Entry(2, 3, _set(7)),)
    # Entries at or below the commit are known to match: they are skipped, never replaced.
    follower.step(AppendEntries("a", "b", 3, 2, stale[0].command, 2, True, 1, 1, stale))
    ready = follower.ready()
    assert ready.truncate_from is None
    assert not ready.entries
    assert ready.messages == (AppendEntriesResponse("b", "a", 3, True, 2, True, 0),)
    assert follower.log.entry(2) == _log(1, 2)[1]


def test_mismatch_is_rejected_with_a_hint_that_skips_the_conflicting_term() -> None:
    follower = RaftCore(
        "b", IDS, rng=random.Random(0), state=CoreState(term=3, commit=1, entries=_log(1, 2, 2, 2))
    )
    entry = (Entry(5, 4, _set(5)),)
    follower.step(AppendEntries("a", "b", 4, 5, entry[0].command, 1, True, 4, 3, entry))
    (reply,) = follower.ready().messages
    assert reply == AppendEntriesResponse("b", "a", 4, False, 0, True, reject_hint=1)


def test_lagging_follower_catches_up_from_the_log_then_by_snapshot_when_compacted() -> None:
    h = Harness(IDS)
    h.elect("a")
    h.down.add("c")
    for i in range(5):
        h.cores["a"].propose([_set(i)])
        h.stabilize()
    h.down.discard("c")
    for _ in range(3):  # a second heartbeat without progress makes the leader probe again
        h.tick("a", 2)
        h.stabilize()
    assert h.cores["c"].applied == h.cores["a"].commit
    assert not any(isinstance(m, InstallSnapshot) for r in h.readies["a"] for m in r.messages)
    h.down.add("c")
    for i in range(5):
        h.cores["a"].propose([_set(10 + i)])
        h.stabilize()
    a = h.cores["a"]
    a.compact(a.applied, h.machines["a"].snapshot(a.applied))
    h.down.discard("c")
    for _ in range(3):
        h.tick("a", 2)
        h.stabilize()
    sent = [m for r in h.readies["a"] for m in r.messages if isinstance(m, InstallSnapshot)]
    assert [m.to for m in sent] == ["c"]
    assert h.cores["c"].applied == a.commit
    assert h.machines["c"].elements() == h.machines["a"].elements()


def test_heartbeat_commit_is_capped_at_the_followers_match() -> None:
    h = Harness(IDS)
    h.elect("a")
    h.down.add("c")
    h.cores["a"].propose([_set(1)])
    h.stabilize()
    h.down.discard("c")
    h.tick("a", 2)
    beats = [m for m in h.inflight if isinstance(m, Heartbeat)]
    assert {m.to: m.commit_seq for m in beats} == {"b": 2, "c": 1}


def test_restore_entries_derives_terms_from_start_new_term_markers() -> None:
    records = [
        (3, _set(3), None),
        (4, StartNewTerm(), 5),
        (5, _set(5), None),
        (6, StartNewTerm(), 7),
    ]
    assert [e.term for e in restore_entries(records, base_term=2)] == [2, 5, 5, 7]


def test_restarted_node_rejoins_with_its_persisted_log() -> None:
    h = Harness(IDS)
    h.elect("a")
    h.cores["a"].propose([_set(1), _set(2)])
    h.stabilize()
    b = h.cores["b"]
    state = CoreState(b.term, b.vote, b.commit, b.log.snapshot, list(b.log.entries))
    h.cores["b"] = RaftCore("b", IDS, rng=random.Random(1), state=state)
    h.cores["a"].propose([_set(3)])
    h.tick("a", 2)
    h.stabilize()
    assert h.cores["b"].commit == h.cores["a"].commit == 4
    assert h.cores["b"].role is Role.FOLLOWER


def test_snapshot_install_keeps_a_matching_suffix_for_dref_leaders() -> None:
    follower = RaftCore(
        "b", IDS, rng=random.Random(0), state=CoreState(term=2, commit=1, entries=_log(1, 2, 2))
    )
    follower.step(InstallSnapshot("a", "b", 2, ClusterSnapshot(), 2, True, 2))
    ready = follower.ready()
    assert ready.snapshot is not None
    assert ready.snapshot.seq == 2
    assert ready.truncate_from is None
    assert follower.log.last_seq == 3
