"""The change notifications we publish, from parts cached per key.

Encoding upstream's `ChangePayload{name, value, delete}` (docs/protocol.md#codec-change-payload)
from scratch turns the name
into an int array every time, several µs per write. A key's notifications differ only in the
value, so each key's payload is split once around its value field: a set publishes
`head + <value as the flavor's int array> + tail`, a delete a cached payload. The bytes are
exactly `dref.change_payload.encode`'s (tested against it).
"""

from __future__ import annotations

import functools

from dref import change_payload
from dref.changes import ChangeEvent
from dref.codecs import Flavor, MsgPackCodec

__all__ = ["PayloadEncoder"]


class PayloadEncoder:
    """`set(key, value)` and `delete(key)` notifications in one msgpack flavor."""

    def __init__(self, flavor: Flavor, *, cache_size: int = 4096) -> None:
        self._flavor: Flavor = flavor
        self._codec = MsgPackCodec(flavor)
        self._field = self._codec.encode("value")
        self._empty = self._codec.encode(b"")
        self._parts = functools.lru_cache(maxsize=cache_size)(self._split)

    def set(self, key: bytes, value: bytes) -> bytes:
        head, tail, _ = self._parts(key)
        return head + self._codec.encode(value) + tail

    def delete(self, key: bytes) -> bytes:
        return self._parts(key)[2]

    def _split(self, key: bytes) -> tuple[bytes, bytes, bytes]:
        """(head, tail, delete payload) of `key`."""
        name = key.decode()
        empty = change_payload.encode(ChangeEvent(name, b""), flavor=self._flavor)
        # The value field is the last but `delete`, which cannot contain it: search from the end.
        value_at = empty.rfind(self._field + self._empty) + len(self._field)
        head, tail = empty[:value_at], empty[value_at + len(self._empty) :]
        return head, tail, change_payload.encode(ChangeEvent(name, None), flavor=self._flavor)
