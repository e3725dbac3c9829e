"""A scripted upstream DRef node (docs/protocol.md#wire-dref-consensus, #raft-prevote to
#raft-install-snapshot) over raw `grpc.aio` bytes.

It never sets a field numbered ≥ 1000, and checks every byte it receives against upstream's
schema: the generated `_pb` descriptors with the dref extension fields (≥ 1000) left out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from dref_raft._pb import dref_consensus_pb2 as cpb
from dref_raft._pb import raft_pb2, state_command_pb2

SERVICE = "io.github.tobia80.DRefConsensus"
EXTENSION_FLOOR = 1000
UPSTREAM_COMMANDS = frozenset(
    {
        "set_element",
        "set_element_if_not_exist",
        "delete_element",
        "expire_element",
        "delete_if_expired",
        "start_new_term",
    }
)
REQUESTS: dict[str, tuple[Any, Any]] = {
    "AppendEntries": (cpb.AppendEntriesRequest, cpb.AppendEntriesResponse),
    "Heartbeat": (cpb.HeartbeatRequest, cpb.HeartbeatResponse),
    "ReadIndex": (cpb.ReadIndexRequest, cpb.ReadIndexResponse),
    "RequestVote": (cpb.VoteRequest, cpb.VoteResponse),
    "RequestPreVote": (cpb.PreVoteRequest, cpb.PreVoteResponse),
    "InstallSnapshot": (cpb.InstallSnapshotRequest, cpb.InstallSnapshotResponse),
}

_LENGTH_DELIMITED = {
    FieldDescriptor.TYPE_MESSAGE,
    FieldDescriptor.TYPE_STRING,
    FieldDescriptor.TYPE_BYTES,
}
_VARINT = {
    FieldDescriptor.TYPE_BOOL,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_ENUM,
}


class WireViolation(AssertionError):
    """Bytes that upstream's parser would not read as the message upstream expects."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    for _ in range(10):
        if pos >= len(data):
            raise WireViolation("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise WireViolation("varint longer than 10 bytes")


def check_wire(data: bytes, descriptor: Descriptor) -> set[int]:
    """Walk every field of `data`: a field below 1000 must be one of upstream's fields of
    `descriptor` with its wire type (nested messages and UTF-8 checked too); fields ≥ 1000 are
    what upstream's parser skips. Returns the numbers of the skipped fields."""
    skipped: set[int] = set()
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireViolation(f"{descriptor.name}: field number 0")
        payload = b""
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            payload = data[pos : pos + length]
            pos += length
        else:
            raise WireViolation(f"{descriptor.name}: wire type {wire_type} (groups?)")
        if pos > len(data):
            raise WireViolation(f"{descriptor.name}: field {number} runs past the end")
        if number >= EXTENSION_FLOOR:
            skipped.add(number)
            continue
        fd = descriptor.fields_by_number.get(number)
        if fd is None:
            raise WireViolation(f"{descriptor.name}: field {number} is not upstream's")
        if fd.type in _LENGTH_DELIMITED:
            if wire_type != 2:
                raise WireViolation(f"{descriptor.name}.{fd.name}: wire type {wire_type}")
            if fd.type == FieldDescriptor.TYPE_MESSAGE:
                assert fd.message_type is not None
                check_wire(payload, fd.message_type)
            elif fd.type == FieldDescriptor.TYPE_STRING:
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise WireViolation(f"{descriptor.name}.{fd.name}: {exc}") from exc
        elif fd.type in _VARINT:
            if wire_type != 0:
                raise WireViolation(f"{descriptor.name}.{fd.name}: wire type {wire_type}")
        else:
            raise WireViolation(f"{descriptor.name}.{fd.name}: unexpected type {fd.type}")
    return skipped


def upstream_parse(pb_class: Any, data: bytes) -> Any:
    """`data` checked against upstream's schema, then parsed with the generated class."""
    check_wire(data, pb_class.DESCRIPTOR)
    return pb_class.FromString(data)


def upstream_command(data: bytes) -> state_command_pb2.StateCommand:
    """A `StateCommand` upstream can apply: exactly one of upstream's six oneof members."""
    if not data:
        raise WireViolation("AppendEntries without a command")
    command: state_command_pb2.StateCommand = upstream_parse(state_command_pb2.StateCommand, data)
    which = command.WhichOneof("op")
    if which not in UPSTREAM_COMMANDS:
        raise WireViolation(f"StateCommand op {which!r} is not one of upstream's")
    return command


def only_upstream_fields(msg: Any) -> bytes:
    """Serialize `msg`, asserting the double set no field ≥ 1000."""
    data: bytes = msg.SerializeToString()
    skipped = check_wire(data, msg.DESCRIPTOR)
    assert not skipped, f"the upstream double set dref fields {skipped}"
    return data


@dataclass
class Received:
    method: str
    data: bytes
    msg: Any


@dataclass
class UpstreamFollower:
    """Upstream's follower/voter rules (docs/protocol.md#raft-prevote, #raft-election,
    #raft-append-entries to #raft-install-snapshot) over a dict state."""

    node_id: str = "u"
    term: int = 0
    voted_for: str | None = None
    leader_id: str | None = None
    last_seq: int = 0
    commit_seq: int = 0
    last_applied: int = 0
    pending: dict[int, bytes] = field(default_factory=dict)
    state: dict[str, bytes] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    reject_next_append: bool = False
    grant_prevote: bool = True
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def of(self, method: str) -> list[Any]:
        return [r.msg for r in self.received if r.method == method]

    def _adopt(self, leader: str, term: int) -> None:
        if term > self.term:
            self.term, self.voted_for = term, None
        self.leader_id = leader

    def _apply_committed(self, commit: int) -> None:
        effective = min(commit, self.last_seq)
        if effective <= self.commit_seq:
            return
        for seq in range(self.last_applied + 1, effective + 1):
            data = self.pending.pop(seq, None)
            if data is None:
                break
            op = state_command_pb2.StateCommand.FromString(data)
            which = op.WhichOneof("op")
            if which in ("set_element", "set_element_if_not_exist"):
                sub = getattr(op, which)
                if which == "set_element" or sub.name not in self.state:
                    self.state[sub.name] = sub.value
            elif which in ("delete_element", "delete_if_expired"):
                self.state.pop(getattr(op, which).name, None)
            self.last_applied = seq
            self.commit_seq = seq

    def handle(self, method: str, data: bytes) -> bytes:
        request_class, _ = REQUESTS[method]
        try:
            msg = upstream_parse(request_class, data)
        except WireViolation as exc:
            self.violations.append(f"{method}: {exc}")
            raise
        self.received.append(Received(method, data, msg))
        self.changed.set()
        match method:
            case "RequestPreVote":
                granted = (
                    self.grant_prevote and msg.term > self.term and msg.last_seq >= self.last_seq
                )
                return only_upstream_fields(cpb.PreVoteResponse(granted=granted, term=self.term))
            case "RequestVote":
                if msg.term < self.term:
                    return only_upstream_fields(cpb.VoteResponse(granted=False, term=self.term))
                if msg.term > self.term:
                    self.term, self.voted_for, self.leader_id = msg.term, None, None
                granted = msg.last_seq >= self.last_seq and self.voted_for in (
                    None,
                    msg.candidate_id,
                )
                if granted:
                    self.voted_for = msg.candidate_id
                return only_upstream_fields(cpb.VoteResponse(granted=granted, term=self.term))
            case "AppendEntries":
                try:
                    upstream_command(msg.command)
                except WireViolation as exc:
                    self.violations.append(f"AppendEntries {msg.seq}: {exc}")
                    raise
                if msg.term < self.term:
                    return only_upstream_fields(
                        cpb.AppendEntriesResponse(success=False, term=self.term)
                    )
                self._adopt(msg.leader_id, msg.term)
                if self.reject_next_append or msg.seq != self.last_seq + 1:
                    self.reject_next_append = False
                    return only_upstream_fields(
                        cpb.AppendEntriesResponse(success=False, term=self.term)
                    )
                self.last_seq = msg.seq
                self.pending[msg.seq] = msg.command
                self._apply_committed(msg.commit_seq)
                return only_upstream_fields(cpb.AppendEntriesResponse(success=True, term=self.term))
            case "Heartbeat":
                if msg.term < self.term:
                    return only_upstream_fields(
                        cpb.HeartbeatResponse(acknowledged=False, term=self.term)
                    )
                self._adopt(msg.leader_id, msg.term)
                self._apply_committed(msg.commit_seq)
                return only_upstream_fields(
                    cpb.HeartbeatResponse(acknowledged=True, term=self.term)
                )
            case "ReadIndex":
                granted = msg.term == self.term and self.leader_id == msg.leader_id
                return only_upstream_fields(cpb.ReadIndexResponse(granted=granted, term=self.term))
            case _:  # InstallSnapshot
                if msg.term < self.term:
                    return only_upstream_fields(
                        cpb.InstallSnapshotResponse(success=False, term=self.term)
                    )
                self._adopt(msg.leader_id, msg.term)
                self.last_seq = msg.last_seq
                self.pending.clear()
                self.state = {e.key: e.value for e in msg.snapshot.entries}
                self.commit_seq = self.last_applied = msg.last_seq
                return only_upstream_fields(
                    cpb.InstallSnapshotResponse(success=True, term=self.term)
                )


async def serve_upstream(follower: UpstreamFollower, port: int) -> grpc.aio.Server:
    """A raw-bytes `DRefConsensus` server on 127.0.0.1:`port` answering as `follower`."""

    def method(name: str) -> grpc.RpcMethodHandler:
        async def call(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return follower.handle(name, data)

        return grpc.unary_unary_rpc_method_handler(call)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {m: method(m) for m in REQUESTS}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


class UpstreamLeader:
    """Raw client calls as an upstream leader makes them; responses checked byte by byte."""

    def __init__(self, address: str, node_id: str = "u") -> None:
        self.node_id = node_id
        self.channel = grpc.aio.insecure_channel(address)

    async def call(self, method: str, request: Any) -> Any:
        _, response_class = REQUESTS[method]
        stub: Callable[..., Any] = self.channel.unary_unary(f"/{SERVICE}/{method}")
        data = await stub(only_upstream_fields(request), timeout=5.0)
        assert isinstance(data, bytes)
        return upstream_parse(response_class, data)

    async def aclose(self) -> None:
        await self.channel.close()


def set_element(name: str, value: bytes) -> bytes:
    return only_upstream_fields(
        state_command_pb2.StateCommand(
            set_element=state_command_pb2.SetElementCommand(name=name, value=value)
        )
    )


def kv(key: str, value: bytes) -> raft_pb2.KVEntry:
    return raft_pb2.KVEntry(key=key, value=value)
