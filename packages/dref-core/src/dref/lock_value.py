"""The lock token stored under a lock key: 8 raw bytes, big-endian two's complement (not msgpack).

Same as upstream's `LockValue` (Java `ByteBuffer.putLong`, Rust `i64::to_be_bytes`). On decoding,
Scala reads the first 8 bytes of a longer value while Rust requires exactly 8; we follow Rust,
because a value of any other length was not written as a lock token.
"""

from __future__ import annotations

from dref.errors import CodecError

__all__ = ["SIZE", "from_bytes", "to_bytes"]

SIZE = 8
_MIN, _MAX = -(2**63), 2**63 - 1


def to_bytes(n: int) -> bytes:
    """`n` as 8 big-endian bytes; ValueError if it is outside the signed 64-bit range."""
    if not _MIN <= n <= _MAX:
        raise ValueError(f"lock value {n} is outside the signed 64-bit range")
    return n.to_bytes(SIZE, "big", signed=True)


def from_bytes(data: bytes) -> int:
    """The signed 64-bit token in `data`; CodecError unless `data` is exactly 8 bytes."""
    if len(data) != SIZE:
        raise CodecError(f"a lock value is exactly {SIZE} bytes, got {len(data)}")
    return int.from_bytes(data, "big", signed=True)
