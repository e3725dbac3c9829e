"""A compaction that keeps the last entries its snapshot covers (`RaftCore.compact(keep=)`,
docs/raft.md#large-state): the log's base stays below the snapshot, and a follower between
the two is sent entries, not the snapshot."""

from __future__ import annotations

import random

import pytest

from dref_raft.commands import SetElement
from dref_raft.core import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    PreVoteResponse,
    RaftCore,
    Role,
    Snapshot,
    VoteResponse,
)
from dref_raft.core.log import RaftLog
from dref_raft.core.types import EMPTY_SNAPSHOT
from dref_raft.fsm import ClusterSnapshot


def _entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(seq, term, SetElement(f"k{seq}", b"v")) for seq in range(first, last + 1)]


def test_a_compaction_keeps_the_last_entries_its_snapshot_covers() -> None:
    log = RaftLog(EMPTY_SNAPSHOT, _entries(1, 10))
    log.compact(Snapshot(8, 1, ClusterSnapshot((), 8)), keep=3)
    assert (log.snapshot.seq, log.base_seq, log.last_seq) == (8, 5, 10)
    assert [log.term_at(s) for s in (4, 5, 6, 8, 10, 11)] == [None, 1, 1, 1, 1, None]
    assert [e.seq for e in log.slice(6, 9)] == [6, 7, 8, 9]
    assert log.entry(6).seq == 6
    # The next compaction moves the base on; never back, never past what is held.
    log.append(_entries(11, 20))
    log.compact(Snapshot(18, 1, ClusterSnapshot((), 18)), keep=3)
    assert (log.base_seq, log.entry(16).seq) == (15, 16)
    log.compact(Snapshot(19, 1, ClusterSnapshot((), 19)), keep=100)
    assert (log.snapshot.seq, log.base_seq) == (19, 15)
    log.compact(Snapshot(12, 1, ClusterSnapshot((), 12)), keep=0)  # older: ignored
    assert (log.snapshot.seq, log.base_seq) == (19, 15)
    # An uncommitted suffix goes as before; a snapshot install rebases on it.
    log.truncate_after(19)
    assert (log.last_seq, log.truncate_from) == (19, 20)
    log.restore(Snapshot(30, 2, ClusterSnapshot((), 30)), keep_suffix=False)
    assert (log.base_seq, log.last_seq, log.last_term, log.term_at(30)) == (30, 30, 2, 2)


def _leader() -> RaftCore:
    """`a` leads term 1 over `b` and `c`, which acknowledged seq 1 (its StartNewTerm)."""
    a = RaftCore("a", ("a", "b", "c"), rng=random.Random(0))
    while a.role is not Role.CANDIDATE:
        a.tick()
        if a.role is Role.PRE_CANDIDATE:
            a.step(PreVoteResponse("b", "a", 0, True, ext=True))
    a.step(VoteResponse("b", "a", 1, True, ext=True))
    a.advance(a.ready())
    for peer in ("b", "c"):
        a.step(AppendEntriesResponse(peer, "a", 1, True, match_seq=1, ext=True))
    a.advance(a.ready())
    return a


@pytest.mark.parametrize(("keep", "sent"), [(0, InstallSnapshot), (20, AppendEntries)])
def test_a_follower_behind_the_snapshot_but_not_the_base_gets_entries(
    keep: int, sent: type
) -> None:
    a = _leader()
    a.propose([SetElement(f"x{i}", b"v") for i in range(10)])
    ready = a.ready()
    a.advance(ready)
    a.step(AppendEntriesResponse("b", "a", 1, True, match_seq=a.log.last_seq, ext=True))
    ready = a.ready()
    a.advance(ready)
    assert a.applied == a.log.last_seq == 11
    a.compact(11, ClusterSnapshot((), 11), keep=keep)
    assert a.log.snapshot.seq == 11
    # `c` lost everything after seq 1: it rejects the next append and is probed from 1.
    a.step(AppendEntriesResponse("c", "a", 1, False, match_seq=0, ext=True, reject_hint=1))
    ready = a.ready()
    a.advance(ready)
    to_c = [m for m in ready.messages if m.to == "c"]
    assert to_c
    assert isinstance(to_c[0], sent)
    if sent is AppendEntries:
        assert to_c[0].prev_seq == 1
