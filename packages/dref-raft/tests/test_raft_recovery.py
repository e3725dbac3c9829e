"""Boot recovery (docs/protocol.md#storage-recovery) from the three stores' contents, including
crashes mid-append."""

from __future__ import annotations

import pytest
from raft_helpers import NodeStorage

from dref_raft.commands import Command, DeleteElement, SetElement, SetIfNotExist
from dref_raft.fsm import ClusterSnapshot, Element, SnapshotEntry, StateMachine
from dref_raft.storage import CorruptStateError, LogContents, LogRecord, VoterState
from dref_raft.storage.command_log import decode_command_log, encode_log_header, encode_log_record
from dref_raft.storage.layout import COMMAND_LOG_FILE
from dref_raft.storage.recovery import recover
from dref_raft.wire.commands import encode_command


def log_of(commit_seq: int, *commands: tuple[int, Command | bytes]) -> LogContents:
    data = encode_log_header(commit_seq) + b"".join(
        encode_log_record(LogRecord(seq, c if isinstance(c, bytes) else encode_command(c)))
        for seq, c in commands
    )
    return decode_command_log(data, "command-log")


EMPTY_LOG = LogContents("command-log")


def test_an_empty_node_recovers_to_nothing() -> None:
    state = recover(None, EMPTY_LOG, VoterState())
    assert (state.last_seq, state.commit_seq, state.snapshot_last_seq) == (0, 0, 0)
    assert len(state.state_machine) == 0
    assert dict(state.pending) == {}
    assert (state.term, state.voted_for, state.has_persisted_vote_state) == (0, None, False)


def test_term_and_vote_come_from_the_voter_state() -> None:
    state = recover(None, EMPTY_LOG, VoterState(7, "node-3"))
    assert (state.term, state.voted_for, state.has_persisted_vote_state) == (7, "node-3", True)
    assert recover(None, EMPTY_LOG, VoterState(1, None)).has_persisted_vote_state


def test_snapshot_then_committed_entries_are_applied_and_the_rest_is_pending() -> None:
    snapshot = ClusterSnapshot((SnapshotEntry("a", b"snap"), SnapshotEntry("b", b"b0")), 2)
    log = log_of(
        4,
        (1, SetElement("a", b"old")),  # already in the snapshot: ignored
        (2, SetElement("b", b"old")),
        (3, SetElement("a", b"three")),
        (4, DeleteElement("b")),
        (5, SetElement("c", b"five")),  # not committed
        (6, SetIfNotExist("d", b"six")),
    )
    state = recover(snapshot, log, VoterState(3, None))
    assert state.snapshot_last_seq == 2
    assert state.commit_seq == 4
    assert state.last_seq == 6
    assert dict(state.state_machine.elements()) == {"a": Element(b"three")}
    assert list(state.pending) == [5, 6]
    assert state.pending[5] == encode_command(SetElement("c", b"five"))


def test_a_snapshot_ahead_of_the_log_header_sets_commit() -> None:
    snapshot = ClusterSnapshot((SnapshotEntry("a", b"1"),), last_seq=10)
    state = recover(snapshot, log_of(3, (11, SetElement("b", b"2"))), VoterState())
    assert (state.commit_seq, state.last_seq) == (10, 11)
    assert list(state.pending) == [11]


def test_a_compacted_log_with_commit_covered_by_the_snapshot_is_fine() -> None:
    # snapshot at 5 then truncate_through(5): the header keeps commit 5, the log is empty
    snapshot = ClusterSnapshot((SnapshotEntry("a", b"1"),), last_seq=5)
    state = recover(snapshot, log_of(5), VoterState())
    assert (state.commit_seq, state.last_seq) == (5, 5)


def test_a_committed_entry_missing_from_the_log_is_corruption() -> None:
    log = log_of(3, (1, SetElement("a", b"1")), (3, SetElement("c", b"3")))
    with pytest.raises(CorruptStateError, match="committed entry seq 2 is missing") as caught:
        recover(None, log, VoterState())
    assert (caught.value.path, caught.value.offset) == ("command-log", 5)


