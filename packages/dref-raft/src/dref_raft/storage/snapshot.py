"""`state-snapshot` (magic DRFS): the state machine at `last_seq`
(docs/protocol.md#storage-snapshot).

Layout: "DRFS" · version 01 · payload length N (4, BE signed) · N bytes of protobuf
`ClusterSnapshot` (entries + last_seq).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol, overload

from dref_raft.bulk import paused_gc
from dref_raft.errors import CorruptStateError, WireError
from dref_raft.fsm import ClusterSnapshot, SnapshotEntry
from dref_raft.storage._binary import (
    I32,
    check_length,
    check_preamble,
    check_u63,
    preamble,
    read_i32,
    require,
)
from dref_raft.storage.layout import (
    FORMAT_VERSION,
    MAX_U63,
    PREAMBLE_SIZE,
    SNAPSHOT_FILE,
    SNAPSHOT_MAGIC,
    TMP_SUFFIX,
)
from dref_raft.storage.media import (
    FileMedium,
    InMemoryFile,
    Medium,
    MemoryMedium,
    _ensure_directory,
    _fsync_directory,
)
from dref_raft.wire.commands import (
    SnapshotDecoder,
    decode_snapshot,
    encode_snapshot,
    encode_snapshot_parts,
)

__all__ = [
    "FileEntries",
    "InMemorySnapshotStore",
    "SnapshotStorage",
    "SnapshotStore",
    "decode_snapshot_file",
    "encode_snapshot_file",
    "read_snapshot_file",
    "write_snapshot_file",
]

_LENGTH_OFFSET = PREAMBLE_SIZE
_PAYLOAD_OFFSET = _LENGTH_OFFSET + 4
#: Bytes read (and decoded) at a time by `read_snapshot_file`.
_READ_BLOCK = 1024 * 1024


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


def write_snapshot_file(snapshot: ClusterSnapshot, path: Path, *, durable: bool) -> int:
    """Write `snapshot`'s `state-snapshot` bytes (those of `encode_snapshot_file`) to `path`
    through `<path>.tmp`, a slice of entries at a time (memory stays bounded by a slice), and
    rename it into place; `durable`: fsync the file before the rename and the directory after.
    The file's size."""
    check_u63("last_seq", snapshot.last_seq)
    _ensure_directory(path.parent)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    length = 0
    with open(tmp, "wb") as f:
        f.write(preamble(SNAPSHOT_MAGIC) + I32.pack(0))  # the length is known at the end
        with paused_gc():
            for part in encode_snapshot_parts(snapshot):
                f.write(part)
                length += len(part)
        check_length("the snapshot", length)
        f.seek(_LENGTH_OFFSET)
        f.write(I32.pack(length))
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        _fsync_directory(path.parent)
    return _PAYLOAD_OFFSET + length


def read_snapshot_file(
    path: Path,
    reuse: Mapping[str, bytes] | None = None,
    reuse_names: Sequence[str] | None = None,
    state: dict[str, bytes] | None = None,
) -> ClusterSnapshot:
    """`decode_snapshot_file` of the file at `path`, read and decoded a block at a time: memory
    holds the decoded snapshot and one block, never the whole file. `reuse`, `reuse_names`,
    `state`: see `SnapshotDecoder`."""
    name = str(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(_PAYLOAD_OFFSET)
        well_formed = (
            len(head) == _PAYLOAD_OFFSET
            and head[: len(SNAPSHOT_MAGIC)] == SNAPSHOT_MAGIC
            and head[len(SNAPSHOT_MAGIC)] == FORMAT_VERSION
            and size == _PAYLOAD_OFFSET + read_i32(head, _LENGTH_OFFSET)
        )
        snapshot: ClusterSnapshot | None = None
        if well_formed:
            decoder = SnapshotDecoder(reuse, reuse_names, state)
            left, scanned = size - _PAYLOAD_OFFSET, True
            try:
                with paused_gc():
                    while scanned and left:
                        block = f.read(min(_READ_BLOCK, left))
                        if not block:
                            break  # the file shrank meanwhile
                        left -= len(block)
                        scanned = decoder.feed(block, final=not left)
                    if scanned and not left:
                        snapshot = decoder.result()
            except WireError as exc:
                raise CorruptStateError(name, _PAYLOAD_OFFSET, str(exc)) from exc
    if snapshot is None:  # one whole decode says exactly what is wrong
        snapshot = decode_snapshot_file(path.read_bytes(), name)
        if state is not None:
            state.clear()
            state.update((entry.key, entry.value) for entry in snapshot.entries)
        return snapshot
    if snapshot.last_seq > MAX_U63:
        raise CorruptStateError(name, _PAYLOAD_OFFSET, f"last_seq {snapshot.last_seq} is too large")
    return snapshot


class FileEntries(Sequence[SnapshotEntry]):
    """The entries of a snapshot held in its DRFS file at `path` instead of in memory (a
    member's snapshot while it takes the next one, docs/raft.md#large-state): their count is
    known; the entries themselves are decoded from the file on access (blocking, and the
    whole file: a worker thread, and only where the file cannot be used as it is)."""

    __slots__ = ("_count", "path")

    def __init__(self, path: Path, count: int) -> None:
        self.path = path
        self._count = count

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> SnapshotEntry: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[SnapshotEntry]: ...

    def __getitem__(self, index: int | slice) -> SnapshotEntry | Sequence[SnapshotEntry]:
        return read_snapshot_file(self.path).entries[index]

    def __iter__(self) -> Iterator[SnapshotEntry]:
        return iter(read_snapshot_file(self.path).entries)

    def __repr__(self) -> str:
        return f"FileEntries({str(self.path)!r}, {self._count} entries)"


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
    """`<directory>/state-snapshot` on disk, read and written a block at a time."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / SNAPSHOT_FILE
        super().__init__(FileMedium(self.path))

    def load(self, state: dict[str, bytes] | None = None) -> ClusterSnapshot | None:
        """The saved snapshot, or None when there is none; `state`: see `SnapshotDecoder`."""
        try:
            return read_snapshot_file(self.path, state=state)
        except FileNotFoundError:
            return None

    def save(self, snapshot: ClusterSnapshot) -> int:
        """Persist `snapshot` durably (atomic whole-file replace) before returning; the bytes
        written."""
        return write_snapshot_file(snapshot, self.path, durable=True)


class InMemorySnapshotStore(InMemoryFile, _SnapshotStoreBase):
    """The same store over bytes in memory; `contents` is what the file would hold."""

    def __init__(self, contents: bytes | None = None) -> None:
        self._memory = MemoryMedium(f"<memory>/{SNAPSHOT_FILE}", contents)
        super().__init__(self._memory)
