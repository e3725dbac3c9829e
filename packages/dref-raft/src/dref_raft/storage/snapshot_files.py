"""Snapshot files in transit and in backups (docs/raft-wire.md#snapshot-streaming,
docs/operations.md#backup-and-restore).

* `spool_snapshot`: the DRFS file of a snapshot a leader streams to its followers, written
  once and read back a chunk at a time;
* `IncomingSnapshot`: the file a follower receives, chunk by chunk, into its storage
  directory (`state-snapshot.part`, with `state-snapshot.part-header` naming the snapshot), so
  a transfer that broke resumes from the bytes already held; it is verified (every chunk's
  CRC-32, then the SHA-256 of the whole file) and fsynced before it is used;
* backups: a DRFS file followed by a 36-byte trailer, "DRFK" · SHA-256 of the DRFS bytes
  (`write_backup_trailer`, `read_backup`, `restore_backup`).

Everything here is blocking file I/O: an asyncio caller runs it in a worker thread.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dref_raft.errors import ChunkRefusedError, CorruptStateError, StorageNotEmptyError
from dref_raft.fsm import ClusterSnapshot, StateCopy
from dref_raft.storage._binary import check_u63
from dref_raft.storage.layout import (
    COMMAND_LOG_FILE,
    SNAPSHOT_FILE,
)
from dref_raft.storage.media import FileMedium, _ensure_directory, _fsync_directory
from dref_raft.storage.snapshot import (
    FileEntries,
    SnapshotStorage,
    SnapshotStore,
    decode_snapshot_file,
    read_snapshot_file,
    write_snapshot_file,
    write_snapshot_parts,
)
from dref_raft.storage.voter_state import VoterState, VoterStateStore
from dref_raft.wire.commands import EntrySink, encode_state_parts
from dref_raft.wire.snapshot_messages import SnapshotChunk, SnapshotHeader

__all__ = [
    "BACKUP_MAGIC",
    "CHUNK_SIZE",
    "IncomingSnapshot",
    "MonotonicSnapshotStore",
    "SpooledSnapshot",
    "read_backup",
    "read_chunk",
    "relink",
    "restore_backup",
    "spool_snapshot",
    "spooled_file",
    "write_backup_trailer",
]

CHUNK_SIZE: Final = 1024 * 1024
"""Bytes per streamed chunk."""
BACKUP_MAGIC: Final = b"DRFK"
"""Magic of a backup's trailer: "DRFK" · SHA-256 (32 bytes) of the DRFS bytes before it."""
_TRAILER_SIZE: Final = 4 + 32
PART_SUFFIX: Final = ".part"
#: `state-snapshot<TAKING_SUFFIX>`: a snapshot just taken, linked here to be renamed into place.
TAKING_SUFFIX: Final = ".taking"
HEADER_SUFFIX: Final = ".part-header"


@dataclass(frozen=True, slots=True)
class SpooledSnapshot:
    """A DRFS file written for streaming: where, its size and SHA-256."""

    path: Path
    size: int
    sha256: bytes
    last_seq: int
    last_term: int


def spool_snapshot(snapshot: ClusterSnapshot, path: Path) -> SpooledSnapshot:
    """Write `snapshot`'s DRFS file to `path` a slice at a time (memory stays bounded by a
    slice; not fsynced: it is only read back to send). The same bytes as
    `encode_snapshot_file`."""
    write_snapshot_file(snapshot, path, durable=False)
    return spooled_file(path, snapshot.last_seq, snapshot.last_term)


def spool_state(state: StateCopy, last_seq: int, last_term: int, path: Path) -> SpooledSnapshot:
    """`spool_snapshot` of the snapshot of `state` (a `copy_state` copy, emptied) at
    `last_seq`, written straight from the copy (`encode_state_parts`: never its tuples)."""
    check_u63("last_seq", last_seq)
    write_snapshot_parts(encode_state_parts(state, last_seq, last_term), path)
    return spooled_file(path, last_seq, last_term)


def spooled_file(path: Path, last_seq: int, last_term: int) -> SpooledSnapshot:
    """A DRFS file already written (spooled, or the saved snapshot at `last_seq`, `last_term`
    linked for streaming): its size and SHA-256."""
    return SpooledSnapshot(path, path.stat().st_size, _sha256_of(path), last_seq, last_term)


