"""The `Ready` applier's order: what leaves before a node's own persist, and what waits for it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pytest
from raft_helpers import count_syncs

from dref_raft.apply import TRUNCATE_LOG_EVERY, ReadyApplier, StoreWriter
from dref_raft.commands import SetElement
from dref_raft.core import (
    AppendEntries,
    AppendEntriesResponse,
    CoreConfig,
    Message,
    Ready,
    Vote,
    VoteResponse,
)
from dref_raft.core.types import Entry, HardState
from dref_raft.fsm import StateMachine
from dref_raft.simulation.harness import Harness
from dref_raft.storage import LogRecord, open_stores
from dref_raft.storage.recovery import boot

IDS = ["a", "b", "c"]


class _Recording(StoreWriter):
    """Memory-only writer that records, per persist, what was already sent by then."""

    def __init__(self, harness: Harness, node: str) -> None:
        core = harness.cores[node]
        super().__init__(None, term=core.term, vote=core.vote, commit=core.commit)
        self.harness, self.node = harness, node
        self.sent_before: list[list[Message]] = []
        self.commit_during: list[int] = []
        self.during: list[object] = []

    def persist(self, ready: Ready, records: Sequence[LogRecord] | None = None) -> None:
        if ready.entries or ready.hard_state:
            self.sent_before.append([m for m in self.harness.inflight if m.sender == self.node])
            self.commit_during.append(self.harness.cores[self.node].commit)
            for hook in self.during:
                hook()  # type: ignore[operator]
        super().persist(ready, records)


def _record(h: Harness, node: str) -> _Recording:
    writer = _Recording(h, node)
    applier = h._applier(node)
    h._appliers[node] = ReadyApplier(
        applier.core, applier.machine, writer, applier.effects, snapshot_every=0
    )
    return writer


def _set(n: int) -> SetElement:
    return SetElement("k", str(n).encode())


def test_the_leader_sends_its_entries_before_its_own_persist() -> None:
    h = Harness(IDS)
    h.elect("a")
    writer = _record(h, "a")
    seq = h.cores["a"].propose([_set(1)]).last_seq  # type: ignore[union-attr]
    h.drain("a")
    early = writer.sent_before[-1]
    appends = [m for m in early if isinstance(m, AppendEntries)]
    assert sorted(m.to for m in appends) == ["b", "c"]
    assert all(m.entries[-1].seq == seq for m in appends)


def test_the_leader_counts_itself_only_after_its_persist() -> None:
    """While the leader persists, a follower already holds the entry and acknowledges it;
    the leader's commit does not move before its own persist returned."""
    h = Harness(IDS)
    h.elect("a")
    writer = _record(h, "a")
    acks: list[Message] = []

    def follower_acks_meanwhile() -> None:
        for msg in h.take(lambda m: isinstance(m, AppendEntries) and m.to == "b"):
            h.cores["b"].step(msg)
            h.drain("b")
        acks.extend(h.take(lambda m: isinstance(m, AppendEntriesResponse)))

    writer.during.append(follower_acks_meanwhile)
    seq = h.cores["a"].propose([_set(1)]).last_seq  # type: ignore[union-attr]
    h.drain("a")
    writer.during.clear()
    assert [m.match_seq for m in acks] == [seq]  # b acknowledged during a's persist
    assert writer.commit_during[-1] < seq
    # The acknowledgement reaches the core only after advance (the driver queues it).
    assert h.cores["a"].commit < seq
    for ack in acks:
        h.deliver(ack)
    assert h.cores["a"].commit == seq


def test_a_follower_acknowledges_only_after_its_persist() -> None:
    h = Harness(IDS)
    h.elect("a")
    writer = _record(h, "b")
    h.cores["a"].propose([_set(1)])
    h.drain("a")
    for msg in h.take(lambda m: isinstance(m, AppendEntries) and m.to == "b"):
        h.deliver(msg)
    assert writer.sent_before
    assert not any(isinstance(m, AppendEntriesResponse) for m in writer.sent_before[-1])
    assert any(isinstance(m, AppendEntriesResponse) and m.sender == "b" for m in h.inflight)


def test_votes_and_requests_of_a_new_term_wait_for_the_persist() -> None:
    h = Harness(IDS, config=CoreConfig(pre_vote=False, check_quorum=False))
    h.elect("a")
    voter = _record(h, "b")
    candidate = _record(h, "c")
    core_c = h.cores["c"]
    for _ in range(3 * h.config.max_election_ticks):
        core_c.tick()
        h.drain("c")
        if any(isinstance(m, Vote) for m in h.inflight):
            break
    # Its term changed: the Vote requests were not sent before the candidate's persist.
    assert candidate.sent_before
    assert not any(isinstance(m, Vote) for m in candidate.sent_before[-1])
    for msg in h.take(lambda m: isinstance(m, Vote) and m.to == "b"):
        h.deliver(msg)
    assert voter.sent_before
    assert not any(isinstance(m, VoteResponse) for m in voter.sent_before[-1])


def test_early_messages_are_none_when_the_term_or_vote_changes() -> None:
    h = Harness(IDS)
    h.elect("a")
    applier = h._applier("a")
    core = h.cores["a"]
    append = AppendEntries("a", "b", core.term, 1, _set(1), 0, True, 0, 0, ())
    same = Ready(messages=(append,), hard_state=HardState(core.term, core.vote, 5))
    assert applier.early_messages(same) == (append,)
    newer = Ready(messages=(append,), hard_state=HardState(core.term + 1, None, 5))
    assert applier.early_messages(newer) == ()


def test_a_batch_with_a_commit_costs_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower's batch (entries + the commit it learned with them) is one fsync; a commit
    alone is none (it rides on the next append's)."""
    stores = open_stores(tmp_path)
    writer = StoreWriter(stores, term=1, vote="a", commit=0)
    writer.persist(Ready(entries=(Entry(1, 1, _set(0)),), hard_state=HardState(1, "a", 0)))
    calls = count_syncs(monkeypatch)
    batch = tuple(Entry(s, 1, _set(s)) for s in range(2, 12))
    writer.persist(Ready(entries=batch, hard_state=HardState(1, "a", 6)))
    assert len(calls) == 1
    writer.persist(Ready(hard_state=HardState(1, "a", 11)))
    assert len(calls) == 1
    monkeypatch.undo()
    contents = stores.command_log.load()
    assert contents.commit_seq == 11
    assert [r.seq for r in contents.records] == list(range(1, 12))


def test_own_snapshots_truncate_the_log_file_every_few_and_boot_skips_covered_entries(
    tmp_path: Path,
) -> None:
    stores = open_stores(tmp_path)
    machine = StateMachine()
    writer = StoreWriter(stores, term=1, vote="a", commit=0)
    seq = 0
    for round_ in range(1, TRUNCATE_LOG_EVERY + 1):
        batch = []
        for _ in range(5):
            seq += 1
            batch.append(Entry(seq, 1, _set(seq)))
            machine.apply(batch[-1].command)
        writer.persist(Ready(entries=tuple(batch), hard_state=HardState(1, "a", seq)))
        writer.save_snapshot(dataclasses.replace(machine.snapshot(seq), last_term=1))
        records = [r.seq for r in stores.command_log.load().records]
        if round_ < TRUNCATE_LOG_EVERY:
            assert records == list(range(1, seq + 1))  # covered entries stay in the file
            booted, state = boot(stores)
            assert booted.snapshot(seq) == machine.snapshot(seq)
            assert state.commit == seq
        else:
            assert records == []
    booted, state = boot(stores)
    assert booted.snapshot(seq) == machine.snapshot(seq)
    assert state.commit == seq
