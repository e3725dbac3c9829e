"""`command-log` (magic DRFL): the replicated commands not yet folded into a snapshot
(docs/protocol.md#storage-command-log).

Layout: header "DRFL" · version 01 · commit_seq (8, BE), then records until the end of the
file, each seq (8, BE) · length L (4, BE signed) · L bytes of protobuf `StateCommand`.

Loading keeps every complete record and ignores a torn final record (a crash in the middle of
an append, which was never acknowledged; it may also be zero-filled), reporting how many bytes
it ignored; the next write cuts them off before it appends. Anything else unexpected raises
`CorruptStateError`. Duplicate seqs: the later record wins (upstream). A store assumes it is
the only writer of its file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from dref_raft.errors import CorruptStateError
from dref_raft.storage._binary import (
    I32,
    U64,
    check_length,
    check_preamble,
    check_u63,
    preamble,
    read_i32,
    read_u63,
    require,
)
from dref_raft.storage.layout import (
    COMMAND_LOG_FILE,
    COMMAND_LOG_MAGIC,
    COMMIT_SEQ_OFFSET,
    LOG_HEADER_SIZE,
    LOG_RECORD_HEADER_SIZE,
)
from dref_raft.storage.media import FileMedium, InMemoryFile, Medium, MemoryMedium

__all__ = [
    "CommandLogStorage",
    "CommandLogStore",
    "InMemoryCommandLogStore",
    "LogContents",
    "LogRecord",
    "decode_command_log",
    "encode_log_header",
    "encode_log_record",
]


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One log entry: its seq and the protobuf `StateCommand` bytes, kept verbatim."""

    seq: int
    command: bytes


@dataclass(frozen=True, slots=True)
class LogContents:
    """Everything a load read from a command log."""

    #: The file the contents came from (for error messages).
    path: str
    #: The header's commit_seq (0 when the file does not exist).
    commit_seq: int = 0
    #: Complete records, ascending by seq, one per seq (the later of duplicates).
    records: tuple[LogRecord, ...] = ()
    #: seq → byte offset of its record in the file.
    offsets: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))
    #: Bytes of a torn final record that were ignored (0 for a clean file).
    discarded_bytes: int = 0
    #: Bytes up to the end of the last complete record: where the next append goes.
    valid_length: int = 0
    #: Whether the file exists at all.
    exists: bool = False

    @property
    def last_seq(self) -> int:
        """The largest seq present (0 when there are no records)."""
        return self.records[-1].seq if self.records else 0


def encode_log_header(commit_seq: int) -> bytes:
    """The 13-byte header."""
    check_u63("commit_seq", commit_seq)
    return preamble(COMMAND_LOG_MAGIC) + U64.pack(commit_seq)


def encode_log_record(record: LogRecord) -> bytes:
    """One record's exact bytes."""
    check_u63("seq", record.seq)
    if record.seq < 1:
        raise ValueError(f"seq must be at least 1, got {record.seq}")
    check_length("a command", len(record.command))
    return U64.pack(record.seq) + I32.pack(len(record.command)) + bytes(record.command)


def decode_command_log(data: bytes, path: str) -> LogContents:
    """Parse a command log, tolerating only a torn final record."""
    check_preamble(data, COMMAND_LOG_MAGIC, path)
    require(data, COMMIT_SEQ_OFFSET, 8, "the header's commit_seq", path)
    commit_seq = read_u63(data, COMMIT_SEQ_OFFSET, "commit_seq", path)
    by_seq: dict[int, LogRecord] = {}
    offsets: dict[int, int] = {}
    pos = LOG_HEADER_SIZE
    size = len(data)
    while pos < size:
        if size - pos < LOG_RECORD_HEADER_SIZE:
            break  # torn inside the seq or length field
        seq = read_u63(data, pos, "seq", path)
        if seq == 0:
            if not data[pos:].strip(b"\0"):
                break  # a zero-filled tail: space allocated by an append that never completed
            raise CorruptStateError(path, pos, "seq 0 is not a log position")
        length = read_i32(data, pos + 8)
        if length < 0:
            raise CorruptStateError(path, pos + 8, f"negative command length {length} at seq {seq}")
        body = pos + LOG_RECORD_HEADER_SIZE
        if size - body < length:
            break  # torn inside the command bytes
        by_seq[seq] = LogRecord(seq, data[body : body + length])
        offsets[seq] = pos
        pos = body + length
    records = tuple(by_seq[seq] for seq in sorted(by_seq))
    return LogContents(
        path, commit_seq, records, MappingProxyType(offsets), size - pos, pos, exists=True
    )


