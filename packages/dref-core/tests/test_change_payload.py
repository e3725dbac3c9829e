"""The Redis change notification (upstream's ChangePayload): golden bytes, flavors, errors."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dref import change_payload
from dref.changes import ChangeEvent
from dref.errors import CodecError, ConfigurationError

VECTORS: dict[str, Any] = json.loads(
    (files("dref_compat") / "data" / "vectors.json").read_text(encoding="utf-8")
)
FLAVORS = pytest.mark.parametrize("flavor", ["scala", "rust"])


@FLAVORS
def test_set_vector(flavor: Any) -> None:
    vector = VECTORS["change_payload_set"]
    event = ChangeEvent(vector["name"], bytes.fromhex(vector["value_hex"]))
    assert not vector["delete"]
    assert change_payload.encode(event, flavor=flavor).hex() == vector["payload_hex"]
    assert change_payload.decode(bytes.fromhex(vector["payload_hex"])) == event


@FLAVORS
def test_delete_vector(flavor: Any) -> None:
    vector = VECTORS["change_payload_delete"]
    event = ChangeEvent(vector["name"], None)
    assert vector["delete"]
    assert change_payload.encode(event, flavor=flavor).hex() == vector["payload_hex"]
    assert change_payload.decode(bytes.fromhex(vector["payload_hex"])) == event


def test_high_bytes_follow_the_flavor() -> None:
    event = ChangeEvent("k\u00e9", b"\x81\xff")  # name bytes 6b c3 a9
    scala = "83a46e616d6593" + "6bd0c3d0a9" + "a576616c756592" + "d081ff" + "a664656c657465c2"
    rust = "83a46e616d6593" + "6bccc3cca9" + "a576616c756592" + "cc81ccff" + "a664656c657465c2"
    assert change_payload.encode(event).hex() == scala
    assert change_payload.encode(event, flavor="rust").hex() == rust
    assert change_payload.decode(bytes.fromhex(scala)) == event
    assert change_payload.decode(bytes.fromhex(rust)) == event


def test_lenient_forms() -> None:
    pack = msgpack.packb
    assert change_payload.decode(pack({"name": b"k", "value": b"\x01"})) == ChangeEvent(
        "k", b"\x01"
    )
    assert change_payload.decode(pack({"name": [107], "value": [], "x": 1})) == ChangeEvent(
        "k", b""
    )
    deleted = pack({"name": [107], "value": [1, 2], "delete": True})
    assert change_payload.decode(deleted) == ChangeEvent("k", None)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc1", r"invalid msgpack data: "),
        ([1, 2], r"expected a map, got array of 2 items$"),
        ("text", r"expected a map, got str 'text'$"),
        ({"value": []}, r"missing required field 'name' of ChangePayload at \$$"),
        ({"name": [107]}, r"missing required field 'value' of ChangePayload at \$$"),
        ({"name": "k", "value": []}, r"expected bytes \(bin or array of byte ints\) at \$\.name"),
        ({"name": [107], "value": [1, 256]}, r"expected a byte .* at \$\.value\[1\], got int 256$"),
        ({"name": [107], "value": [-129]}, r"expected a byte .* at \$\.value\[0\], got int -129$"),
        ({"name": [107], "value": [1.0]}, r"expected a byte .* at \$\.value\[0\], got float 1\.0$"),
        ({"name": [107], "value": [], "delete": 1}, r"expected bool at \$\.delete, got int 1$"),
        ({"name": [0xFF], "value": []}, r"name is not valid UTF-8 \(invalid start byte\)$"),
    ],
)
def test_malformed_payloads(payload: Any, reason: str) -> None:
    data = payload if isinstance(payload, bytes) else msgpack.packb(payload)
    with pytest.raises(CodecError, match=r"^invalid change payload: " + reason):
        change_payload.decode(data)


def test_unknown_flavor() -> None:
    with pytest.raises(ConfigurationError, match="flavor"):
        change_payload.encode(ChangeEvent("k", None), flavor="java")  # type: ignore[arg-type]


@FLAVORS
@given(name=st.text(), value=st.none() | st.binary())
def test_round_trip(flavor: Any, name: str, value: bytes | None) -> None:
    event = ChangeEvent(name, value)
    assert change_payload.decode(change_payload.encode(event, flavor=flavor)) == event