def test_a_commit_beyond_everything_stored_is_corruption() -> None:
    # upstream would take min(commit, last log seq) = 1 and silently forget seqs 2..3
    log = log_of(3, (1, SetElement("a", b"1")))
    with pytest.raises(CorruptStateError, match="commit_seq is 3 but the log ends at seq 1"):
        recover(None, log, VoterState())


def test_an_undecodable_committed_entry_is_corruption_at_its_offset() -> None:
    log = log_of(2, (1, SetElement("a", b"1")), (2, b"\xff\xff"))
    with pytest.raises(CorruptStateError, match="committed entry seq 2") as caught:
        recover(None, log, VoterState())
    assert caught.value.offset == log.offsets[2]


def test_an_undecodable_uncommitted_entry_stays_pending() -> None:
    state = recover(None, log_of(1, (1, SetElement("a", b"1")), (2, b"\xff\xff")), VoterState())
    assert dict(state.pending) == {2: b"\xff\xff"}


def test_recovery_from_real_stores_matches_the_live_state(node: NodeStorage) -> None:
    live = StateMachine()
    commands: list[Command] = [SetElement(f"k{i % 3}", bytes([i]), i * 10) for i in range(1, 9)]
    log = node.command_log()
    for seq, command in enumerate(commands, start=1):
        log.append(seq, encode_command(command))
        live.apply(command)
        log.set_commit_seq(seq)
        if seq == 5:  # snapshot, then compact, as the engine does every N applies
            node.snapshot().save(live.snapshot(last_seq=5))
            log.truncate_through(5)
    node.voter_state().save(VoterState(2, "n1"))
    state = recover(node.snapshot().load(), node.command_log().load(), node.voter_state().load())
    assert dict(state.state_machine.elements()) == dict(live.elements())
    assert (state.commit_seq, state.last_seq, state.term, state.voted_for) == (8, 8, 2, "n1")


RECORDS = [(1, SetElement("a", b"1")), (2, SetElement("b", b"2")), (3, SetElement("c", b"33"))]


@pytest.mark.parametrize("committed", [2, 3])
def test_a_crash_at_every_byte_of_the_last_record_keeps_what_was_written(
    node: NodeStorage, committed: int
) -> None:
    """Cut the log inside its last record at every offset: recovery keeps every complete
    record, loses nothing committed, and the node can go on appending."""
    full = log_of(0, *RECORDS)
    complete = encode_log_header(0)
    for seq, command in RECORDS[:-1]:
        complete += encode_log_record(LogRecord(seq, encode_command(command)))
    last = encode_log_record(LogRecord(3, encode_command(RECORDS[-1][1])))
    commit_header = encode_log_header(committed)
    for cut in range(len(last) + 1):
        data = commit_header + complete[len(commit_header) :] + last[:cut]
        node.write(COMMAND_LOG_FILE, data)
        contents = node.command_log().load()
        whole = cut == len(last)
        assert [r.seq for r in contents.records] == ([1, 2, 3] if whole else [1, 2])
        assert contents.discarded_bytes == (0 if whole else cut)
        if committed == 3 and not whole:
            # seq 3 could not have been committed before its append returned
            with pytest.raises(CorruptStateError, match="committed entries are missing"):
                recover(None, contents, VoterState())
            continue
        state = recover(None, contents, VoterState())
        assert state.commit_seq == committed
        expected = {"a": Element(b"1"), "b": Element(b"2")}
        if committed == 3:
            expected["c"] = Element(b"33")
        assert dict(state.state_machine.elements()) == expected
        assert list(state.pending) == ([3] if whole and committed == 2 else [])
        # the restarted node re-appends the lost entry; the torn bytes are cut first
        if not whole:
            node.command_log().append(3, encode_command(RECORDS[-1][1]))
            assert list(node.command_log().load().records) == list(full.records)
