"""JSON codec (Python only; upstream has no JSON codec): compact UTF-8, same typed decoding."""

from __future__ import annotations

import json
from typing import Any

from dref.codecs._base import TypedCodec
from dref.codecs._convert import JSON
from dref.errors import CodecError

__all__ = ["JsonCodec"]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_decoder = json.JSONDecoder(parse_constant=_reject_constant)


class JsonCodec(TypedCodec):
    """UTF-8 JSON with compact separators; bytes are base64 strings. See docs/codecs.md."""

    name = "json"

    def __init__(self) -> None:
        super().__init__(JSON)

    def __repr__(self) -> str:
        return "JsonCodec()"

    def _dumps(self, plain: Any) -> bytes:
        return _encoder.encode(plain).encode("utf-8")

    def _loads(self, data: bytes) -> Any:
        try:
            return _decoder.decode(str(data, "utf-8"))
        except (ValueError, TypeError) as exc:
            raise CodecError(f"invalid JSON data: {exc}") from exc
