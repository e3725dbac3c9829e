"""`state-snapshot` (DRFS): golden bytes, round trips and corruption
(docs/protocol.md#golden-snapshot, #storage-snapshot)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from raft_helpers import SNAPSHOTS, NodeStorage, load_vectors

from dref_raft.fsm import ClusterSnapshot, SnapshotEntry
from dref_raft.storage import CorruptStateError
from dref_raft.storage.layout import SNAPSHOT_FILE
from dref_raft.storage.snapshot import decode_snapshot_file, encode_snapshot_file

VECTORS = load_vectors("snapshot_vectors")["vectors"]


def snapshot_of(vector: dict[str, Any]) -> ClusterSnapshot:
    entries = tuple(
        SnapshotEntry(e["key"], bytes.fromhex(e["value_hex"]), e["expire_at"])
        for e in vector["entries"]
    )
    return ClusterSnapshot(entries, vector.get("last_seq", 0))


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_golden_vectors_encode_and_decode(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    assert encode_snapshot_file(snapshot_of(vector)) == data
    assert decode_snapshot_file(data, "state-snapshot") == snapshot_of(vector)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_a_store_writes_and_reads_the_golden_bytes(
    node: NodeStorage, vector: dict[str, Any]
) -> None:
    node.snapshot().save(snapshot_of(vector))
    assert node.read(SNAPSHOT_FILE) == bytes.fromhex(vector["hex"])
    assert node.snapshot().load() == snapshot_of(vector)


def test_a_missing_file_is_no_snapshot(node: NodeStorage) -> None:
    assert node.snapshot().load() is None
    assert node.read(SNAPSHOT_FILE) is None


def test_the_latest_save_wins(node: NodeStorage) -> None:
    node.snapshot().save(ClusterSnapshot((SnapshotEntry("a", b"1"),), last_seq=1))
    node.snapshot().save(ClusterSnapshot((SnapshotEntry("b", b"2", 9),), last_seq=2))
    assert node.snapshot().load() == ClusterSnapshot((SnapshotEntry("b", b"2", 9),), last_seq=2)


@given(SNAPSHOTS)
def test_every_snapshot_file_round_trips(snapshot: ClusterSnapshot) -> None:
    assert decode_snapshot_file(encode_snapshot_file(snapshot), "state-snapshot") == snapshot


GOOD = bytes.fromhex("44524653010000000a0a060a0161120101102a")  # key a, value 01, last_seq 42


@pytest.mark.parametrize(
    ("data", "offset", "reason"),
    [
        (b"XXXX" + GOOD[4:], 0, "bad magic"),
        (GOOD[:4] + b"\x07" + GOOD[5:], 4, "unknown format version 7"),
        (GOOD[:5] + bytes.fromhex("ffffffff") + GOOD[9:], 5, "negative payload length -1"),
        (GOOD[:6], 6, "truncated"),  # upstream's own truncation test
        (GOOD[:4], 4, "truncated header"),
        (GOOD[:-1], len(GOOD) - 1, "truncated"),
        (GOOD[:5] + bytes.fromhex("00000002ffff"), 9, "not a valid ClusterSnapshot"),
        (GOOD + b"\x00\x00", len(GOOD), "2 unexpected bytes"),
    ],
    ids=[
        "bad-magic",
        "unknown-version",
        "negative-length",
        "truncated-length",
        "truncated-header",
        "truncated-payload",
        "undecodable-payload",
        "trailing-bytes",
    ],
)
def test_a_corrupt_file_raises_and_is_left_untouched(
    node: NodeStorage, data: bytes, offset: int, reason: str
) -> None:
    node.write(SNAPSHOT_FILE, data)
    with pytest.raises(CorruptStateError, match=reason) as caught:
        node.snapshot().load()
    assert caught.value.path.endswith(SNAPSHOT_FILE)
    assert caught.value.offset == offset
    assert node.read(SNAPSHOT_FILE) == data
