"""Value codecs: how a `DRef`'s value becomes the bytes a backend stores.

`MsgPackCodec` is wire-compatible with upstream Scala/Rust DRef; `JsonCodec` is Python only.
Both decode into a requested type (dataclasses, pydantic models, enums, generics); see
docs/codecs.md for the formats and the interoperability notes.
"""

from dref.codecs._base import Codec
from dref.codecs._json import JsonCodec
from dref.codecs._msgpack import Flavor, MsgPackCodec

__all__ = ["Codec", "Flavor", "JsonCodec", "MsgPackCodec"]