def relink(source: Path, dest: Path) -> None:
    """Make `dest` a hard link to `source` (replacing it): it keeps `source`'s bytes even after
    another file is renamed into `source`'s place."""
    dest.unlink(missing_ok=True)
    os.link(source, dest)


def read_chunk(path: Path, offset: int, size: int = CHUNK_SIZE) -> bytes:
    """Up to `size` bytes of `path` from `offset`."""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def _sha256_of(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK_SIZE):
            digest.update(block)
    return digest.digest()


def _encode_header_line(header: SnapshotHeader) -> bytes:
    return f"{header.last_seq} {header.last_term} {header.size} {header.sha256.hex()}\n".encode()


class IncomingSnapshot:
    """The snapshot file a member is receiving, in `directory` (kept across a broken stream).

    `held(header)` says how many bytes of that snapshot are here (0 for another snapshot,
    whose leftovers are dropped); `write` appends a chunk at exactly that offset after checking
    its CRC-32; `seal` checks the whole file's size and SHA-256 and fsyncs it.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.part = self.directory / (SNAPSHOT_FILE + PART_SUFFIX)
        self._header_path = self.directory / (SNAPSHOT_FILE + HEADER_SUFFIX)

    def held(self, header: SnapshotHeader) -> int:
        """Bytes of `header`'s snapshot held (0 after dropping another one's leftovers)."""
        try:
            saved = self._header_path.read_bytes()
        except FileNotFoundError:
            saved = b""
        if saved != _encode_header_line(header):
            return 0
        try:
            return min(self.part.stat().st_size, header.size)
        except FileNotFoundError:
            return 0

    def begin(self, header: SnapshotHeader, offset: int) -> None:
        """Start (offset 0) or resume (offset = `held`) receiving `header`'s snapshot."""
        held = self.held(header)
        if offset != held:
            raise ChunkRefusedError(
                f"the stream starts at offset {offset} but {held} bytes of snapshot "
                f"{header.last_seq}/{header.last_term} are held: resume from {held}"
            )
        if offset == 0:
            self.discard()
            _ensure_directory(self.directory)
            FileMedium(self._header_path).replace(_encode_header_line(header))
            self.part.write_bytes(b"")
        else:
            with open(self.part, "r+b") as f:
                f.truncate(offset)

    def write(self, header: SnapshotHeader, expected_offset: int, chunk: SnapshotChunk) -> int:
        """Append `chunk` (it must start at `expected_offset` and match its CRC-32, and stay
        inside the file); the new held offset."""
        if chunk.offset != expected_offset:
            raise ChunkRefusedError(
                f"chunk at offset {chunk.offset}, expected one at offset {expected_offset}"
            )
        if not chunk.crc_ok():
            raise ChunkRefusedError(
                f"chunk at offset {chunk.offset} ({len(chunk.data)} bytes) fails its CRC-32 check"
            )
        end = chunk.offset + len(chunk.data)
        if end > header.size:
            raise ChunkRefusedError(
                f"chunk at offset {chunk.offset} ends at {end}, past the file size {header.size}"
            )
        with open(self.part, "ab") as f:
            f.write(chunk.data)
        return end

    def seal(self, header: SnapshotHeader) -> Path:
        """Check the whole file (size, SHA-256) and fsync it; the file's path. A file that
        fails is deleted (the next transfer starts from 0) and `ChunkRefusedError` raised."""
        size = self.part.stat().st_size
        if size != header.size:
            raise ChunkRefusedError(f"the stream ended at {size} bytes of {header.size}")
        sha = _sha256_of(self.part)
        if sha != header.sha256:
            self.discard()
            raise ChunkRefusedError(
                f"SHA-256 of the received {size} bytes is {sha.hex()}, "
                f"the header says {header.sha256.hex()}: discarded"
            )
        with open(self.part, "rb+") as f:
            os.fsync(f.fileno())
        return self.part

    def load(
        self,
        header: SnapshotHeader,
        reuse: Mapping[str, bytes] | None = None,
        reuse_names: Sequence[str] | None = None,
        state: dict[str, bytes] | None = None,
        *,
        sink: EntrySink | None = None,
    ) -> ClusterSnapshot:
        """Decode the sealed file (a block at a time; `reuse`, `reuse_names`, `state`, `sink`:
        see `SnapshotDecoder`); it must cover `header`'s seq and term."""
        snapshot = read_snapshot_file(self.part, reuse, reuse_names, state, sink=sink)
        if (snapshot.last_seq, snapshot.last_term) != (header.last_seq, header.last_term):
            self.discard()
            raise ChunkRefusedError(
                f"the file holds seq {snapshot.last_seq} term {snapshot.last_term}, the header "
                f"says seq {header.last_seq} term {header.last_term}: discarded"
            )
        return snapshot

    def discard(self) -> None:
        """Drop a partial or used file."""
        for path in (self.part, self._header_path):
            path.unlink(missing_ok=True)


