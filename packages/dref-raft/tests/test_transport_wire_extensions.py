"""dref's extension fields of `StateCommand`/`ClusterSnapshot` encode to pinned bytes.

The bytes were produced by the earlier hand-encoder of `wire.py`; the generated fields
(`now = 1000`, `StartNewTermCommand.term = 1000`, `ClusterSnapshot.last_term = 1000`)
must reproduce them exactly, and upstream-only parsers must still read the rest.
"""

from __future__ import annotations

import pytest

from dref_raft._pb import state_command_pb2
from dref_raft.commands import (
    Command,
    CompareAndDelete,
    CompareAndExpire,
    CompareAndSet,
    StartNewTerm,
)
from dref_raft.fsm import ClusterSnapshot, SnapshotEntry
from dref_raft.wire.commands import (
    decode_command,
    decode_command_term,
    decode_snapshot,
    encode_command,
    encode_snapshot,
)

PINNED: list[tuple[Command, str]] = [
    (CompareAndSet("k", None, b"v", None, 1700000000000), "ca3e0e0a016b1a0176c03e80d095ffbc31"),
    (CompareAndSet("k", b"a", b"v", 5, 1), "ca3e0e0a016b1201611a01762005c03e01"),
    (CompareAndSet("k", b"", b"", 0, 0), "ca3e070a016b12002000"),
    (CompareAndDelete("k", b"x", 2**63), "d23e120a016b120178c03e80808080808080808001"),
    (CompareAndDelete("k", b"x", 0), "d23e060a016b120178"),
    (CompareAndExpire("k", b"x", 9, 1234567), "da3e0d0a016b1201781809c03e87ad4b"),
]


@pytest.mark.parametrize(("command", "hex_bytes"), PINNED)
def test_compare_commands_keep_their_bytes(command: Command, hex_bytes: str) -> None:
    assert encode_command(command).hex() == hex_bytes
    assert decode_command(bytes.fromhex(hex_bytes)) == command


@pytest.mark.parametrize(
    ("term", "hex_bytes"), [(7, "3203c03e07"), (2**40, "3208c03e808080808020")]
)
def test_start_new_term_keeps_its_bytes(term: int, hex_bytes: str) -> None:
    assert encode_command(StartNewTerm(), term=term).hex() == hex_bytes
    assert decode_command_term(bytes.fromhex(hex_bytes)) == (StartNewTerm(), term)
    # without a term it is upstream's empty marker
    assert encode_command(StartNewTerm()).hex() == "3200"
    assert decode_command_term(bytes.fromhex("3200")) == (StartNewTerm(), None)


def test_snapshot_last_term_keeps_its_bytes() -> None:
    snapshot = ClusterSnapshot((SnapshotEntry("a", b"1", None),), 5, 3)
    assert encode_snapshot(snapshot).hex() == "0a060a01611201311005c03e03"
    assert decode_snapshot(bytes.fromhex("0a060a01611201311005c03e03")) == snapshot


def test_now_is_a_generated_field() -> None:
    msg = state_command_pb2.StateCommand()
    msg.ParseFromString(bytes.fromhex(PINNED[0][1]))
    assert msg.compare_and_set.now == 1700000000000


def test_out_of_range_now_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        encode_command(CompareAndDelete("k", b"x", 2**64))
