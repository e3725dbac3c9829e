"""The cached notification parts give exactly `change_payload.encode`'s bytes
(docs/protocol.md#codec-change-payload)."""

from __future__ import annotations

import random

import pytest

from dref import change_payload
from dref.changes import ChangeEvent
from dref.codecs import Flavor
from dref_redis.payloads import PayloadEncoder

NAMES = [
    "k",
    "my-key",
    "lock:my-key",
    "prefix:élément-ü",
    "value",  # a name that spells the field it precedes
    "\x80\xff" * 40,  # long name, code points that need more than one byte
    "{tag}:x}",
]


@pytest.mark.parametrize("flavor", ["scala", "rust"])
def test_payloads_are_the_encoders_bytes(flavor: Flavor) -> None:
    payloads = PayloadEncoder(flavor, cache_size=2)  # smaller than NAMES: evictions too
    rng = random.Random(7)
    values = [b"", b"\x00", b"value", bytes(range(256)), rng.randbytes(70_000)]
    values += [rng.randbytes(8) for _ in range(50)]  # lock tokens
    for _ in range(2):
        for name in NAMES:
            key = name.encode()
            for value in values:
                expected = change_payload.encode(ChangeEvent(name, value), flavor=flavor)
                assert payloads.set(key, value) == expected
            deleted = change_payload.encode(ChangeEvent(name, None), flavor=flavor)
            assert payloads.delete(key) == deleted
