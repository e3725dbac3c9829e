"""Commands and snapshots encode to upstream's protobuf bytes and back
(docs/protocol.md#golden-consensus, #wire-state-command)."""

from __future__ import annotations

import pytest
from hypothesis import given
from raft_helpers import COMMANDS, SNAPSHOTS, load_vectors

from dref_raft.commands import (
    Command,
    DeleteElement,
    DeleteIfExpired,
    ExpireElement,
    NoOp,
    SetElement,
    SetIfNotExist,
    StartNewTerm,
)
from dref_raft.fsm import ClusterSnapshot, SnapshotEntry
from dref_raft.wire.commands import (
    WireError,
    decode_command,
    decode_snapshot,
    encode_command,
    encode_snapshot,
)

VECTORS = load_vectors("consensus_vectors")


def test_set_element_vector() -> None:
    v = VECTORS["state_command_set_element"]
    command = SetElement(v["name"], bytes.fromhex(v["value_hex"]), v["expire_at"])
    assert encode_command(command).hex() == v["payload_hex"]
    assert decode_command(bytes.fromhex(v["payload_hex"])) == command


def test_delete_element_vector() -> None:
    v = VECTORS["state_command_delete_element"]
    assert encode_command(DeleteElement(v["name"])).hex() == v["payload_hex"]
    assert decode_command(bytes.fromhex(v["payload_hex"])) == DeleteElement(v["name"])


def test_cluster_snapshot_vector() -> None:
    v = VECTORS["cluster_snapshot_single_entry"]
    snapshot = ClusterSnapshot(
        (SnapshotEntry(v["key"], bytes.fromhex(v["value_hex"]), v["expire_at"]),), last_seq=0
    )
    assert encode_snapshot(snapshot).hex() == v["payload_hex"]
    assert decode_snapshot(bytes.fromhex(v["payload_hex"])) == snapshot


@pytest.mark.parametrize(
    ("command", "hex_bytes"),
    [
        # hand-computed examples of docs/protocol.md#wire-state-command
        (ExpireElement("k", 5), "22050a016b1005"),
        (StartNewTerm(), "3200"),
        (SetIfNotExist("k", b"\x01"), "12060a016b120101"),
        # proto3 `optional`: Some(0) is encoded, None is omitted
        (SetElement("k", b"", 0), "0a050a016b1800"),
        (SetElement("k", b""), "0a030a016b"),
        (DeleteIfExpired("k", 7), "2a050a016b1007"),
        (NoOp(), ""),
    ],
)
def test_encodings_from_the_spec(command: Command, hex_bytes: str) -> None:
    assert encode_command(command).hex() == hex_bytes
    assert decode_command(bytes.fromhex(hex_bytes)) == command


def test_an_operation_unknown_here_decodes_as_a_no_op() -> None:
    # field 7 of StateCommand: a future upstream operation; upstream applies it as a no-op
    assert decode_command(bytes.fromhex("3a00")) == NoOp()


@given(COMMANDS)
def test_every_command_round_trips(command: Command) -> None:
    assert decode_command(encode_command(command)) == command


@given(SNAPSHOTS)
def test_every_snapshot_round_trips(snapshot: ClusterSnapshot) -> None:
    assert decode_snapshot(encode_snapshot(snapshot)) == snapshot


@pytest.mark.parametrize(
    "hex_bytes",
    [
        "ffff",  # not protobuf
        "0a05",  # set_element announces 5 bytes, none follow
        "1a030a01ff",  # delete_element whose name is not UTF-8
    ],
)
def test_malformed_command_bytes_raise_a_wire_format_error(hex_bytes: str) -> None:
    with pytest.raises(WireError, match="not a valid StateCommand"):
        decode_command(bytes.fromhex(hex_bytes))


def test_malformed_snapshot_bytes_raise_a_wire_format_error() -> None:
    with pytest.raises(WireError, match="not a valid ClusterSnapshot"):
        decode_snapshot(bytes.fromhex("0a160a0a73"))


@pytest.mark.parametrize(
    "command",
    [SetElement("k", b"", -1), ExpireElement("k", 2**64), DeleteIfExpired("k", -5)],
)
def test_out_of_range_times_are_refused_when_encoding(command: Command) -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        encode_command(command)


def test_fenced_write_round_trips_in_the_extension_field() -> None:
    from dref_raft.commands import FENCE_COMPARE, FencedWrite
    from dref_raft.wire.commands import FENCED_WRITE_FIELD, decode_command, encode_command

    for command in (
        FencedWrite("lock", b"\x01" * 8, "x", b"v", 123, FENCE_COMPARE, b"e", 99),
        FencedWrite("lock", b"\x02" * 8, "x", None),
    ):
        data = encode_command(command)
        assert decode_command(data) == command
    assert FENCED_WRITE_FIELD == 1004
