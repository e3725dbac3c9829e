"""Where a store's bytes live: a durable file, or memory for tests (same operations).

File durability (docs/protocol.md#storage-common, plus the directory fsync upstream forgets):

* `replace` writes `<name>.tmp`, fsyncs it, renames it over `<name>`, then fsyncs the directory,
  so after a crash the file holds either the old or the new bytes, and the rename survives;
* `append_at` changes the file in place and syncs it (`fdatasync`: the data and the size)
  before it returns; so does `write_at`, unless called with `sync=False` (the bytes then become
  durable with the file's next sync).
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from dref_raft.errors import CorruptStateError
from dref_raft.storage.layout import TMP_SUFFIX

__all__ = ["FileMedium", "InMemoryFile", "Medium", "MemoryMedium"]


class Medium(Protocol):
    """The byte operations a store needs."""

    @property
    def name(self) -> str:
        """What error messages call it (the file path)."""
        ...

    def read(self) -> bytes | None:
        """All bytes, or None when it does not exist."""
        ...

    def replace(self, data: bytes) -> None:
        """Atomically replace the whole content (creating it if needed)."""
        ...

    def write_at(self, offset: int, data: bytes, *, sync: bool = True) -> None:
        """Overwrite bytes in place at `offset` (inside the existing content); durably unless
        `sync` is False."""
        ...

    def append_at(self, offset: int, data: bytes) -> None:
        """Drop everything from `offset` on, then write `data` there: one durable append."""
        ...

    def close(self) -> None:
        """Release what is kept open between writes (writing again reopens it)."""
        ...


class FileMedium:
    """A file on disk, written durably.

    `write_at` and `append_at` keep the file open between calls (one `os.write` and one
    `fdatasync` per append, no open/close); `replace` and `close` drop that descriptor. A lock
    serialises them, so `close` from one thread waits for a write in another to finish.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: io.FileIO | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return str(self.path)

    def read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def replace(self, data: bytes) -> None:
        with self._lock:
            self._close()  # the open descriptor would keep writing the replaced file
            _ensure_directory(self.path.parent)
            tmp = self.path.with_name(self.path.name + TMP_SUFFIX)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            _fsync_directory(self.path.parent)

    def write_at(self, offset: int, data: bytes, *, sync: bool = True) -> None:
        with self._lock:
            f = self._open()
            _write_at(f, offset, data)
            if sync:
                _datasync(f.fileno())

    def append_at(self, offset: int, data: bytes) -> None:
        with self._lock:
            f = self._open()
            size = os.fstat(f.fileno()).st_size
            if size < offset:
                raise CorruptStateError(
                    self.name, size, f"the file shrank to {size} bytes while in use"
                )
            if size > offset:
                f.truncate(offset)  # a torn record left by a crash: never acknowledged
            _write_at(f, offset, data)
            _datasync(f.fileno())  # also makes the new size durable

    def close(self) -> None:
        """Close the descriptor kept open for writes (the next write opens it again)."""
        with self._lock:
            self._close()

    def _open(self) -> io.FileIO:
        if self._file is None:
            self._file = open(self.path, "r+b", buffering=0)  # noqa: SIM115 (kept open)
        return self._file

    def _close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()


def _write_at(f: io.FileIO, offset: int, data: bytes) -> None:
    """Write all of `data` at `offset` (one `pwrite` where there is one: each system call of
    a worker thread takes the GIL back from the event loop afterwards)."""
    view = memoryview(data)
    while view:
        if _pwrite is not None:
            written = _pwrite(f.fileno(), view, offset)
        else:
            f.seek(offset)
            written = f.write(view) or 0  # None only for a non-blocking file
        if not written:
            raise OSError(f"writing {f.name}: no progress at offset {offset}")
        view, offset = view[written:], offset + written


_pwrite: Callable[[int, memoryview, int], int] | None = getattr(os, "pwrite", None)


def _datasync(fd: int) -> None:
    """Flush a file's data and the metadata needed to read it back (its size), not its times:
    enough for writes into an existing file. `fsync` where `fdatasync` is missing (macOS)."""
    sync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)
    sync(fd)


class MemoryMedium:
    """Bytes in memory; `data` is None while "the file" does not exist. For tests."""

    def __init__(self, name: str, data: bytes | None = None) -> None:
        self._name = name
        self.data = data

    @property
    def name(self) -> str:
        return self._name

    def read(self) -> bytes | None:
        return self.data

    def replace(self, data: bytes) -> None:
        self.data = bytes(data)

    def write_at(self, offset: int, data: bytes, *, sync: bool = True) -> None:
        current = self._existing()
        if offset + len(data) > len(current):
            raise ValueError("write_at must stay inside the existing content")
        self.data = current[:offset] + data + current[offset + len(data) :]

    def append_at(self, offset: int, data: bytes) -> None:
        current = self._existing()
        if len(current) < offset:
            raise CorruptStateError(
                self.name, len(current), f"the content shrank to {len(current)} bytes while in use"
            )
        self.data = current[:offset] + data

    def close(self) -> None:
        """Nothing is kept open."""

    def _existing(self) -> bytes:
        if self.data is None:
            raise FileNotFoundError(self.name)
        return self.data


def _ensure_directory(directory: Path) -> None:
    """Create `directory` (and parents) and make the new entries durable."""
    if directory.is_dir():
        return
    missing = [directory, *(p for p in directory.parents if not p.exists())]
    directory.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        _fsync_directory(created.parent)


def _fsync_directory(directory: Path) -> None:
    """Persist a directory's entries (a rename or a creation inside it)."""
    if os.name == "nt":  # Windows cannot open a directory for fsync; NTFS journals renames
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class InMemoryFile:
    """Mixin of the stores' in-memory twins: `contents` is what the store's file would hold."""

    _memory: MemoryMedium

    @property
    def contents(self) -> bytes | None:
        """The file's bytes (None: no file)."""
        return self._memory.data

    @contents.setter
    def contents(self, data: bytes | None) -> None:
        self._memory.data = data
        self._contents_replaced()

    def _contents_replaced(self) -> None:
        """Called after `contents` was set: drop whatever was derived from the old bytes."""