class MonotonicSnapshotStore:
    """A snapshot store that several threads may save to (a snapshot the node takes in the
    background, one it received): saves are serialized and one older than the last saved is
    skipped, so a slow background save never replaces a newer installed snapshot."""

    def __init__(self, inner: SnapshotStorage, saved: tuple[int, int] | None = None) -> None:
        """`saved`: (last_seq, last_term) of the snapshot `inner` holds (loaded at boot)."""
        self._inner = inner
        self._lock = threading.Lock()
        self._saved_seq = -1 if saved is None else saved[0]
        #: (last_seq, last_term) of the snapshot the file holds (None: unknown, or no file).
        self._saved = saved
        self._adopted: tuple[Path, ClusterSnapshot] | None = None

    def adopt(self, path: Path, snapshot: ClusterSnapshot) -> None:
        """The verified, fsynced DRFS file at `path` holds `snapshot`: if `snapshot` is saved
        next, rename that file into place instead of encoding it again (a store without a
        file ignores this)."""
        if isinstance(self._inner, SnapshotStore):
            self._adopted = (path, snapshot)

    def load(self) -> ClusterSnapshot | None:
        """The saved snapshot, or None when there is none."""
        snapshot = self._inner.load()
        if snapshot is not None:
            with self._lock:
                self._saved_seq = max(self._saved_seq, snapshot.last_seq)
                self._saved = (snapshot.last_seq, snapshot.last_term)
        return snapshot

    def save(self, snapshot: ClusterSnapshot) -> int:
        """Persist `snapshot` unless a newer one was saved (then 0); the bytes written."""

        def put() -> int:
            adopted, self._adopted = self._adopted, None
            size = self._adopt(adopted, snapshot)
            return self._inner.save(snapshot) if size is None else size

        return self._put_unless_older(snapshot, put)

    def _put_unless_older(self, snapshot: ClusterSnapshot, put: Callable[[], int]) -> int:
        """Under the lock: 0 when a newer snapshot than `snapshot` was saved; else `put()`
        (which puts its file in place, its size), then `snapshot` is the one saved."""
        with self._lock:
            if snapshot.last_seq < self._saved_seq:
                return 0
            self._saved = None  # until the new file is in place
            size = put()
            self._saved_seq = snapshot.last_seq
            self._saved = (snapshot.last_seq, snapshot.last_term)
            return size

    def save_written(self, parts: Iterable[bytes], snapshot: ClusterSnapshot) -> int:
        """Save `snapshot` as `save` would (skipped when a newer one was saved), its bytes
        `parts` (`ClusterSnapshot` payload, e.g. `encode_names_parts`: never its entries in
        memory) written to the file its `FileEntries` name (fsynced) and hard-linked into
        place; the bytes written (0: skipped, the file kept for `snapshot`). On failure the
        file is removed. Only for a store with a file (`SnapshotStore`)."""
        inner, entries = self._inner, snapshot.entries
        if not isinstance(inner, SnapshotStore) or not isinstance(entries, FileEntries):
            raise TypeError("save_written needs a store with a file and FileEntries")
        check_u63("last_seq", snapshot.last_seq)
        held = entries.path

        def put() -> int:
            taking = inner.path.with_name(inner.path.name + TAKING_SUFFIX)
            relink(held, taking)
            os.replace(taking, inner.path)
            _fsync_directory(inner.path.parent)
            return held.stat().st_size

        try:
            write_snapshot_parts(parts, held, durable=True)
            return self._put_unless_older(snapshot, put)
        except BaseException:
            held.unlink(missing_ok=True)
            raise

    def link_saved(self, dest: Path, last_seq: int, last_term: int) -> bool:
        """Hard-link the saved `state-snapshot` file to `dest` (replacing it) if it holds the
        snapshot at (`last_seq`, `last_term`): `dest` then keeps those bytes even after a newer
        save renames another file into place. False (nothing done): another snapshot, no file,
        or a file system without hard links."""
        inner = self._inner
        with self._lock:
            if not isinstance(inner, SnapshotStore) or self._saved != (last_seq, last_term):
                return False
            try:
                relink(inner.path, dest)
            except OSError:
                return False
            return True

    def _adopt(
        self, adopted: tuple[Path, ClusterSnapshot] | None, snapshot: ClusterSnapshot
    ) -> int | None:
        """Rename the adopted file into place if it holds `snapshot`; its size, else None."""
        inner = self._inner
        if adopted is None or not isinstance(inner, SnapshotStore):
            return None
        path, held = adopted
        if held.entries is not snapshot.entries or (held.last_seq, held.last_term) != (
            snapshot.last_seq,
            snapshot.last_term,
        ):
            return None
        try:
            size = path.stat().st_size
            os.replace(path, inner.path)
        except FileNotFoundError:
            return None
        _fsync_directory(inner.path.parent)
        return size


