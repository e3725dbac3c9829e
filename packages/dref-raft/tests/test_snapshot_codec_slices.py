"""Snapshots are encoded and decoded a slice of entries at a time (so that no single protobuf
call holds the GIL for long), with exactly the bytes and results of one whole-message call; a
snapshot saved from the background never replaces a newer one, and a received, verified file is
renamed into place instead of being encoded again."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import pytest

from dref_raft._pb import dref_consensus_pb2
from dref_raft.errors import WireError
from dref_raft.fsm import ClusterSnapshot, SnapshotEntry, sorted_in_slices
from dref_raft.storage import SnapshotStore
from dref_raft.storage.snapshot import encode_snapshot_file
from dref_raft.storage.snapshot_files import (
    MonotonicSnapshotStore,
    spool_snapshot,
    spooled_file,
)
from dref_raft.wire import commands
from dref_raft.wire.commands import SNAPSHOT_SLICE_ENTRIES, decode_snapshot, encode_snapshot


def _snapshot(count: int, seed: int) -> ClusterSnapshot:
    rng = random.Random(seed)
    entries = tuple(
        SnapshotEntry(
            f"k{i:06d}",
            rng.randbytes(rng.choice([0, 3, 126, 127, 128, 300])),
            rng.choice([None, 1, 2**40]),
        )
        for i in range(count)
    )
    return ClusterSnapshot(entries, 77, 3)


def _whole_message(snapshot: ClusterSnapshot) -> bytes:
    msg: Any = dref_consensus_pb2.ClusterSnapshot(
        last_seq=snapshot.last_seq, last_term=snapshot.last_term
    )
    for entry in snapshot.entries:
        kv = msg.entries.add(key=entry.key, value=entry.value)
        if entry.expire_at is not None:
            kv.expireAt = entry.expire_at
    return bytes(msg.SerializeToString())


SLICE = SNAPSHOT_SLICE_ENTRIES


@pytest.mark.parametrize("count", [0, 1, SLICE - 1, SLICE, 2 * SLICE + 5])
def test_sliced_encoding_is_byte_identical_and_round_trips(count: int) -> None:
    snapshot = _snapshot(count, count)
    data = encode_snapshot(snapshot)
    assert data == _whole_message(snapshot)
    assert decode_snapshot(data) == snapshot


def test_a_truncated_snapshot_is_still_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "SNAPSHOT_SLICE_ENTRIES", 2)
    data = encode_snapshot(_snapshot(9, 1))
    with pytest.raises(WireError, match="ClusterSnapshot"):
        decode_snapshot(data[:-40])


def test_sorted_in_slices_sorts() -> None:
    rng = random.Random(5)
    names = [f"n{rng.randrange(10**9)}" for _ in range(30_000)]
    assert sorted_in_slices(names) == sorted(names)


def test_an_older_snapshot_never_replaces_a_newer_one(tmp_path: Path) -> None:
    store = MonotonicSnapshotStore(SnapshotStore(tmp_path))
    newer, older = ClusterSnapshot((), 10, 2), ClusterSnapshot((), 5, 1)
    assert store.save(newer) > 0
    assert store.save(older) == 0
    assert SnapshotStore(tmp_path).load() == newer


def test_an_adopted_file_is_renamed_into_place(tmp_path: Path) -> None:
    store = MonotonicSnapshotStore(SnapshotStore(tmp_path))
    snapshot = _snapshot(3, 9)
    received = tmp_path / "state-snapshot.part"
    received.write_bytes(encode_snapshot_file(snapshot))
    equal = ClusterSnapshot(snapshot.entries[:1] + snapshot.entries[1:], 77, 3)  # a new tuple
    for other in (equal, ClusterSnapshot(snapshot.entries, 78, 3)):
        store.adopt(received, snapshot)
        assert store.save(other) > 0
        assert received.exists(), "only the adopted snapshot itself is renamed"
    (tmp_path / "fresh").mkdir()
    store = MonotonicSnapshotStore(SnapshotStore(tmp_path / "fresh"))
    store.adopt(received, snapshot)
    assert store.save(snapshot) == len(encode_snapshot_file(snapshot))
    assert not received.exists()
    assert SnapshotStore(tmp_path / "fresh").load() == snapshot


def test_a_spooled_file_is_the_snapshot_file_with_its_size_and_sha256(tmp_path: Path) -> None:
    snapshot = _snapshot(2 * SLICE + 7, 11)
    spooled = spool_snapshot(snapshot, tmp_path / "out")
    data = (tmp_path / "out").read_bytes()
    assert data == encode_snapshot_file(snapshot)
    assert (spooled.size, spooled.sha256) == (len(data), hashlib.sha256(data).digest())


def test_the_saved_file_is_linked_for_streaming_only_when_it_holds_that_snapshot(
    tmp_path: Path,
) -> None:
    store = MonotonicSnapshotStore(SnapshotStore(tmp_path))
    out = tmp_path / "outgoing"
    assert not store.link_saved(out, 3, 1), "nothing saved yet"
    first = _snapshot(5, 12)
    first = ClusterSnapshot(first.entries, 3, 1)
    store.save(first)
    assert not store.link_saved(out, 3, 2), "another term"
    assert store.link_saved(out, 3, 1)
    spooled = spooled_file(out, 3, 1)
    data = encode_snapshot_file(first)
    assert (spooled.size, spooled.sha256) == (len(data), hashlib.sha256(data).digest())
    store.save(ClusterSnapshot(first.entries[:2], 9, 1))
    assert out.read_bytes() == data, "a newer save leaves the linked file's bytes alone"
    assert not store.link_saved(out, 3, 1)
    # A store over a file saved earlier (a member's boot) knows what that file holds.
    assert MonotonicSnapshotStore(SnapshotStore(tmp_path), (9, 1)).link_saved(out, 9, 1)
    assert out.read_bytes() == (tmp_path / "state-snapshot").read_bytes()
