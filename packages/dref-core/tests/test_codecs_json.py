"""JsonCodec: compact UTF-8 JSON with the same typed decoding as the msgpack codec."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dref.codecs import JsonCodec
from dref.errors import CodecError

CODEC = JsonCodec()


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass
class Entry:
    key: str
    data: bytes = b""
    level: Level = Level.LOW
    parent: int | None = None
    counts: dict[int, int] = field(default_factory=dict)


@dataclass
class Batch:
    entries: list[Entry]
    labels: set[str] = field(default_factory=set)


class Settings(pydantic.BaseModel):
    name: str
    retries: int = 3


def test_compact_utf8_and_field_order() -> None:
    assert CODEC.name == "json"
    assert CODEC.encode({"a": [1, 2.5, None, True], "é": "ü"}) == (
        '{"a":[1,2.5,null,true],"é":"ü"}'.encode()
    )
    assert CODEC.encode(Entry("k", b"\x00\xff", Level.HIGH, 3, {1: 2})) == (
        b'{"key":"k","data":"AP8=","level":"HIGH","parent":3,"counts":{"1":2}}'
    )
    assert CODEC.encode(Settings(name="s")) == b'{"name":"s","retries":3}'


def test_typed_decoding() -> None:
    data = (
        b'{"entries":[{"key":"a","data":"AP8=","level":"HIGH","counts":{"-1":5}}],"labels":["x"]}'
    )
    assert CODEC.decode(data, Batch) == Batch(
        [Entry("a", b"\x00\xff", Level.HIGH, None, {-1: 5})], {"x"}
    )
    assert CODEC.decode(data)["entries"][0]["data"] == "AP8="
    assert CODEC.decode(b'{"name":"n"}', Settings) == Settings(name="n")
    assert CODEC.decode(b"[1,2]", tuple[int, int]) == (1, 2)


def test_bytes_accept_base64_and_int_arrays() -> None:
    assert CODEC.encode(b"\x00\xff") == b'"AP8="'
    assert CODEC.decode(b'"AP8="', bytes) == b"\x00\xff"
    assert CODEC.decode(b"[0,255]", bytes) == b"\x00\xff"
    assert CODEC.decode(b"[0,-1]", bytes) == b"\x00\xff"


def test_optional_is_null_or_the_value_only() -> None:
    assert CODEC.encode(None, int | None) == b"null"
    assert CODEC.decode(b'{"key":"k","parent":null}', Entry).parent is None
    with pytest.raises(CodecError, match=r"^expected int or None at \$\.parent, got array of 0"):
        CODEC.decode(b'{"key":"k","parent":[]}', Entry)


def test_sets_are_sorted_and_keys_are_strings() -> None:
    assert CODEC.encode({"b", "a"}) == b'["a","b"]'
    assert CODEC.encode({Level.HIGH: 1, 5: "x"}) == b'{"HIGH":1,"5":"x"}'
    assert CODEC.decode(b'{"2":"x"}', dict[int, str]) == {2: "x"}


@pytest.mark.parametrize(
    ("data", "tp", "message"),
    [
        (b'{"entries":[{"key":1}]}', Batch, r"^expected str at \$\.entries\[0\]\.key, got int 1$"),
        (
            b'{"entries":[{}]}',
            Batch,
            r"^missing required field 'key' of Entry at \$\.entries\[0\]$",
        ),
        (
            b'{"key":"k","data":"%%"}',
            Entry,
            r"^expected bytes \(base64 string or array of byte ints\) at \$\.data, got str '%%'$",
        ),
        (
            b'{"x":1}',
            dict[int, int],
            r"^expected int \(map key as a decimal string\) at \$\[key 'x'\]",
        ),
        (b'"MEDIUM"', Level, r"^expected Level \(variant name or index\) at \$, got str 'MEDIUM'$"),
    ],
)
def test_mismatch_messages(data: bytes, tp: Any, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        CODEC.decode(data, tp)


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"[1] [2]", b"NaN", b'"\xff"', '"é"'.encode("utf-16")],
)
def test_malformed_json(data: bytes) -> None:
    with pytest.raises(CodecError, match=r"^invalid JSON data: "):
        CODEC.decode(data)


def test_encode_errors() -> None:
    with pytest.raises(CodecError, match=r"cannot encode float as json: .*not JSON compliant"):
        CODEC.encode(float("nan"))
    with pytest.raises(CodecError, match=r"map key of type tuple as JSON"):
        CODEC.encode({(1, 2): 3})
    with pytest.raises(CodecError, match=r"cannot encode a value of type builtins\.complex$"):
        CODEC.encode([1j])


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)
ENTRIES = st.builds(
    Entry,
    key=st.text(),
    data=st.binary(),
    level=st.sampled_from(Level),
    parent=st.none() | st.integers(),
    counts=st.dictionaries(st.integers(), st.integers(), max_size=3),
)


@given(value=JSON_VALUES)
def test_plain_values_round_trip(value: Any) -> None:
    assert CODEC.decode(CODEC.encode(value)) == value


@given(batch=st.builds(Batch, st.lists(ENTRIES, max_size=3), st.sets(st.text(), max_size=3)))
def test_dataclasses_round_trip(batch: Batch) -> None:
    assert CODEC.decode(CODEC.encode(batch), Batch) == batch