# ---------------------------------------------------------------------------------- backups


def write_backup_trailer(path: Path, sha256: bytes) -> None:
    """Append the trailer to the DRFS bytes in `path` and fsync it."""
    with open(path, "ab") as f:
        f.write(BACKUP_MAGIC + sha256)
        f.flush()
        os.fsync(f.fileno())


def read_backup(path: str | os.PathLike[str]) -> tuple[ClusterSnapshot, bytes]:
    """Verify a backup file (trailer, SHA-256, DRFS contents); the snapshot and its DRFS bytes.

    Anything wrong raises `CorruptStateError` naming the file, the byte offset and the reason.
    """
    name = str(path)
    data = Path(path).read_bytes()
    if len(data) < _TRAILER_SIZE:
        raise CorruptStateError(
            name, len(data), f"{len(data)} bytes: too short for a backup (trailer missing)"
        )
    body_end = len(data) - _TRAILER_SIZE
    magic = data[body_end : body_end + 4]
    if magic != BACKUP_MAGIC:
        raise CorruptStateError(
            name,
            body_end,
            f"bad trailer magic {magic.hex()}, expected {BACKUP_MAGIC.hex()} ({BACKUP_MAGIC!r}): "
            "not a dref snapshot backup, or truncated",
        )
    body = data[:body_end]
    expected = data[body_end + 4 :]
    actual = hashlib.sha256(body).digest()
    if actual != expected:
        raise CorruptStateError(
            name,
            0,
            f"SHA-256 of bytes 0..{body_end} is {actual.hex()}, the trailer at offset "
            f"{body_end + 4} says {expected.hex()}: the file is damaged",
        )
    return decode_snapshot_file(body, name), body


def restore_backup(
    backup: str | os.PathLike[str], storage_dir: str | os.PathLike[str], *, force: bool = False
) -> ClusterSnapshot:
    """Seed `storage_dir` with the verified snapshot of `backup` (docs/operations.md#restore).

    Writes `state-snapshot` and a `voter-state` at the snapshot's term, durably; a member
    started on the directory serves the backup's values. A directory that already holds a
    node's files raises `StorageNotEmptyError` unless `force` (their files are then replaced
    and the command log removed). A damaged backup raises `CorruptStateError`; nothing is
    written then.
    """
    snapshot, body = read_backup(backup)
    directory = Path(storage_dir)
    existing = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    if existing and not force:
        raise StorageNotEmptyError(
            f"{directory} is not empty ({', '.join(existing[:5])}"
            f"{', ...' if len(existing) > 5 else ''}): restoring would replace a node's state; "
            "use an empty directory or --force"
        )
    _ensure_directory(directory)
    for leftover in (COMMAND_LOG_FILE, SNAPSHOT_FILE + PART_SUFFIX, SNAPSHOT_FILE + HEADER_SUFFIX):
        (directory / leftover).unlink(missing_ok=True)
    FileMedium(directory / SNAPSHOT_FILE).replace(body)
    VoterStateStore(directory).save(VoterState(snapshot.last_term, None))
    _fsync_directory(directory)
    return snapshot
