"""MsgPackCodec: upstream's golden bytes, both flavors, typed decoding, leniency and errors."""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any, Generic, Literal, NamedTuple, Optional, TypeVar

import msgpack
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dref.codecs import Codec, JsonCodec, MsgPackCodec
from dref.errors import CodecError, ConfigurationError

VECTORS: dict[str, Any] = json.loads(
    (files("dref_compat") / "data" / "vectors.json").read_text(encoding="utf-8")
)
SCALA, RUST = MsgPackCodec("scala"), MsgPackCodec("rust")
T = TypeVar("T")
BOTH = pytest.mark.parametrize("codec", [SCALA, RUST], ids=["scala", "rust"])


@dataclass
class Wrapper:
    value: str


class WrapperModel(pydantic.BaseModel):
    value: str


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Point(NamedTuple):
    x: int
    y: int = 0


@dataclass(frozen=True)
class Item:
    name: str
    qty: int = 1
    tags: frozenset[str] = frozenset()


@dataclass
class Order:
    id: int
    items: list[Item]
    note: Optional[str] = None  # noqa: UP045 - the typing spelling must work too
    blob: bytes = b""
    color: Color = Color.RED
    scores: dict[int, float] = field(default_factory=dict)
    where: Point | None = None


@dataclass
class Maybe:
    o: int | None


@dataclass
class MaybeList:
    o: list[int] | None


@dataclass
class Blob:
    data: bytes


@dataclass
class Node:
    label: str
    children: list[Node] = field(default_factory=list)


class Profile(pydantic.BaseModel):
    name: str = pydantic.Field(alias="userName")
    age: int = pydantic.Field(ge=0)
    nick: str | None = None


@dataclass
class Trio:
    a: int
    b: str
    c: float


def h(data: bytes) -> str:
    return data.hex()


# -- golden vectors --------------------------------------------------------------------------------


@BOTH
def test_vector_string_hello(codec: MsgPackCodec) -> None:
    vector = VECTORS["msgpack_string_hello"]
    assert h(codec.encode(vector["value"])) == vector["hex"]
    assert codec.decode(bytes.fromhex(vector["hex"]), str) == vector["value"]
    assert codec.decode(bytes.fromhex(vector["hex"])) == vector["value"]


@BOTH
@pytest.mark.parametrize("cls", [Wrapper, WrapperModel])
def test_vector_wrapper_hello(codec: MsgPackCodec, cls: type[Wrapper | WrapperModel]) -> None:
    vector = VECTORS["msgpack_wrapper_hello"]
    value = cls(**vector["value"])
    assert h(codec.encode(value)) == vector["hex"]
    assert codec.decode(bytes.fromhex(vector["hex"]), cls) == value
    assert codec.decode(bytes.fromhex(vector["hex"])) == vector["value"]


# -- scalar formats --------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "c0"),
        (False, "c2"),
        (True, "c3"),
        (0, "00"),
        (127, "7f"),
        (128, "cc80"),
        (65535, "cdffff"),
        (2**32, "cf0000000100000000"),
        (-1, "ff"),
        (-32, "e0"),
        (-33, "d0df"),
        (-129, "d1ff7f"),
        (-(2**63), "d38000000000000000"),
        (1.5, "cb3ff8000000000000"),
        ("", "a0"),
        ("é", "a2c3a9"),
        ("x" * 32, "d920" + "78" * 32),
        ([1, "a"], "9201a161"),
        ((1, 2), "920102"),
        ({"k": 1}, "81a16b01"),
    ],
)
def test_smallest_formats(codec: MsgPackCodec, value: Any, expected: str) -> None:
    assert h(codec.encode(value)) == expected


def test_bytes_are_int_arrays_signed_for_scala_unsigned_for_rust() -> None:
    data = bytes([0x00, 0x7F, 0x80, 0xDF, 0xE0, 0xFF])
    assert h(SCALA.encode(data)) == "96007fd080d0dfe0ff"
    assert h(RUST.encode(data)) == "96007fcc80ccdfcce0ccff"
    for codec in (SCALA, RUST):
        for form in ("96007fd080d0dfe0ff", "96007fcc80ccdfcce0ccff", "c406007f80dfe0ff"):
            assert codec.decode(bytes.fromhex(form), bytes) == data


@BOTH
def test_bytes_inside_a_struct_follow_the_flavor(codec: MsgPackCodec) -> None:
    encoded = codec.encode(Blob(b"\x01\xfe"))
    assert h(encoded) == ("81a46461746192" + ("01fe" if codec is SCALA else "01ccfe"))
    assert SCALA.decode(encoded, Blob) == RUST.decode(encoded, Blob) == Blob(b"\x01\xfe")


