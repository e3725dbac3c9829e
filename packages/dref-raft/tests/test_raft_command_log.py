"""`command-log` (DRFL): golden bytes, operations, torn tails and corruption
(docs/protocol.md#golden-command-log, #storage-command-log)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from raft_helpers import U63, NodeStorage, count_syncs, load_vectors

from dref_raft.storage import (
    CommandLogStorage,
    CommandLogStore,
    CorruptStateError,
    LogRecord,
    media,
)
from dref_raft.storage.command_log import (
    decode_command_log,
    encode_log_header,
    encode_log_record,
)
from dref_raft.storage.layout import COMMAND_LOG_FILE

VECTORS = {v["name"]: v for v in load_vectors("command_log_vectors")["vectors"]}
PAYLOAD = bytes.fromhex(VECTORS["single_set_element_record"]["command_payload_hex"])


def log_bytes(commit_seq: int, *records: tuple[int, bytes]) -> bytes:
    return encode_log_header(commit_seq) + b"".join(
        encode_log_record(LogRecord(s, c)) for s, c in records
    )


def test_golden_empty_header() -> None:
    v = VECTORS["empty_header"]
    assert encode_log_header(v["commit_seq"]).hex() == v["hex"]
    contents = decode_command_log(bytes.fromhex(v["hex"]), "command-log")
    assert (contents.commit_seq, contents.records, contents.discarded_bytes) == (0, (), 0)


def test_golden_single_record() -> None:
    v = VECTORS["single_set_element_record"]
    data = bytes.fromhex(v["hex"])
    assert log_bytes(v["commit_seq"], (v["seq"], PAYLOAD)) == data
    contents = decode_command_log(data, "command-log")
    assert contents.commit_seq == 0
    assert contents.records == (LogRecord(1, PAYLOAD),)
    assert contents.offsets == {1: 13}


def test_a_store_writes_the_golden_bytes(node: NodeStorage) -> None:
    log = node.command_log()
    log.set_commit_seq(0)
    assert node.read(COMMAND_LOG_FILE) == bytes.fromhex(VECTORS["empty_header"]["hex"])
    log.append(1, PAYLOAD)
    assert node.read(COMMAND_LOG_FILE) == bytes.fromhex(VECTORS["single_set_element_record"]["hex"])


def test_a_missing_file_is_an_empty_log(node: NodeStorage) -> None:
    contents = node.command_log().load()
    assert (contents.exists, contents.commit_seq, contents.records) == (False, 0, ())
    assert node.command_log().entries(1) == []
    node.command_log().truncate_through(5)
    node.command_log().truncate_from(1)
    assert node.read(COMMAND_LOG_FILE) is None  # nothing to truncate, nothing created


def test_appends_and_commit_survive_a_restart(node: NodeStorage) -> None:
    log = node.command_log()
    log.append(1, b"a")
    log.append(2, b"bb")
    log.set_commit_seq(2)
    contents = node.command_log().load()
    assert contents.commit_seq == 2
    assert contents.records == (LogRecord(1, b"a"), LogRecord(2, b"bb"))
    assert contents.last_seq == 2


def test_truncate_through_drops_the_prefix_and_lowers_commit(node: NodeStorage) -> None:
    log = node.command_log()
    log.append_many([LogRecord(1, b"a"), LogRecord(2, b"b"), LogRecord(3, b"c")])
    log.set_commit_seq(2)
    log.truncate_through(1)
    contents = node.command_log().load()
    assert (contents.commit_seq, contents.records) == (1, (LogRecord(2, b"b"), LogRecord(3, b"c")))
    node.command_log().truncate_through(10)
    assert node.command_log().load().records == ()


def test_truncate_from_drops_the_uncommitted_suffix_and_keeps_commit(node: NodeStorage) -> None:
    log = node.command_log()
    log.append_many([LogRecord(s, bytes([s])) for s in (1, 2, 3, 4)])
    log.set_commit_seq(2)
    log.truncate_from(3)
    contents = node.command_log().load()
    assert contents.commit_seq == 2
    assert [r.seq for r in contents.records] == [1, 2]
    # appends continue right after the rewrite
    node.command_log().append(3, b"new")
    assert node.command_log().entries(3) == [LogRecord(3, b"new")]


def test_truncate_from_refuses_to_drop_committed_records(node: NodeStorage) -> None:
    log = node.command_log()
    log.append_many([LogRecord(1, b"a"), LogRecord(2, b"b")])
    log.set_commit_seq(2)
    before = node.read(COMMAND_LOG_FILE)
    with pytest.raises(ValueError, match="committed"):
        log.truncate_from(2)
    assert node.read(COMMAND_LOG_FILE) == before


def test_entries_reads_an_inclusive_range(node: NodeStorage) -> None:
    log = node.command_log()
    log.append_many([LogRecord(s, bytes([s])) for s in range(1, 8)])
    assert [r.seq for r in log.entries(3, 5)] == [3, 4, 5]
    assert [r.seq for r in log.entries(6)] == [6, 7]
    assert log.entries(9) == []


def test_duplicate_seqs_keep_the_later_record_and_order_is_by_seq(node: NodeStorage) -> None:
    node.write(COMMAND_LOG_FILE, log_bytes(0, (2, b"x"), (1, b"a"), (2, b"y")))
    contents = node.command_log().load()
    assert contents.records == (LogRecord(1, b"a"), LogRecord(2, b"y"))
    assert contents.offsets[2] == 13 + 13 + 13  # the later record
    node.command_log().truncate_through(0)  # a rewrite sorts and de-duplicates
    assert node.read(COMMAND_LOG_FILE) == log_bytes(0, (1, b"a"), (2, b"y"))


@pytest.mark.parametrize("seq", [0, -1, 2**63])
def test_invalid_seqs_are_refused_before_anything_is_written(node: NodeStorage, seq: int) -> None:
    log = node.command_log()
    log.append(1, b"a")
    before = node.read(COMMAND_LOG_FILE)
    with pytest.raises(ValueError, match="seq"):
        log.append_many([LogRecord(2, b"b"), LogRecord(seq, b"c")])
    assert node.read(COMMAND_LOG_FILE) == before


def test_group_commit_appends_many_records_with_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = CommandLogStore(tmp_path)
    log.set_commit_seq(0)
    calls = count_syncs(monkeypatch)
    log.append_many([LogRecord(s, b"x" * s) for s in range(1, 101)])
    assert len(calls) == 1
    log.append(101, b"y")
    log.set_commit_seq(101)
    assert len(calls) == 3  # every append and every commit update is synced before returning
    assert [r.seq for r in CommandLogStore(tmp_path).load().records] == list(range(1, 102))


def test_a_torn_final_record_is_ignored_and_reported(node: NodeStorage) -> None:
    whole = log_bytes(1, (1, b"one"), (2, b"two"))
    torn = whole + encode_log_record(LogRecord(3, b"three"))[:9]
    node.write(COMMAND_LOG_FILE, torn)
    contents = node.command_log().load()
    assert contents.records == (LogRecord(1, b"one"), LogRecord(2, b"two"))
    assert contents.discarded_bytes == 9
    assert contents.valid_length == len(whole)
    assert node.read(COMMAND_LOG_FILE) == torn  # a load never writes


def test_the_next_append_cuts_off_a_torn_record(node: NodeStorage) -> None:
    whole = log_bytes(1, (1, b"one"))
    node.write(COMMAND_LOG_FILE, whole + b"\x00\x00\x00\x00\x00")
    node.command_log().append(2, b"two")  # a fresh process, no load first
    assert node.read(COMMAND_LOG_FILE) == whole + encode_log_record(LogRecord(2, b"two"))
    contents = node.command_log().load()
    assert [r.seq for r in contents.records] == [1, 2]
    assert contents.discarded_bytes == 0


@pytest.mark.parametrize("zeros", [1, 12, 13, 40])
def test_a_zero_filled_tail_is_a_torn_record(node: NodeStorage, zeros: int) -> None:
    # after a power loss the file may have grown by the in-flight append without its data
    whole = log_bytes(1, (1, b"one"))
    node.write(COMMAND_LOG_FILE, whole + bytes(zeros))
    contents = node.command_log().load()
    assert (contents.records, contents.discarded_bytes) == ((LogRecord(1, b"one"),), zeros)


def test_a_seq_0_record_followed_by_data_is_corruption(node: NodeStorage) -> None:
    data = log_bytes(0, (1, b"a")) + bytes(12) + encode_log_record(LogRecord(2, b"b"))
    node.write(COMMAND_LOG_FILE, data)
    with pytest.raises(CorruptStateError, match="seq 0") as caught:
        node.command_log().load()
    assert caught.value.offset == 13 + 13


@given(
    U63,
    st.lists(st.tuples(st.integers(1, 2**63 - 1), st.binary(max_size=10)), max_size=8),
)
def test_every_log_round_trips(commit_seq: int, records: list[tuple[int, bytes]]) -> None:
    contents = decode_command_log(log_bytes(commit_seq, *records), "command-log")
    latest = dict(records)  # later duplicates win
    assert contents.commit_seq == commit_seq
    assert contents.records == tuple(LogRecord(s, latest[s]) for s in sorted(latest))
    assert contents.discarded_bytes == 0


GOOD = log_bytes(3, (1, b"a"), (2, b"bb"), (3, b"ccc"))


@pytest.mark.parametrize(
    ("data", "offset", "reason"),
    [
        (b"DRFS" + GOOD[4:], 0, "bad magic"),
        (b"", 0, "bad magic"),
        (GOOD[:4] + b"\x00" + GOOD[5:], 4, "unknown format version 0"),
        (GOOD[:4], 4, "truncated header"),
        (GOOD[:12], 12, "truncated"),
        (GOOD[: 13 + 13 + 8] + bytes.fromhex("fffffff0") + GOOD[13 + 13 + 12 :], 34, "negative"),
        (GOOD[:5] + bytes.fromhex("ffffffffffffffff") + GOOD[13:], 5, "commit_seq"),
        (GOOD[:13] + bytes.fromhex("8000000000000001") + GOOD[21:], 13, "seq"),
    ],
    ids=[
        "bad-magic",
        "empty-file",
        "unknown-version",
        "truncated-magic-version",
        "truncated-commit-seq",
        "negative-length",
        "commit-seq-too-large",
        "seq-too-large",
    ],
)
def test_a_corrupt_log_raises_and_is_left_untouched(
    node: NodeStorage, data: bytes, offset: int, reason: str
) -> None:
    node.write(COMMAND_LOG_FILE, data)
    with pytest.raises(CorruptStateError, match=reason) as caught:
        node.command_log().load()
    assert caught.value.path.endswith(COMMAND_LOG_FILE)
    assert caught.value.offset == offset
    # writes refuse to touch a file they cannot read either
    writes: list[Callable[[CommandLogStorage], None]] = [
        lambda log: log.append(9, b"x"),
        lambda log: log.set_commit_seq(1),
        lambda log: log.truncate_through(1),
        lambda log: log.truncate_from(9),
    ]
    for write in writes:
        with pytest.raises(CorruptStateError):
            write(node.command_log())
    assert node.read(COMMAND_LOG_FILE) == data


def test_appends_reuse_one_open_file_and_follow_a_rewrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file stays open between appends (one sync each); after a rewrite (truncation)
    appends go to the new file, and after `close` the next append opens it again."""
    log = CommandLogStore(tmp_path)
    log.append(1, b"a")
    calls = count_syncs(monkeypatch)
    opened: list[object] = []

    def counting_open(*args: Any, **kwargs: Any) -> Any:
        opened.append(args[0])
        return open(*args, **kwargs)

    monkeypatch.setattr(media, "open", counting_open, raising=False)
    log.append(2, b"b")
    log.append(3, b"c")
    assert len(calls) == 2
    assert opened == []  # the descriptor of the first append, still open
    log.truncate_from(3)  # a rewrite: renames a new file over the old one
    log.append(3, b"C")
    log.truncate_through(1)
    log.append(4, b"d")
    log.close()
    log.append(5, b"e")
    log.close()
    assert CommandLogStore(tmp_path).load().records == (
        LogRecord(2, b"b"),
        LogRecord(3, b"C"),
        LogRecord(4, b"d"),
        LogRecord(5, b"e"),
    )


def test_close_waits_for_an_append_running_in_another_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver closes the log while a worker thread may still be syncing an append: the
    close waits, and the append completes on the descriptor it started with."""
    log = CommandLogStore(tmp_path)
    log.append(1, b"a")
    syncing, release = threading.Event(), threading.Event()
    real = getattr(os, "fdatasync", os.fsync)

    def slow_sync(fd: int) -> None:
        syncing.set()
        assert release.wait(10)
        real(fd)

    monkeypatch.setattr(os, "fdatasync" if hasattr(os, "fdatasync") else "fsync", slow_sync)
    with ThreadPoolExecutor(2) as pool:
        append = pool.submit(log.append, 2, b"b")
        assert syncing.wait(10)
        close = pool.submit(log.close)
        with pytest.raises(FuturesTimeout):
            close.result(timeout=0.05)  # still blocked behind the append
        release.set()
        append.result(timeout=10)
        close.result(timeout=10)
    assert [r.seq for r in CommandLogStore(tmp_path).load().records] == [1, 2]
