"""Shared big-endian helpers for the three file formats."""

from __future__ import annotations

import struct

from dref_raft.errors import CorruptStateError
from dref_raft.storage.layout import FORMAT_VERSION, MAX_LENGTH, MAX_U63, PREAMBLE_SIZE

U64 = struct.Struct(">Q")
I32 = struct.Struct(">i")


def check_u63(what: str, value: int) -> None:
    """Reject a term/seq that upstream cannot store (must be in [0, 2**63))."""
    if not 0 <= value <= MAX_U63:
        raise ValueError(f"{what} must be between 0 and {MAX_U63}, got {value}")


def check_length(what: str, length: int) -> None:
    """Reject a payload too long for a signed 32-bit length."""
    if length > MAX_LENGTH:
        raise ValueError(f"{what} is {length} bytes; the format allows at most {MAX_LENGTH}")


def preamble(magic: bytes) -> bytes:
    """Magic and version bytes."""
    return magic + bytes([FORMAT_VERSION])


def check_preamble(data: bytes, magic: bytes, path: str) -> None:
    """Validate magic and version at the start of `data`."""
    if len(data) < len(magic) or data[: len(magic)] != magic:
        got = data[: len(magic)].hex() or "nothing"
        raise CorruptStateError(
            path, 0, f"bad magic: expected {magic.hex()} ({magic!r}), got {got}"
        )
    if len(data) < PREAMBLE_SIZE:
        raise CorruptStateError(path, len(data), "truncated header: the version byte is missing")
    version = data[len(magic)]
    if version != FORMAT_VERSION:
        raise CorruptStateError(
            path, len(magic), f"unknown format version {version} (only {FORMAT_VERSION} is known)"
        )


def read_u63(data: bytes, offset: int, what: str, path: str) -> int:
    """An 8-byte field that must hold a value below 2**63; the caller checked the size."""
    (value,) = U64.unpack_from(data, offset)
    if value > MAX_U63:
        raise CorruptStateError(
            path, offset, f"{what} {value} does not fit a signed 64-bit integer"
        )
    return int(value)


def read_i32(data: bytes, offset: int) -> int:
    """A 4-byte signed length; the caller checked the size."""
    (value,) = I32.unpack_from(data, offset)
    return int(value)


def require(data: bytes, offset: int, size: int, what: str, path: str) -> None:
    """Raise a truncation error unless `size` bytes are available at `offset`."""
    if len(data) < offset + size:
        raise CorruptStateError(
            path,
            len(data),
            f"truncated: {what} needs {size} bytes at offset {offset}, "
            f"the file ends after {len(data)} bytes",
        )