def test_optional_field_scala_form_is_an_array_rust_form_is_bare() -> None:
    assert h(SCALA.encode(Maybe(None))) == "81a16f90"
    assert h(SCALA.encode(Maybe(5))) == "81a16f9105"
    assert h(RUST.encode(Maybe(None))) == "81a16fc0"
    assert h(RUST.encode(Maybe(5))) == "81a16f05"
    for codec in (SCALA, RUST):
        assert codec.decode(bytes.fromhex("81a16f90"), Maybe) == Maybe(None)
        assert codec.decode(bytes.fromhex("81a16fc0"), Maybe) == Maybe(None)
        assert codec.decode(bytes.fromhex("81a16f9105"), Maybe) == Maybe(5)
        assert codec.decode(bytes.fromhex("81a16f05"), Maybe) == Maybe(5)


def test_optional_in_collections_and_with_an_explicit_type() -> None:
    assert SCALA.encode([None, 1], list[Optional[int]]) == bytes.fromhex("92909101")  # noqa: UP045
    assert RUST.encode([None, 1], list[int | None]) == bytes.fromhex("92c001")
    assert SCALA.encode(None, int | None) == b"\x90"
    assert SCALA.encode(None) == b"\xc0"  # no type given: plain nil
    assert SCALA.decode(b"\x92\x90\x91\x01", list[int | None]) == [None, 1]
    assert RUST.decode(b"\x92\x90\x91\x01", list[int | None]) == [None, 1]


def test_ambiguous_optional_follows_the_flavor() -> None:
    empty, one = b"\x81\xa1o\x90", b"\x81\xa1o\x91\x05"
    assert SCALA.decode(empty, MaybeList) == MaybeList(None)
    assert RUST.decode(empty, MaybeList) == MaybeList([])
    assert SCALA.decode(one, MaybeList) == MaybeList([5])  # [5] is no Some: read bare
    assert RUST.decode(one, MaybeList) == MaybeList([5])
    wrapped = SCALA.encode(MaybeList([1, 2]))
    assert h(wrapped) == "81a16f91920102"
    assert SCALA.decode(wrapped, MaybeList) == RUST.decode(wrapped, MaybeList) == MaybeList([1, 2])
    assert SCALA.decode(RUST.encode(MaybeList([])), MaybeList) == MaybeList(None)  # documented


# -- typed decoding --------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize(
    ("value", "tp"),
    [
        (5, int),
        (2.5, float),
        ("s", str),
        (True, bool),
        (None, None),
        (None, type(None)),
        (b"\x00\xff", bytes),
        ([1, 2], list[int]),
        ((1, "a"), tuple[int, str]),
        ((1, 2, 3), tuple[int, ...]),
        ((), tuple[()]),
        ({1: "a", 2: "b"}, dict[int, str]),
        ({(1, 2): "pair"}, dict[tuple[int, int], str]),
        ({3, 1, 2}, set[int]),
        (frozenset({"a"}), frozenset[str]),
        (Color.GREEN, Color),
        ("b", Literal["a", "b"]),
        (Point(1, 2), Point),
        ({"any": [1, {"x": None}]}, Any),
        ([1, "a", None], list[int | str | None]),
        (Node("root", [Node("a"), Node("b", [Node("c")])]), Node),
        ({"o": [Order(1, [Item("x", 2, frozenset({"t"}))], "n", b"\xff", Color.BLUE)]}, Any),
    ],
)
def test_typed_round_trip(codec: MsgPackCodec, value: Any, tp: Any) -> None:
    decoded = codec.decode(codec.encode(value, tp), tp)
    if tp is Any:
        return  # Any decodes plain values; only check that it encodes and decodes
    assert decoded == value
    assert type(decoded) is type(value)


@BOTH
def test_nested_dataclass_round_trip(codec: MsgPackCodec) -> None:
    order = Order(
        7,
        [Item("a"), Item("b", 3, frozenset({"x", "y"}))],
        note=None,
        blob=bytes(range(256)),
        color=Color.BLUE,
        scores={1: 0.5, -2: 1.0},
        where=Point(3, 4),
    )
    assert codec.decode(codec.encode(order), Order) == order


def test_field_order_and_names_are_declaration_order() -> None:
    encoded = SCALA.encode(Trio(1, "x", 2.0))
    assert h(encoded) == "83a16101a162a178a163cb4000000000000000"
    assert SCALA.decode(encoded) == {"a": 1, "b": "x", "c": 2.0}


def test_pydantic_models_use_field_names_not_aliases() -> None:
    profile = Profile(userName="ann", age=3)
    encoded = SCALA.encode(profile)
    assert SCALA.decode(encoded) == {"name": "ann", "age": 3, "nick": []}
    assert SCALA.decode(encoded, Profile) == profile
    message = r"^cannot construct Profile: age: Input should be greater than or equal to 0 at \$$"
    with pytest.raises(CodecError, match=message):
        SCALA.decode(SCALA.encode({"name": "ann", "age": -1}), Profile)


