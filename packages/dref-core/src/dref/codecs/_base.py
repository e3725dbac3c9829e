"""The `Codec` protocol and the shared machinery of the built-in codecs."""

from __future__ import annotations

import contextlib
from typing import Any, Protocol, TypeVar, overload, runtime_checkable

from dref.codecs._convert import SCALARS, Converter, Format, Mismatch
from dref.errors import CodecError

__all__ = ["Codec", "TypedCodec"]

T = TypeVar("T")


@runtime_checkable
class Codec(Protocol):
    """Turns values into the bytes a backend stores, and back."""

    name: str

    def encode(self, value: Any) -> bytes:
        """The bytes of `value`; raises `CodecError` for an object the codec cannot write."""
        ...

    def decode(self, data: bytes, type: Any = None) -> Any:
        """The value in `data`: an instance of `type` if given, else plain Python values.

        Raises `CodecError` if `data` is malformed or does not fit `type`.
        """
        ...


class TypedCodec:
    """A codec over a `Format`; subclasses supply the serializer (`_dumps`, `_loads`)."""

    name: str

    def __init__(self, fmt: Format) -> None:
        self._format = fmt
        self._plain = fmt.plain
        self._converters: dict[Any, Converter] = {}

    def encode(self, value: Any, type: Any = None) -> bytes:
        """The bytes of `value`; with `type`, written as that declared type (e.g. an Optional)."""
        try:
            if type is not None:
                return self._dumps(self._converter(type).enc(value))
            if value.__class__ in SCALARS:
                return self._dumps(value)
            return self._dumps(self._plain(value))
        except CodecError:
            raise
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise CodecError(
                f"cannot encode {value.__class__.__qualname__} as {self.name}: {exc}"
            ) from exc

    @overload
    def decode(self, data: bytes, type: type[T]) -> T: ...
    @overload
    def decode(self, data: bytes, type: Any = None) -> Any: ...
    def decode(self, data: bytes, type: Any = None) -> Any:
        """The value in `data`: an instance of `type` if given, else plain Python values."""
        plain = self._loads(data)
        if type is None:
            return plain
        try:
            conv = self._converters[type]
        except (KeyError, TypeError):
            conv = self._converter(type)
        try:
            return conv.dec(plain)
        except Mismatch as exc:
            raise exc.error() from None

    def to_plain(self, value: Any, type: Any = None) -> Any:
        """`value` as the plain data this codec serializes (dicts, lists, ints, ...)."""
        return self._plain(value) if type is None else self._converter(type).enc(value)

    def from_plain(self, data: Any, type: Any) -> Any:
        """Convert already deserialized plain data to an instance of `type`."""
        try:
            return self._converter(type).dec(data)
        except Mismatch as exc:
            raise exc.error() from None

    def _converter(self, type: Any) -> Converter:
        try:
            return self._converters[type]
        except (KeyError, TypeError):
            pass
        conv = self._format.converter(type)
        with contextlib.suppress(TypeError):  # an unhashable type expression is not cached
            self._converters[type] = conv
        return conv

    def _dumps(self, plain: Any) -> bytes:
        raise NotImplementedError

    def _loads(self, data: bytes) -> Any:
        raise NotImplementedError
