"""The dref-only `DRefMembership` service (docs/raft-wire.md#membership): its method names
and our values ⇄ its protobuf bytes."""

from __future__ import annotations

from typing import Any, Final

from dref_raft._pb import dref_membership_pb2
from dref_raft.commands import MemberInfo, MembersView
from dref_raft.errors import WireError
from dref_raft.wire.messages import DEFAULT_MAX_MESSAGE_BYTES, PACKAGE, parse

__all__ = [
    "ADD_METHOD",
    "LIST_METHOD",
    "MEMBERSHIP_SERVICE",
    "REMOVE_METHOD",
    "TRANSFER_METHOD",
    "decode_add_request",
    "decode_members",
    "decode_remove_request",
    "decode_transfer_request",
    "decode_transfer_response",
    "encode_add_request",
    "encode_list_request",
    "encode_members",
    "encode_remove_request",
    "encode_transfer_request",
    "encode_transfer_response",
]

MEMBERSHIP_SERVICE: Final = f"{PACKAGE}.DRefMembership"
ADD_METHOD: Final = "AddMember"
REMOVE_METHOD: Final = "RemoveMember"
LIST_METHOD: Final = "ListMembers"
TRANSFER_METHOD: Final = "TransferLeadership"

_PB = dref_membership_pb2


def _serialize(msg: Any, what: str) -> bytes:
    try:
        return bytes(msg.SerializeToString())
    except (ValueError, TypeError) as exc:
        raise WireError(f"cannot encode {what}: {exc}") from exc


def _build(cls: Any, what: str, **fields: Any) -> bytes:
    try:
        msg = cls(**fields)
    except (ValueError, TypeError) as exc:
        raise WireError(f"cannot encode {what}: {exc}") from exc
    return _serialize(msg, what)


def encode_add_request(node_id: str, address: str) -> bytes:
    """An `AddMemberRequest`."""
    return _build(_PB.AddMemberRequest, "AddMemberRequest", node_id=node_id, address=address)


def decode_add_request(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> tuple[str, str]:
    """(node_id, address) of an `AddMemberRequest`; both must be set."""
    msg = parse(_PB.AddMemberRequest, data, "AddMemberRequest", max_bytes)
    node_id, address = str(msg.node_id), str(msg.address)
    if not node_id or not address:
        raise WireError("AddMemberRequest needs node_id and address")
    return node_id, address


def encode_remove_request(node_id: str) -> bytes:
    """A `RemoveMemberRequest`."""
    return _build(_PB.RemoveMemberRequest, "RemoveMemberRequest", node_id=node_id)


def decode_remove_request(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> str:
    """The node id of a `RemoveMemberRequest` (must be set)."""
    msg = parse(_PB.RemoveMemberRequest, data, "RemoveMemberRequest", max_bytes)
    if not msg.node_id:
        raise WireError("RemoveMemberRequest needs node_id")
    return str(msg.node_id)


def encode_list_request() -> bytes:
    """A `ListMembersRequest` (no fields)."""
    return _serialize(_PB.ListMembersRequest(), "ListMembersRequest")


def encode_transfer_request(node_id: str) -> bytes:
    """A `TransferLeadershipRequest` ("" : any up-to-date voter)."""
    return _build(_PB.TransferLeadershipRequest, "TransferLeadershipRequest", node_id=node_id)


def decode_transfer_request(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> str:
    """The target of a `TransferLeadershipRequest` ("": any)."""
    msg = parse(_PB.TransferLeadershipRequest, data, "TransferLeadershipRequest", max_bytes)
    return str(msg.node_id)


def encode_transfer_response(leader: str) -> bytes:
    """A `TransferLeadershipResponse`."""
    return _build(_PB.TransferLeadershipResponse, "TransferLeadershipResponse", leader=leader)


def decode_transfer_response(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> str:
    """The new leader of a `TransferLeadershipResponse`."""
    msg = parse(_PB.TransferLeadershipResponse, data, "TransferLeadershipResponse", max_bytes)
    return str(msg.leader)


def encode_members(view: MembersView) -> bytes:
    """A `MembersResponse`."""
    members = [
        _PB.MemberState(node_id=m.node_id, address=m.address, voter=m.voter, match_seq=m.match_seq)
        for m in view.members
    ]
    return _build(
        _PB.MembersResponse,
        "MembersResponse",
        members=members,
        config_seq=view.config_seq,
        committed=view.committed,
        leader=view.leader,
        last_seq=view.last_seq,
    )


def decode_members(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> MembersView:
    """A `MembersResponse` as a `MembersView`."""
    msg = parse(_PB.MembersResponse, data, "MembersResponse", max_bytes)
    return MembersView(
        tuple(
            MemberInfo(str(m.node_id), str(m.address), bool(m.voter), int(m.match_seq))
            for m in msg.members
        ),
        int(msg.config_seq),
        bool(msg.committed),
        str(msg.leader),
        int(msg.last_seq),
    )