def test_enum_forms() -> None:
    assert SCALA.encode(Color.GREEN) == RUST.encode(Color.GREEN) == b"\xa5GREEN"
    assert SCALA.decode(b"\xa5GREEN", Color) is Color.GREEN
    assert SCALA.decode(b"\x02", Color) is Color.BLUE  # case index, declaration order
    assert SCALA.decode(b"\xa5green", Color) is Color.GREEN  # a str value is accepted too
    with pytest.raises(CodecError, match=r"expected Color \(variant name or index\) at \$"):
        SCALA.decode(b"\x03", Color)


def test_namedtuple_is_an_array_and_decodes_from_a_map() -> None:
    assert SCALA.encode(Point(1, 2)) == b"\x92\x01\x02"
    assert SCALA.decode(SCALA.encode({"x": 5}), Point) == Point(5, 0)


@dataclass
class Box(Generic[T]):
    item: T


def test_generic_dataclass_and_plain_conversion() -> None:
    assert SCALA.decode(SCALA.encode(Box([1])), Box[list[int]]) == Box([1])  # parameters: Any
    assert SCALA.to_plain(Maybe(None)) == {"o": []}
    assert RUST.to_plain(None, int | None) is None
    assert SCALA.from_plain({"o": [3]}, Maybe) == Maybe(3)


def test_sets_encode_deterministically() -> None:
    assert SCALA.encode({"b", "a", "c"}) == SCALA.encode({"c", "a", "b"}) == b"\x93\xa1a\xa1b\xa1c"


# -- leniency --------------------------------------------------------------------------------------


@BOTH
def test_struct_leniency(codec: MsgPackCodec) -> None:
    pack = msgpack.packb
    assert codec.decode(pack(["x", 2]), Item) == Item("x", 2)  # positional, as rmp-serde accepts
    assert codec.decode(pack(["x"]), Item) == Item("x")  # missing trailing field: its default
    assert codec.decode(pack({"name": "x", "extra": [1]}), Item) == Item("x")  # unknown: ignored
    assert codec.decode(pack({}), Maybe) == Maybe(None)  # missing Optional: None, as serde does
    assert codec.decode(pack({"value": "v"}), WrapperModel) == WrapperModel(value="v")
    assert codec.decode(pack([1, 2.0]), tuple[float, float]) == (1.0, 2.0)  # int for float


def test_untyped_decode_gives_plain_values() -> None:
    data = SCALA.encode({"b": b"\x01", "t": (1, 2), "s": {2, 1}, "e": Color.RED, "i": Item("n")})
    assert SCALA.decode(data) == {
        "b": [1],
        "t": [1, 2],
        "s": [1, 2],
        "e": "RED",
        "i": {"name": "n", "qty": 1, "tags": []},
    }
    assert SCALA.decode(msgpack.packb({(1, 2): "k"})) == {(1, 2): "k"}  # array key → tuple


# -- errors ----------------------------------------------------------------------------------------


@dataclass
class Shelf:
    items: list[Item]


