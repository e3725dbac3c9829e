"""`state-snapshot` (magic DRFS): the state machine at `last_seq`
(docs/protocol.md#storage-snapshot).

Layout: "DRFS" · version 01 · payload length N (4, BE signed) · N bytes of protobuf
`ClusterSnapshot` (entries + last_seq).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from dref_raft.bulk import paused_gc
from dref_raft.errors import CorruptStateError, WireError
from dref_raft.fsm import ClusterSnapshot
from dref_raft.storage._binary import (
    I32,
    check_length,
    check_preamble,
    check_u63,
    preamble,
    read_i32,
    require,
)
from dref_raft.storage.layout import MAX_U63, PREAMBLE_SIZE, SNAPSHOT_FILE, SNAPSHOT_MAGIC
from dref_raft.storage.media import FileMedium, InMemoryFile, Medium, MemoryMedium
from dref_raft.wire.commands import decode_snapshot, encode_snapshot

__all__ = [
    "InMemorySnapshotStore",
    "SnapshotStorage",
    "SnapshotStore",
    "decode_snapshot_file",
    "encode_snapshot_file",
]

_LENGTH_OFFSET = PREAMBLE_SIZE
_PAYLOAD_OFFSET = _LENGTH_OFFSET + 4


def encode_snapshot_file(snapshot: ClusterSnapshot) -> bytes:
    """The exact bytes of a `state-snapshot` file."""
    check_u63("last_seq", snapshot.last_seq)
    with paused_gc():
        payload = encode_snapshot(snapshot)
    check_length("the snapshot", len(payload))
    return preamble(SNAPSHOT_MAGIC) + I32.pack(len(payload)) + payload


def decode_snapshot_file(data: bytes, path: str) -> ClusterSnapshot:
    """Parse a `state-snapshot` file; anything unexpected raises `CorruptStateError`."""
    check_preamble(data, SNAPSHOT_MAGIC, path)
    require(data, _LENGTH_OFFSET, 4, "the payload length", path)
    length = read_i32(data, _LENGTH_OFFSET)
    if length < 0:
        raise CorruptStateError(path, _LENGTH_OFFSET, f"negative payload length {length}")
    require(data, _PAYLOAD_OFFSET, length, "the ClusterSnapshot payload", path)
    end = _PAYLOAD_OFFSET + length
    if len(data) != end:
        raise CorruptStateError(path, end, f"{len(data) - end} unexpected bytes after the payload")
    try:
        with paused_gc():
            snapshot = decode_snapshot(data[_PAYLOAD_OFFSET:end])
    except WireError as exc:
        raise CorruptStateError(path, _PAYLOAD_OFFSET, str(exc)) from exc
    if snapshot.last_seq > MAX_U63:
        raise CorruptStateError(path, _PAYLOAD_OFFSET, f"last_seq {snapshot.last_seq} is too large")
    return snapshot


class SnapshotStorage(Protocol):
    """What the node needs from a snapshot store."""

    def load(self) -> ClusterSnapshot | None:
        """The saved snapshot, or None when there is none."""
        ...

    def save(self, snapshot: ClusterSnapshot) -> int:
        """Persist `snapshot` durably before returning; the bytes written."""
        ...


class _SnapshotStoreBase:
    def __init__(self, medium: Medium) -> None:
        self._medium = medium

    def load(self) -> ClusterSnapshot | None:
        """The saved snapshot, or None when there is none."""
        data = self._medium.read()
        return None if data is None else decode_snapshot_file(data, self._medium.name)

    def save(self, snapshot: ClusterSnapshot) -> int:
        """Persist `snapshot` durably (atomic whole-file replace) before returning; the bytes
        written."""
        data = encode_snapshot_file(snapshot)
        self._medium.replace(data)
        return len(data)


class SnapshotStore(_SnapshotStoreBase):
    """`<directory>/state-snapshot` on disk."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / SNAPSHOT_FILE
        super().__init__(FileMedium(self.path))


class InMemorySnapshotStore(InMemoryFile, _SnapshotStoreBase):
    """The same store over bytes in memory; `contents` is what the file would hold."""

    def __init__(self, contents: bytes | None = None) -> None:
        self._memory = MemoryMedium(f"<memory>/{SNAPSHOT_FILE}", contents)
        super().__init__(self._memory)
