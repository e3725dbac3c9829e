"""Lock tokens: 8 raw big-endian bytes, as upstream's LockValue."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dref import lock_value
from dref.errors import CodecError

VECTOR: dict[str, Any] = json.loads(
    (files("dref_compat") / "data" / "vectors.json").read_text(encoding="utf-8")
)["lock_value"]


def test_golden_vector_both_directions() -> None:
    assert lock_value.to_bytes(VECTOR["value"]).hex() == VECTOR["hex"]
    assert lock_value.from_bytes(bytes.fromhex(VECTOR["hex"])) == VECTOR["value"]


@pytest.mark.parametrize(
    ("value", "hex_"),
    [
        (0, "0000000000000000"),
        (-1, "ffffffffffffffff"),
        (2**63 - 1, "7fffffffffffffff"),
        (-(2**63), "8000000000000000"),
        (256, "0000000000000100"),
    ],
)
def test_twos_complement_big_endian(value: int, hex_: str) -> None:
    assert lock_value.to_bytes(value).hex() == hex_
    assert lock_value.from_bytes(bytes.fromhex(hex_)) == value


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**64])
def test_out_of_range_is_a_value_error(value: int) -> None:
    with pytest.raises(ValueError, match="outside the signed 64-bit range"):
        lock_value.to_bytes(value)


@pytest.mark.parametrize("size", [0, 7, 9, 16])
def test_only_exactly_eight_bytes_decode(size: int) -> None:
    with pytest.raises(CodecError, match=rf"^a lock value is exactly 8 bytes, got {size}$"):
        lock_value.from_bytes(b"\x00" * size)


@given(st.integers(-(2**63), 2**63 - 1))
def test_round_trip(value: int) -> None:
    assert lock_value.from_bytes(lock_value.to_bytes(value)) == value