@pytest.mark.parametrize(
    ("plain", "tp", "message"),
    [
        (
            {"items": [{"name": "a"}] * 3 + [{"name": 5}]},
            Shelf,
            r"^expected str at \$\.items\[3\]\.name, got int 5$",
        ),
        ({"items": [{}]}, Shelf, r"^missing required field 'name' of Item at \$\.items\[0\]$"),
        ({"items": "x"}, Shelf, r"^expected list\[.*Item\] \(array\) at \$\.items, got str 'x'$"),
        (["a", 1, [], 4], Item, r"^expected Item \(map or array\) with at most 3 items at \$"),
        ("x", Item, r"^expected Item \(map or array\) at \$, got str 'x'$"),
        (True, int, r"^expected int at \$, got bool True$"),
        (1.5, int, r"^expected int at \$, got float 1\.5$"),
        ({"a": "x"}, dict[str, int], r"^expected int at \$\.a, got str 'x'$"),
        ({"a b": "x"}, dict[str, int], r"^expected int at \$\['a b'\], got str 'x'$"),
        ({"a": 1}, dict[int, int], r"^expected int at \$\[key 'a'\], got str 'a'$"),
        ([1, 300], bytes, r"^expected a byte \(int in -128\.\.255\) at \$\[1\], got int 300$"),
        ([1, -129], bytes, r"at \$\[1\], got int -129$"),
        ("ab", bytes, r"^expected bytes \(bin or array of byte ints\) at \$, got str 'ab'$"),
        ([1, 2, 3], tuple[int, int], r"^expected tuple\[int, int\] \(array of 2\) at \$"),
        ([1, "x"], tuple[int, int], r"^expected int at \$\[1\], got str 'x'$"),
        (["x"], Maybe, r"^expected int or None at \$\.o, got str 'x'$"),
        ({"o": [1, 2]}, Maybe, r"^expected int or None at \$\.o, got array of 2 items$"),
        ({"o": ["x"]}, Maybe, r"^expected int at \$\.o\[0\], got str 'x'$"),
        (1.5, int | str, r"^expected int \| str at \$, got float 1\.5$"),
        ("c", Literal["a", "b"], r"^expected 'a' \| 'b' at \$, got str 'c'$"),
        ([[1]], set[Any], r"^expected hashable elements for set\[.*Any\] at \$"),
    ],
)
def test_mismatch_messages_say_what_and_where(plain: Any, tp: Any, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        SCALA.decode(msgpack.packb(plain), tp)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", r"^invalid msgpack data: "),
        (b"\x92\x01", r"^invalid msgpack data: "),
        (b"\x01\x02", r"^invalid msgpack data: "),
        (b"\xc1", r"^invalid msgpack data: "),
        (b"\xa2\xff\xfe", r"^invalid msgpack data: .*utf-8"),
        (b"\xd4\x05\x00", r"^invalid msgpack data: msgpack extension type 5 is not supported$"),
    ],
)
def test_malformed_data(data: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        SCALA.decode(data)


def test_encode_errors_name_the_type() -> None:
    class Opaque:
        pass

    with pytest.raises(CodecError, match=r"cannot encode a value of type .*Opaque$"):
        SCALA.encode({"x": [Opaque()]})
    with pytest.raises(CodecError, match=r"cannot encode int as msgpack: .*"):
        SCALA.encode(2**64)
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(CodecError, match=r"cannot encode list as msgpack: .*recursion"):
        SCALA.encode(cycle)
    with pytest.raises(CodecError, match=r"a map cannot be a map key"):
        SCALA.encode({Item("k"): 1})
    with pytest.raises(CodecError, match=r"unsupported type .*Opaque"):
        SCALA.decode(b"\xc0", Opaque)


def test_unsupported_field_type_is_reported_with_the_field() -> None:
    @dataclass
    class Bad:
        when: complex

    with pytest.raises(CodecError, match=r"unsupported type complex \(field .*Bad\.when\)"):
        SCALA.decode(b"\x80", Bad)


def test_flavor_is_validated_and_the_protocol_is_met() -> None:
    with pytest.raises(ConfigurationError, match="flavor"):
        MsgPackCodec("java")  # type: ignore[arg-type]
    assert SCALA.name == "msgpack"
    assert repr(RUST) == "MsgPackCodec(flavor='rust')"
    assert isinstance(SCALA, Codec)
    assert isinstance(JsonCodec(), Codec)


# -- properties ------------------------------------------------------------------------------------

INT64 = st.integers(-(2**63), 2**64 - 1)
PLAIN = st.recursive(
    st.none() | st.booleans() | INT64 | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5) | INT64, children, max_size=4)
    ),
    max_leaves=20,
)
ITEMS = st.builds(
    Item,
    name=st.text(),
    qty=INT64,
    tags=st.frozensets(st.text(max_size=3), max_size=3),
)
ORDERS = st.builds(
    Order,
    id=INT64,
    items=st.lists(ITEMS, max_size=3),
    note=st.none() | st.text(),
    blob=st.binary(),
    color=st.sampled_from(Color),
    scores=st.dictionaries(INT64, st.floats(allow_nan=False), max_size=3),
    where=st.none() | st.builds(Point, INT64, INT64),
)


@BOTH
@given(value=PLAIN)
def test_plain_values_round_trip(codec: MsgPackCodec, value: Any) -> None:
    assert codec.decode(codec.encode(value)) == value


@BOTH
@given(order=ORDERS)
def test_dataclasses_round_trip(codec: MsgPackCodec, order: Order) -> None:
    assert codec.decode(codec.encode(order), Order) == order
    assert RUST.decode(codec.encode(order), Order) == order  # every flavor reads every form
    assert SCALA.decode(codec.encode(order), Order) == order


@given(data=st.binary())
def test_byte_forms_agree(data: bytes) -> None:
    assert SCALA.decode(SCALA.encode(data), bytes) == data
    assert SCALA.decode(RUST.encode(data), bytes) == data
    assert [b & 0xFF for b in SCALA.decode(SCALA.encode(data))] == list(data)
    assert RUST.decode(RUST.encode(data)) == list(data)


@given(value=st.floats())
def test_floats_are_float64(value: float) -> None:
    encoded = SCALA.encode(value)
    assert encoded[0] == 0xCB
    decoded = SCALA.decode(encoded, float)
    assert decoded == value or (math.isnan(value) and math.isnan(decoded))
