"""MessagePack codec, byte-compatible with upstream's zio-schema (Scala) and rmp-serde (Rust)."""

from __future__ import annotations

import threading
from typing import Any, Literal

import msgpack

from dref.codecs._base import TypedCodec
from dref.codecs._convert import MSGPACK_RUST, MSGPACK_SCALA
from dref.errors import CodecError, ConfigurationError

__all__ = ["Flavor", "MsgPackCodec"]

Flavor = Literal["scala", "rust"]
_FORMATS = {"scala": MSGPACK_SCALA, "rust": MSGPACK_RUST}


class _Packers(threading.local):
    """One reusable msgpack packer per thread (much cheaper than `msgpack.packb` per call)."""

    def __init__(self) -> None:
        self.pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack


_packers = _Packers()


def _reject_ext(code: int, data: bytes) -> Any:
    raise CodecError(f"msgpack extension type {code} is not supported")


def unpack(data: bytes) -> Any:
    """Deserialize one msgpack object to plain Python values; raises `CodecError`."""
    try:
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_reject_ext)
        except TypeError:  # an array used as a map key: decode arrays as (hashable) tuples
            return msgpack.unpackb(
                data, raw=False, strict_map_key=False, use_list=False, ext_hook=_reject_ext
            )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        detail = str(exc) or exc.__class__.__name__
        raise CodecError(f"invalid msgpack data: {detail}") from exc


class MsgPackCodec(TypedCodec):
    """MessagePack as upstream writes it; `flavor` picks whose form is written where they differ.

    "scala": byte arrays as signed ints, Optional as `[]`/`[x]`. "rust": byte arrays as unsigned
    ints, Optional as nil/value. Decoding accepts both forms. See docs/codecs.md.
    """

    name = "msgpack"

    def __init__(self, flavor: Flavor = "scala") -> None:
        fmt = _FORMATS.get(flavor)
        if fmt is None:
            raise ConfigurationError(f"msgpack flavor must be 'scala' or 'rust', not {flavor!r}")
        super().__init__(fmt)
        self.flavor: Flavor = flavor

    def __repr__(self) -> str:
        return f"MsgPackCodec(flavor={self.flavor!r})"

    def _dumps(self, plain: Any) -> bytes:
        data: bytes = _packers.pack(plain)
        return data

    _loads = staticmethod(unpack)
