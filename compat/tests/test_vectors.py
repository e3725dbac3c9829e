"""Shipped golden vectors are upstream's files, unchanged, and pass through the public API."""

from __future__ import annotations

import hashlib
from importlib.resources import files

import pytest

import dref
from dref import change_payload, lock_value
from dref.changes import ChangeEvent
from dref.codecs import MsgPackCodec
from dref_compat.vectors import VECTOR_FILES, load_vectors, vector_bytes

# sha256 of upstream's files: any edit of a golden vector fails here.
UPSTREAM_SHA256 = {
    "command_log_vectors": "5cf71d59a0a726941d41b690551860622af9742602d5e75c6023307aec2ca7ec",
    "consensus_vectors": "67fb1cb7c44d53748df97b46e32dd0cb8e7ec6bb04d106cacf0e36f84ad34561",
    "snapshot_vectors": "e46c94e507dbea64baa36b3d66e5f63c7ad0fc934575e4f3322f83db4eebecdf",
    "vectors": "da45505928651bbe2d378637c3a948809da0ab1720e072bef8772d09d2e9e4e3",
    "voter_state_vectors": "87170090933599923ac365c9914894cc8f621c0aab7aafbdfcc7d93fd7f5871c",
}


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_files_are_upstreams_unchanged(name: str) -> None:
    data = (files("dref_compat") / "data" / f"{name}.json").read_bytes()
    assert hashlib.sha256(data).hexdigest() == UPSTREAM_SHA256[name]
    assert load_vectors(name)["description"]  # type: ignore[arg-type]


def test_unknown_vector_file() -> None:
    with pytest.raises(ValueError, match="unknown vector file"):
        load_vectors("nope")  # type: ignore[arg-type]


def test_lock_value() -> None:
    vec = load_vectors("vectors")["lock_value"]
    assert lock_value.to_bytes(vec["value"]) == vector_bytes("vectors", "lock_value", "hex")
    assert lock_value.from_bytes(bytes.fromhex(vec["hex"])) == 42


@pytest.mark.parametrize("flavor", ["scala", "rust"])
@pytest.mark.parametrize("key", ["change_payload_set", "change_payload_delete"])
def test_change_payloads(key: str, flavor: str) -> None:
    vec = load_vectors("vectors")[key]
    value = None if vec["delete"] else bytes.fromhex(vec["value_hex"])
    event = ChangeEvent(vec["name"], value)
    payload = bytes.fromhex(vec["payload_hex"])
    assert change_payload.encode(event, flavor=flavor) == payload  # type: ignore[arg-type]
    assert change_payload.decode(payload) == event


async def test_msgpack_values_through_a_context() -> None:
    vectors = load_vectors("vectors")
    async with dref.connect("inmemory", namespace="compat-vectors") as ctx:
        hello = await ctx.make(vectors["msgpack_string_hello"]["value"], "compat:hello")
        raw = await ctx.backend.get(hello.name)
        assert raw == vector_bytes("vectors", "msgpack_string_hello", "hex")
        plain = MsgPackCodec().decode(vector_bytes("vectors", "msgpack_wrapper_hello", "hex"))
        assert plain == vectors["msgpack_wrapper_hello"]["value"]


def test_redis_crosslang_key_is_a_plain_name() -> None:
    assert load_vectors("vectors")["redis_crosslang_key"] == "dref:compat:crosslang-test"
