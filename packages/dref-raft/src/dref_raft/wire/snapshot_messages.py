"""`DRefSnapshot` (dref-only, docs/raft-wire.md#snapshot-streaming) ⇄ protobuf bytes.

A snapshot travels as the bytes of its DRFS file, in chunks: the first chunk of a stream
carries the `SnapshotHeader` naming the snapshot (its seq, term, size and SHA-256), every chunk
carries its offset and the CRC-32 of its data.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Final

from dref_raft._pb import dref_snapshot_pb2
from dref_raft.errors import WireError
from dref_raft.wire.messages import PACKAGE, parse

__all__ = [
    "HELD_METHOD",
    "INSTALL_METHOD",
    "SAVE_METHOD",
    "SNAPSHOT_SERVICE",
    "InstallResult",
    "SnapshotChunk",
    "SnapshotHeader",
    "decode_chunk",
    "decode_header",
    "decode_held",
    "decode_install_result",
    "encode_chunk",
    "encode_header",
    "encode_held",
    "encode_install_result",
    "encode_save_request",
]

SNAPSHOT_SERVICE: Final = f"{PACKAGE}.DRefSnapshot"
HELD_METHOD: Final = "Held"
INSTALL_METHOD: Final = "Install"
SAVE_METHOD: Final = "Save"

_PB = dref_snapshot_pb2
#: A chunk message never needs more than its data plus this much.
_CHUNK_OVERHEAD: Final = 1024


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    """Which snapshot a transfer carries: its DRFS file's `size` and `sha256`, the seq and term
    it covers, and the leader (and term) sending it."""

    leader_id: str
    term: int
    last_seq: int
    last_term: int
    size: int
    sha256: bytes

    @property
    def key(self) -> tuple[int, int, int, bytes]:
        """What identifies the file (the same snapshot sent again, by any leader)."""
        return (self.last_seq, self.last_term, self.size, self.sha256)


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """`data` at `offset` of the file; `header` on the first chunk of a stream only."""

    offset: int
    data: bytes
    crc32: int
    header: SnapshotHeader | None = None

    @classmethod
    def of(cls, offset: int, data: bytes, header: SnapshotHeader | None = None) -> SnapshotChunk:
        """A chunk with its CRC-32 computed."""
        return cls(offset, data, zlib.crc32(data), header)

    def crc_ok(self) -> bool:
        """Whether `data` matches its CRC-32."""
        return zlib.crc32(self.data) == self.crc32


@dataclass(frozen=True, slots=True)
class InstallResult:
    """The answer to an `Install` stream (see dref_snapshot.proto)."""

    success: bool
    term: int
    match_seq: int
    complete: bool
    held: int
    error: str = ""


def _fill_header(msg: Any, header: SnapshotHeader) -> None:
    msg.leader_id = header.leader_id
    msg.term = header.term
    msg.last_seq = header.last_seq
    msg.last_term = header.last_term
    msg.size = header.size
    msg.sha256 = header.sha256


def _header_of(msg: Any) -> SnapshotHeader:
    sha = bytes(msg.sha256)
    if len(sha) != 32:
        raise WireError(f"SnapshotHeader: sha256 has {len(sha)} bytes, expected 32")
    return SnapshotHeader(
        str(msg.leader_id), int(msg.term), int(msg.last_seq), int(msg.last_term), int(msg.size), sha
    )


def encode_header(header: SnapshotHeader) -> bytes:
    """`SnapshotHeader` bytes (the `Held` request)."""
    msg: Any = _PB.SnapshotHeader()
    _fill_header(msg, header)
    return bytes(msg.SerializeToString())


def decode_header(data: bytes, max_bytes: int) -> SnapshotHeader:
    """Parse a `SnapshotHeader`; malformed → `WireError`."""
    return _header_of(parse(_PB.SnapshotHeader, data, "SnapshotHeader", max_bytes))


def encode_chunk(chunk: SnapshotChunk) -> bytes:
    """`SnapshotChunk` bytes."""
    msg: Any = _PB.SnapshotChunk(offset=chunk.offset, data=chunk.data, crc32=chunk.crc32)
    if chunk.header is not None:
        _fill_header(msg.header, chunk.header)
    return bytes(msg.SerializeToString())


def decode_chunk(data: bytes, max_bytes: int) -> SnapshotChunk:
    """Parse a `SnapshotChunk`; malformed → `WireError` (the CRC is checked by the receiver)."""
    msg = parse(_PB.SnapshotChunk, data, "SnapshotChunk", max_bytes + _CHUNK_OVERHEAD)
    header = _header_of(msg.header) if msg.HasField("header") else None
    return SnapshotChunk(int(msg.offset), bytes(msg.data), int(msg.crc32), header)


def encode_held(offset: int) -> bytes:
    """`HeldResponse` bytes."""
    return bytes(_PB.HeldResponse(offset=offset).SerializeToString())


def decode_held(data: bytes, max_bytes: int) -> int:
    """The offset of a `HeldResponse`."""
    return int(parse(_PB.HeldResponse, data, "HeldResponse", max_bytes).offset)


def encode_install_result(result: InstallResult) -> bytes:
    """`InstallResult` bytes."""
    msg = _PB.InstallResult(
        success=result.success,
        term=result.term,
        match_seq=result.match_seq,
        complete=result.complete,
        held=result.held,
        error=result.error,
    )
    return bytes(msg.SerializeToString())


def decode_install_result(data: bytes, max_bytes: int) -> InstallResult:
    """Parse an `InstallResult`."""
    msg: Any = parse(_PB.InstallResult, data, "InstallResult", max_bytes)
    return InstallResult(
        bool(msg.success),
        int(msg.term),
        int(msg.match_seq),
        bool(msg.complete),
        int(msg.held),
        str(msg.error),
    )


def encode_save_request() -> bytes:
    """`SaveRequest` bytes."""
    return bytes(_PB.SaveRequest().SerializeToString())
