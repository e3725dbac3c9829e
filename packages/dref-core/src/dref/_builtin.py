"""dref's own plugin: the built-in codecs."""

from __future__ import annotations

from dref.codecs import JsonCodec, MsgPackCodec
from dref.hookspecs import hookimpl
from dref.registries import CodecRegistry


@hookimpl
def dref_register_codecs(registry: CodecRegistry) -> None:
    registry.add("msgpack", lambda settings: MsgPackCodec(flavor=settings.msgpack_flavor))
    registry.add("json", lambda settings: JsonCodec())
