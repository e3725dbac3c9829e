"""The Redis pub/sub change notification: upstream's `ChangePayload(name, value, delete)`.

A msgpack map with, in this order, `name` (the UTF-8 bytes of the element name as an int array),
`value` (the new bytes as an int array, empty for a delete) and `delete` (bool, absent = false).
The int arrays follow the msgpack codec's flavor ("scala": signed ints, "rust": unsigned ints);
decoding accepts both forms and msgpack `bin`.
"""

from __future__ import annotations

from dataclasses import dataclass

from dref.changes import ChangeEvent
from dref.codecs import Flavor, MsgPackCodec
from dref.codecs._convert import describe
from dref.errors import CodecError, ConfigurationError

__all__ = ["decode", "encode"]


@dataclass(frozen=True, slots=True)
class ChangePayload:
    """Upstream's Scala case class, field for field (the order is part of the format)."""

    name: bytes
    value: bytes
    delete: bool = False


_CODECS: dict[str, MsgPackCodec] = {flavor: MsgPackCodec(flavor) for flavor in ("scala", "rust")}
_ERROR = "invalid change payload: "


def encode(event: ChangeEvent, *, flavor: Flavor = "scala") -> bytes:
    """The pub/sub payload announcing `event` (a set, or a delete when `event.value` is None)."""
    codec = _CODECS.get(flavor)
    if codec is None:
        raise ConfigurationError(f"msgpack flavor must be 'scala' or 'rust', not {flavor!r}")
    value = event.value
    payload = ChangePayload(event.name.encode("utf-8"), value or b"", value is None)
    return codec.encode(payload)


def decode(data: bytes) -> ChangeEvent:
    """The change announced by a payload; raises `CodecError` saying what is malformed."""
    codec = _CODECS["scala"]  # decoding accepts both flavors
    try:
        raw = codec.decode(data)
        if not isinstance(raw, dict):
            raise CodecError(f"expected a map, got {describe(raw)}")
        payload: ChangePayload = codec.from_plain(raw, ChangePayload)
        name = payload.name.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CodecError(f"{_ERROR}name is not valid UTF-8 ({exc.reason})") from None
    except CodecError as exc:
        raise CodecError(f"{_ERROR}{exc}") from None
    return ChangeEvent(name, None if payload.delete else payload.value)
