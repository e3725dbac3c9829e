"""`state-snapshot` (magic DRFS): the state machine at `last_seq`
(docs/protocol.md#storage-snapshot).

Layout: "DRFS" · version 01 · payload length N (4, BE signed) · N bytes of protobuf
`ClusterSnapshot` (entries + last_seq).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol, overload

from dref_raft.bulk import paused_gc
from dref_raft.errors import CorruptStateError, WireError
from dref_raft.fsm import ClusterSnapshot, NamedEntrySink, SnapshotEntry
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
    EntrySink,
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
    "write_snapshot_parts",
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
    A snapshot held in its file (`FileEntries`) is copied from it. The file's size."""
    check_u63("last_seq", snapshot.last_seq)
    _ensure_directory(path.parent)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    entries = snapshot.entries
    if isinstance(entries, FileEntries):  # its file is these bytes: copied, not decoded
        shutil.copyfile(entries.path, tmp)
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
    else:
        write_snapshot_parts(encode_snapshot_parts(snapshot), tmp, durable=durable)
    return _put_in_place(tmp, path, durable=durable)


def write_snapshot_parts(parts: Iterable[bytes], path: Path, *, durable: bool = False) -> None:
    """Write a `state-snapshot` file at `path` whose payload is `parts` (the `ClusterSnapshot`
    bytes, written as they come); `durable`: fsync it before it is closed."""
    length = 0
    with open(path, "wb") as f:
        f.write(preamble(SNAPSHOT_MAGIC) + I32.pack(0))  # the length is known at the end
        with paused_gc():
            for part in parts:
                f.write(part)
                length += len(part)
        check_length("the snapshot", length)
        f.seek(_LENGTH_OFFSET)
        f.write(I32.pack(length))
        if durable:
            f.flush()
            os.fsync(f.fileno())


def _put_in_place(tmp: Path, path: Path, *, durable: bool) -> int:
    """Rename the written (and, if `durable`, fsynced) `tmp` to `path`; `durable`: fsync the
    directory after. Its size."""
    size = tmp.stat().st_size
    os.replace(tmp, path)
    if durable:
        _fsync_directory(path.parent)
    return size


def read_snapshot_file(
    path: Path,
    reuse: Mapping[str, bytes] | None = None,
    reuse_names: Sequence[str] | None = None,
    state: dict[str, bytes] | None = None,
    *,
    sink: EntrySink | None = None,
) -> ClusterSnapshot:
    """`decode_snapshot_file` of the file at `path`, read and decoded a block at a time: memory
    holds the decoded snapshot and one block, never the whole file. `reuse`, `reuse_names`,
    `state`, `sink`: see `SnapshotDecoder`; with `sink`, the snapshot's entries are
    `FileEntries` of `path`."""
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
            decoder = SnapshotDecoder(reuse, reuse_names, state, sink=sink)
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
        if sink is not None:
            _drain(snapshot.entries, sink)
            snapshot = dataclasses.replace(
                snapshot, entries=FileEntries(path, len(snapshot.entries))
            )
        return snapshot
    if snapshot.last_seq > MAX_U63:
        raise CorruptStateError(name, _PAYLOAD_OFFSET, f"last_seq {snapshot.last_seq} is too large")
    if sink is not None:
        snapshot = dataclasses.replace(snapshot, entries=FileEntries(path, decoder.count))
    return snapshot


def _drain(entries: Sequence[SnapshotEntry], sink: EntrySink) -> None:
    for entry in entries:
        sink.add([entry.key], [entry.value])
        if entry.expire_at is not None:
            sink.expire(entry.key, entry.expire_at)


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

    def load_held(
        self, held: Path, state: dict[str, bytes]
    ) -> tuple[ClusterSnapshot, dict[str, int]] | None:
        """The saved snapshot held in its file, not in memory: the file hard-linked to `held`
        (a later save does not change it), decoded a block at a time into `state` (empty:
        name → value) and the expiries returned with it; its entries are `FileEntries` of
        `held`. None when there is no snapshot; also when its names are not strictly
        ascending (not a dref member's file: `load` then, which keeps duplicates' order
        exact), `held` removed and `state` emptied."""
        try:
            os.link(self.path, held)
        except FileNotFoundError:
            return None
        filler = StateFiller(state)
        snapshot = read_snapshot_file(held, sink=filler)
        if not filler.ascending:
            held.unlink()
            state.clear()
            return None
        return snapshot, filler.expiries

    def save(self, snapshot: ClusterSnapshot) -> int:
        """Persist `snapshot` durably (atomic whole-file replace) before returning; the bytes
        written."""
        return write_snapshot_file(snapshot, self.path, durable=True)


class StateFiller(NamedEntrySink):
    """An `EntrySink` that fills `values` (name → value) and `expiries` (name → expire_at)
    with a snapshot's entries, as an install would build them when the names are strictly
    ascending (`ascending` says whether they were)."""

    def __init__(self, values: dict[str, bytes]) -> None:
        super().__init__()
        self.values = values

    def take(self, names: list[str], values: list[bytes]) -> None:
        self.values.update(zip(names, values, strict=True))


class InMemorySnapshotStore(InMemoryFile, _SnapshotStoreBase):
    """The same store over bytes in memory; `contents` is what the file would hold."""

    def __init__(self, contents: bytes | None = None) -> None:
        self._memory = MemoryMedium(f"<memory>/{SNAPSHOT_FILE}", contents)
        super().__init__(self._memory)
