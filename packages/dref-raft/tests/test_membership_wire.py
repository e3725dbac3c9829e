"""The membership extensions on the wire (docs/raft-wire.md#membership): the configuration
entry, the configuration in snapshots, TimeoutNow and the transfer flag of a Vote, and the
`DRefMembership` messages. Upstream-shaped messages stay byte for byte upstream's."""

from __future__ import annotations

import pytest

from dref_raft.commands import ConfigChange, MemberInfo, Membership, MembersView
from dref_raft.core import Heartbeat, Vote
from dref_raft.errors import WireError
from dref_raft.fsm import ClusterSnapshot, SnapshotEntry
from dref_raft.wire import membership as wire
from dref_raft.wire.commands import (
    decode_command,
    decode_snapshot,
    encode_command,
    encode_snapshot,
)
from dref_raft.wire.messages import decode_request, encode_request

M = Membership(("a", "b", "c"), ("d",), (("a", "127.0.0.1:1"), ("d", "127.0.0.1:4")))


def test_a_configuration_entry_round_trips_as_state_command_field_1400() -> None:
    data = encode_command(ConfigChange(M))
    assert data[:2] == b"\xc2\x57"  # the tag of field 1400, length-delimited
    assert decode_command(data) == ConfigChange(M)


def test_snapshots_carry_the_configuration_and_stay_upstream_shaped_without_one() -> None:
    entries = (SnapshotEntry("k", b"v"),)
    with_config = ClusterSnapshot(entries, 7, 2, M)
    assert decode_snapshot(encode_snapshot(with_config)) == with_config
    plain = ClusterSnapshot(entries, 7, 2)
    assert decode_snapshot(encode_snapshot(plain)).membership is None
    assert encode_snapshot(with_config).startswith(encode_snapshot(plain))


def test_timeout_now_and_the_transfer_vote_are_dref_extensions_only() -> None:
    hb = Heartbeat("a", "b", 3, 5, ext=True, timeout_now=True)
    assert decode_request("Heartbeat", encode_request(hb), "b") == hb
    vote = Vote("b", "a", 4, 9, ext=True, last_term=3, transfer=True)
    assert decode_request("RequestVote", encode_request(vote), "a") == vote
    # without dref_ext nothing is read (an upstream sender never sets it) and nothing written
    upstream = Heartbeat("a", "b", 3, 5)
    assert encode_request(upstream) == encode_request(Heartbeat("a", "b", 3, 5, timeout_now=True))
    assert encode_request(Vote("b", "a", 4, 9)) == encode_request(
        Vote("b", "a", 4, 9, transfer=True)
    )


def test_membership_service_messages_round_trip_and_refuse_bad_input() -> None:
    view = MembersView(
        (MemberInfo("a", "h:1", True, 9), MemberInfo("d", "h:4", False, 3)), 8, True, "a", 9
    )
    assert wire.decode_members(wire.encode_members(view)) == view
    assert view.voters == ("a",)
    assert view.learners == ("d",)
    assert wire.decode_add_request(wire.encode_add_request("d", "h:4")) == ("d", "h:4")
    assert wire.decode_remove_request(wire.encode_remove_request("d")) == "d"
    assert wire.decode_transfer_request(wire.encode_transfer_request("")) == ""
    with pytest.raises(WireError, match="needs node_id and address"):
        wire.decode_add_request(wire.encode_add_request("d", ""))
    with pytest.raises(WireError, match="needs node_id"):
        wire.decode_remove_request(b"")
    with pytest.raises(WireError):
        wire.decode_members(b"\xff\xff")