class CommandLogStorage(Protocol):
    """What the node needs from a command log (part 2 builds on exactly this)."""

    def load(self) -> LogContents:
        """Read the whole log (a missing file is an empty log)."""
        ...

    def append(self, seq: int, command: bytes) -> None:
        """Append one record durably before returning."""
        ...

    def append_many(self, records: Iterable[LogRecord]) -> None:
        """Append records with one write and one fsync (group commit)."""
        ...

    def entries(self, from_seq: int, to_seq: int | None = None) -> list[LogRecord]:
        """Records with `from_seq <= seq <= to_seq` (no upper bound when None), ascending."""
        ...

    def set_commit_seq(self, seq: int, *, durable: bool = True) -> None:
        """Overwrite the header's commit_seq in place, durably unless `durable` is False."""
        ...

    def truncate_through(self, seq: int) -> None:
        """Drop records with seq <= `seq` (they are in a snapshot); commit = min(commit, seq)."""
        ...

    def truncate_from(self, seq: int) -> None:
        """Drop records with seq >= `seq` (uncommitted suffix); commit_seq unchanged."""
        ...

    def close(self) -> None:
        """Close the file kept open between appends (a later write opens it again)."""
        ...


class _CommandLogStoreBase:
    def __init__(self, medium: Medium) -> None:
        self._medium = medium
        # Offset just after the last complete record, once known; where appends go.
        self._end: int | None = None

    def load(self) -> LogContents:
        """Read the whole log (a missing file is an empty log); never writes."""
        contents = self._read()
        self._end = contents.valid_length if contents.exists else None
        return contents

    def append(self, seq: int, command: bytes) -> None:
        """Append one record durably (fsync) before returning."""
        self.append_many((LogRecord(seq, command),))

    def append_many(self, records: Iterable[LogRecord]) -> None:
        """Append `records` in order with one write and one fsync (group commit)."""
        blob = b"".join(encode_log_record(r) for r in records)
        if not blob:
            return
        end = self._append_offset()
        self._medium.append_at(end, blob)
        self._end = end + len(blob)

    def entries(self, from_seq: int, to_seq: int | None = None) -> list[LogRecord]:
        """Records with `from_seq <= seq <= to_seq` (no upper bound when None), ascending.

        Reads the file; cheap for logs bounded by snapshotting.
        """
        return [
            r
            for r in self._read().records
            if r.seq >= from_seq and (to_seq is None or r.seq <= to_seq)
        ]

    def set_commit_seq(self, seq: int, *, durable: bool = True) -> None:
        """Overwrite the header's commit_seq in place and fsync (`durable=False`: no fsync of its
        own; it becomes durable with the next append's. The commit is knowledge a node can
        learn again from its leader, so an older one after a crash is safe, as long as it never
        names entries that are not durable: write it after the entries' append.)"""
        header = encode_log_header(seq)
        if self._end is None and self._medium.read() is None:
            self._medium.replace(header)
            self._end = LOG_HEADER_SIZE
            return
        self._append_offset()  # validates the existing file first
        self._medium.write_at(COMMIT_SEQ_OFFSET, header[COMMIT_SEQ_OFFSET:], sync=durable)

    def truncate_through(self, seq: int) -> None:
        """Drop records with seq <= `seq`, set commit to min(commit, seq); atomic rewrite."""
        check_u63("seq", seq)
        contents = self._read()
        if not contents.exists:
            return
        kept = [r for r in contents.records if r.seq > seq]
        self._rewrite(min(contents.commit_seq, seq), kept)

    def truncate_from(self, seq: int) -> None:
        """Drop records with seq >= `seq`, keep commit_seq; atomic rewrite.

        Refuses (ValueError, nothing written) to drop a committed record.
        """
        check_u63("seq", seq)
        contents = self._read()
        if not contents.exists:
            return
        dropped = [r.seq for r in contents.records if r.seq >= seq]
        committed = [s for s in dropped if s <= contents.commit_seq]
        if committed:
            raise ValueError(
                f"truncate_from({seq}) would drop committed records "
                f"(commit_seq {contents.commit_seq}, seqs {committed[0]}..{committed[-1]})"
            )
        self._rewrite(contents.commit_seq, [r for r in contents.records if r.seq < seq])

    def close(self) -> None:
        """Close the file kept open between appends (a later write opens it again)."""
        self._medium.close()

    def _read(self) -> LogContents:
        data = self._medium.read()
        if data is None:
            return LogContents(self._medium.name)
        return decode_command_log(data, self._medium.name)

    def _append_offset(self) -> int:
        """Where the next record goes; creates the file with commit 0 if it is missing."""
        if self._end is None:
            contents = self._read()
            if not contents.exists:
                self._medium.replace(encode_log_header(0))
                self._end = LOG_HEADER_SIZE
            else:
                self._end = contents.valid_length
        return self._end

    def _rewrite(self, commit_seq: int, records: list[LogRecord]) -> None:
        data = encode_log_header(commit_seq) + b"".join(encode_log_record(r) for r in records)
        self._medium.replace(data)
        self._end = len(data)


class CommandLogStore(_CommandLogStoreBase):
    """`<directory>/command-log` on disk."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / COMMAND_LOG_FILE
        super().__init__(FileMedium(self.path))


class InMemoryCommandLogStore(InMemoryFile, _CommandLogStoreBase):
    """The same store over bytes in memory; `contents` is what the file would hold."""

    def __init__(self, contents: bytes | None = None) -> None:
        self._memory = MemoryMedium(f"<memory>/{COMMAND_LOG_FILE}", contents)
        super().__init__(self._memory)

    def _contents_replaced(self) -> None:
        self._end = None  # the cached append offset belonged to the old bytes
