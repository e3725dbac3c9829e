"""Core messages ⇄ protobuf bytes, both directions (docs/raft-wire.md).

The generated `_pb` types stay inside this package: callers hand in and get back the core's
dataclasses (`dref_raft.core.messages`) and bytes.

* A message with `ext=False` encodes exactly as upstream's (no extension field is written);
  one with `ext=True` also carries `dref_ext` and the extension fields (numbers ≥ 1000).
* A received message without `dref_ext` decodes with every extension field at its default.
* Responses carry no sender on the wire: `decode_response` takes the request that was sent,
  names its `to` as the sender, and for upstream peers fills `match_seq` (AppendEntries:
  the request's `seq` on success; InstallSnapshot: its `last_seq` on success) and `read_ctx`
  (echoed) from it.
* Malformed or oversized bytes raise `WireError`, never anything else. A declared field that
  arrives with another wire type is malformed too (protobuf would keep it as an unknown field and
  leave the declared one unset, e.g. a snapshot without its entries; upstream's Rust rejects it).
"""

from __future__ import annotations

from typing import Any, Final

from google.protobuf.message import DecodeError, EncodeError

from dref_raft._pb import (
    dref_consensus_pb2,
    dref_ext_pb2,
    dref_pb2,
    dref_stream_pb2,
    dref_watch_pb2,
)
from dref_raft.commands import (
    COMPARE_REQUESTS,
    Command,
    CompareResult,
    MemberStatus,
    NamesPage,
    WatchEvent,
)
from dref_raft.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    PreVote,
    PreVoteResponse,
    ReadIndex,
    ReadIndexResponse,
    Request,
    Response,
    Vote,
    VoteResponse,
)
from dref_raft.core.types import Entry
from dref_raft.errors import WireError
from dref_raft.wire.command_bytes import command_bytes, remember
from dref_raft.wire.commands import (
    decode_command,
    encode_snapshot,
    misplaced_field,
    snapshot_of,
)

__all__ = [
    "COMPARE_METHOD",
    "CONSENSUS_METHODS",
    "CONSENSUS_SERVICE",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "EXT_SERVICE",
    "NAMES_METHOD",
    "PACKAGE",
    "PEER_SERVICE",
    "RAFT_METHODS",
    "RAFT_SERVICE",
    "SESSION_METHOD",
    "STATUS_METHOD",
    "STREAM_SERVICE",
    "WATCH_METHOD",
    "WATCH_SERVICE",
    "decode_compare_request",
    "decode_compare_response",
    "decode_member_status",
    "decode_names_request",
    "decode_names_response",
    "decode_request",
    "decode_response",
    "decode_stream_answers",
    "decode_stream_calls",
    "decode_watch_event",
    "decode_watch_request",
    "encode_compare_request",
    "encode_compare_response",
    "encode_member_status",
    "encode_names_request",
    "encode_names_response",
    "encode_request",
    "encode_response",
    "encode_status_request",
    "encode_stream_answers",
    "encode_stream_calls",
    "encode_watch_event",
    "encode_watch_request",
    "method_of",
    "method_path",
    "parse",
]

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest message accepted or sent (an InstallSnapshot carries the whole state)."""

PACKAGE: Final = "io.github.tobia80"
CONSENSUS_SERVICE: Final = f"{PACKAGE}.DRefConsensus"
RAFT_SERVICE: Final = f"{PACKAGE}.DRefRaft"
WATCH_SERVICE: Final = f"{PACKAGE}.DRefWatch"
WATCH_METHOD: Final = "Watch"
EXT_SERVICE: Final = f"{PACKAGE}.DRefExt"
COMPARE_METHOD: Final = "Compare"
NAMES_METHOD: Final = "Names"
STATUS_METHOD: Final = "Status"
STREAM_SERVICE: Final = f"{PACKAGE}.DRefStream"
SESSION_METHOD: Final = "Session"
#: dref-only, member to member: `DRefConsensus` calls over one `Session` stream
#: (docs/raft-wire.md#drefpeer).
PEER_SERVICE: Final = f"{PACKAGE}.DRefPeer"

# Request type → DRefConsensus method name (upstream's order, docs/protocol.md#wire-dref-consensus).
_METHOD_OF: Final[dict[type[Any], str]] = {
    AppendEntries: "AppendEntries",
    Heartbeat: "Heartbeat",
    ReadIndex: "ReadIndex",
    Vote: "RequestVote",
    PreVote: "RequestPreVote",
    InstallSnapshot: "InstallSnapshot",
}
CONSENSUS_METHODS: Final = tuple(_METHOD_OF.values())
RAFT_METHODS: Final = (
    "SetElement",
    "ExpireElement",
    "SetElementIfNotExist",
    "GetElement",
    "DeleteElement",
    "GetEndpoints",
    "SendCommand",
)

_PB = dref_consensus_pb2
# Method name → (request pb class, response pb class).
_CONSENSUS_PB: Final[dict[str, tuple[Any, Any]]] = {
    "AppendEntries": (_PB.AppendEntriesRequest, _PB.AppendEntriesResponse),
    "Heartbeat": (_PB.HeartbeatRequest, _PB.HeartbeatResponse),
    "ReadIndex": (_PB.ReadIndexRequest, _PB.ReadIndexResponse),
    "RequestVote": (_PB.VoteRequest, _PB.VoteResponse),
    "RequestPreVote": (_PB.PreVoteRequest, _PB.PreVoteResponse),
    "InstallSnapshot": (_PB.InstallSnapshotRequest, _PB.InstallSnapshotResponse),
}
_RAFT_PB: Final[dict[str, tuple[Any, Any]]] = {
    "SetElement": (dref_pb2.SetElementRequest, dref_pb2.SetElementResponse),
    "ExpireElement": (dref_pb2.ExpireElementRequest, dref_pb2.ExpireElementResponse),
    "SetElementIfNotExist": (
        dref_pb2.SetElementIfNotExistRequest,
        dref_pb2.SetElementIfNotExistResponse,
    ),
    "GetElement": (dref_pb2.GetElementRequest, dref_pb2.GetElementResponse),
    "DeleteElement": (dref_pb2.DeleteElementRequest, dref_pb2.DeleteElementResponse),
    "GetEndpoints": (dref_pb2.GetEndpointsRequest, dref_pb2.EndpointResponse),
    "SendCommand": (dref_pb2.SendCommandRequest, dref_pb2.SendCommandResponse),
}


def method_path(service: str, method: str) -> str:
    """The full gRPC method path, e.g. `/io.github.tobia80.DRefConsensus/AppendEntries`."""
    return f"/{service}/{method}"


def method_of(request: Request) -> str:
    """The `DRefConsensus` method that carries `request`."""
    try:
        return _METHOD_OF[type(request)]
    except KeyError:
        raise WireError(f"not a consensus request: {type(request).__name__}") from None


# ---------------------------------------------------------------------------- generic parsing


def parse(pb_class: Any, data: bytes, what: str, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Any:
    """Parse `data` as `pb_class`; malformed or larger than `max_bytes` → `WireError`."""
    if len(data) > max_bytes:
        raise WireError(f"{what} of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    msg = pb_class()
    try:
        msg.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError, TypeError) as exc:
        raise WireError(f"malformed {what} ({len(data)} bytes): {exc}") from exc
    misplaced = misplaced_field(msg)
    if misplaced is not None:
        raise WireError(f"malformed {what} ({len(data)} bytes): {misplaced}")
    return msg


def _serialize(msg: Any, what: str) -> bytes:
    try:
        return bytes(msg.SerializeToString())
    except (EncodeError, ValueError, TypeError) as exc:
        raise WireError(f"cannot encode {what}: {exc}") from exc


def _command_bytes(command: Command) -> bytes:
    try:
        return command_bytes(command)  # the leader's log write encoded it already
    except ValueError as exc:
        raise WireError(str(exc)) from exc


def _command(data: bytes) -> Command:
    try:
        command = decode_command(data)
    except ValueError as exc:  # wire.WireError is a ValueError
        raise WireError(f"malformed command: {exc}") from exc
    remember(command, data)  # a follower's log write stores these bytes
    return command


# ---------------------------------------------------------------------------- requests


def encode_request(request: Request) -> bytes:
    """Encode a core request as its `DRefConsensus` request message."""
    try:
        return _serialize(_request_pb(request), type(request).__name__)
    except (ValueError, TypeError) as exc:  # e.g. a negative term for a uint64 field
        raise WireError(f"cannot encode {type(request).__name__}: {exc}") from exc


def _request_pb(request: Request) -> Any:
    msg: Any
    match request:
        case AppendEntries():
            msg = _PB.AppendEntriesRequest(
                leader_id=request.sender,
                term=request.term,
                command=_command_bytes(request.command),
                seq=request.seq,
                commit_seq=request.commit_seq,
            )
            if request.ext:
                msg.dref_ext = True
                msg.prev_seq = request.prev_seq
                msg.prev_term = request.prev_term
                _put_entries(msg, request)
        case Heartbeat():
            msg = _PB.HeartbeatRequest(
                leader_id=request.sender, term=request.term, commit_seq=request.commit_seq
            )
            if request.ext:
                msg.dref_ext = True
                if request.timeout_now:
                    msg.timeout_now = True
        case ReadIndex():
            msg = _PB.ReadIndexRequest(leader_id=request.sender, term=request.term)
            if request.ext:
                msg.dref_ext = True
                msg.read_ctx = request.read_ctx
        case Vote() | PreVote():
            pb_class = _PB.VoteRequest if isinstance(request, Vote) else _PB.PreVoteRequest
            msg = pb_class(
                candidate_id=request.sender, term=request.term, last_seq=request.last_seq
            )
            if request.ext:
                msg.dref_ext = True
                msg.last_term = request.last_term
                if isinstance(request, Vote) and request.transfer:
                    msg.leadership_transfer = True
        case InstallSnapshot():
            msg = _PB.InstallSnapshotRequest(
                leader_id=request.sender, term=request.term, last_seq=request.last_seq
            )
            try:
                msg.snapshot.MergeFromString(encode_snapshot(request.snapshot))
            except (ValueError, DecodeError) as exc:
                raise WireError(f"cannot encode snapshot: {exc}") from exc
            if request.ext:
                msg.dref_ext = True
                msg.last_term = request.last_term
        case _:
            raise WireError(f"not a consensus request: {type(request).__name__}")
    return msg


def _put_entries(msg: Any, request: AppendEntries) -> None:
    first = request.entries[0] if request.entries else None
    if first is not None and (first.seq != request.seq or first.command != request.command):
        raise WireError(
            f"AppendEntries: the first entry (seq {first.seq}) must be the message's "
            f"seq {request.seq} and command"
        )
    for offset, entry in enumerate(request.entries):
        if entry.seq != request.seq + offset:
            raise WireError(
                f"AppendEntries: entries must be consecutive from seq {request.seq}, "
                f"got {entry.seq} at position {offset}"
            )
        command = msg.command if offset == 0 else _command_bytes(entry.command)
        msg.entries.add(seq=entry.seq, term=entry.term, command=command)


def decode_request(
    method: str, data: bytes, to: str, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> Request:
    """Decode the request of `DRefConsensus/<method>` addressed to node `to`."""
    try:
        pb_request, _ = _CONSENSUS_PB[method]
    except KeyError:
        raise WireError(f"unknown DRefConsensus method {method!r}") from None
    msg = parse(pb_request, data, pb_request.DESCRIPTOR.name, max_bytes)
    ext = bool(msg.dref_ext)
    match method:
        case "AppendEntries":
            command = _command(bytes(msg.command))
            entries: tuple[Entry, ...] = ()
            if ext:
                entries = _read_entries(msg, command)
            return AppendEntries(
                sender=str(msg.leader_id),
                to=to,
                term=int(msg.term),
                seq=int(msg.seq),
                command=command,
                commit_seq=int(msg.commit_seq),
                ext=ext,
                prev_seq=int(msg.prev_seq) if ext else 0,
                prev_term=int(msg.prev_term) if ext else 0,
                entries=entries,
            )
        case "Heartbeat":
            return Heartbeat(
                str(msg.leader_id), to, int(msg.term), int(msg.commit_seq), ext=ext,
                timeout_now=ext and bool(msg.timeout_now),
            )  # fmt: skip
        case "ReadIndex":
            return ReadIndex(
                str(msg.leader_id), to, int(msg.term), ext=ext,
                read_ctx=int(msg.read_ctx) if ext else 0,
            )  # fmt: skip
        case "RequestVote":
            return Vote(
                str(msg.candidate_id), to, int(msg.term), int(msg.last_seq), ext=ext,
                last_term=int(msg.last_term) if ext else 0,
                transfer=ext and bool(msg.leadership_transfer),
            )  # fmt: skip
        case "RequestPreVote":
            return PreVote(
                str(msg.candidate_id), to, int(msg.term), int(msg.last_seq), ext=ext,
                last_term=int(msg.last_term) if ext else 0,
            )  # fmt: skip
        case _:  # "InstallSnapshot"
            # Parsed and checked with the request (`parse`): no second decode.
            return InstallSnapshot(
                str(msg.leader_id), to, int(msg.term), snapshot_of(msg.snapshot),
                int(msg.last_seq), ext=ext,
                last_term=int(msg.last_term) if ext else 0,
            )  # fmt: skip


def _read_entries(msg: Any, command: Command) -> tuple[Entry, ...]:
    seq = int(msg.seq)
    entries = []
    for offset, item in enumerate(msg.entries):
        if int(item.seq) != seq + offset:
            raise WireError(
                f"AppendEntries: entries must be consecutive from seq {seq}, "
                f"got {int(item.seq)} at position {offset}"
            )
        if offset == 0:
            if bytes(item.command) != bytes(msg.command):
                raise WireError("AppendEntries: entries[0] differs from `command`")
            entries.append(Entry(seq, int(item.term), command))
        else:
            entries.append(Entry(int(item.seq), int(item.term), _command(bytes(item.command))))
    return tuple(entries)


# ---------------------------------------------------------------------------- responses


def encode_response(response: Response) -> bytes:
    """Encode a core response as its `DRefConsensus` response message."""
    try:
        return _serialize(_response_pb(response), type(response).__name__)
    except (ValueError, TypeError) as exc:
        raise WireError(f"cannot encode {type(response).__name__}: {exc}") from exc


def _response_pb(response: Response) -> Any:
    msg: Any
    match response:
        case AppendEntriesResponse():
            msg = _PB.AppendEntriesResponse(success=response.success, term=response.term)
            if response.ext:
                msg.dref_ext = True
                msg.match_seq = response.match_seq
                msg.reject_hint = response.reject_hint
        case HeartbeatResponse():
            msg = _PB.HeartbeatResponse(acknowledged=response.acknowledged, term=response.term)
            if response.ext:
                msg.dref_ext = True
                msg.last_seq = response.last_seq
        case ReadIndexResponse():
            msg = _PB.ReadIndexResponse(granted=response.granted, term=response.term)
            if response.ext:
                msg.dref_ext = True
                msg.read_ctx = response.read_ctx
        case VoteResponse() | PreVoteResponse():
            pb_class = (
                _PB.VoteResponse if isinstance(response, VoteResponse) else _PB.PreVoteResponse
            )
            msg = pb_class(granted=response.granted, term=response.term)
            if response.ext:
                msg.dref_ext = True
        case InstallSnapshotResponse():
            msg = _PB.InstallSnapshotResponse(success=response.success, term=response.term)
            if response.ext:
                msg.dref_ext = True
                msg.match_seq = response.match_seq
        case _:
            raise WireError(f"not a consensus response: {type(response).__name__}")
    return msg


def decode_response(
    request: Request, data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> Response:
    """Decode the response to `request` (sender = `request.to`, to = `request.sender`)."""
    _, pb_response = _CONSENSUS_PB[method_of(request)]
    msg = parse(pb_response, data, pb_response.DESCRIPTOR.name, max_bytes)
    ext = bool(msg.dref_ext)
    sender, to, term = request.to, request.sender, int(msg.term)
    match request:
        case AppendEntries():
            success = bool(msg.success)
            if ext:
                match_seq, hint = int(msg.match_seq), int(msg.reject_hint)
            else:  # an upstream follower stores exactly the one entry at `seq`
                match_seq, hint = (request.seq if success else 0), 0
            return AppendEntriesResponse(sender, to, term, success, match_seq, ext, hint)
        case Heartbeat():
            last_seq = int(msg.last_seq) if ext else 0
            return HeartbeatResponse(sender, to, term, bool(msg.acknowledged), ext, last_seq)
        case ReadIndex():
            read_ctx = int(msg.read_ctx) if ext else request.read_ctx
            return ReadIndexResponse(sender, to, term, bool(msg.granted), read_ctx, ext)
        case Vote():
            return VoteResponse(sender, to, term, bool(msg.granted), ext)
        case PreVote():
            return PreVoteResponse(sender, to, term, bool(msg.granted), ext)
        case _:  # InstallSnapshot
            success = bool(msg.success)
            upstream_match = request.last_seq if success else 0
            match_seq = int(msg.match_seq) if ext else upstream_match
            return InstallSnapshotResponse(sender, to, term, success, match_seq, ext)


# ---------------------------------------------------------------------------- DRefRaft, DRefWatch


def raft_pb_classes(method: str) -> tuple[Any, Any]:
    """The (request, response) protobuf classes of `DRefRaft/<method>` (transport-internal)."""
    return _RAFT_PB[method]


def encode_watch_request(names: list[str], from_seq: int) -> bytes:
    """Encode a `WatchRequest`."""
    try:
        msg: Any = dref_watch_pb2.WatchRequest(names=names, from_seq=from_seq)
    except (ValueError, TypeError) as exc:
        raise WireError(f"cannot encode WatchRequest: {exc}") from exc
    return _serialize(msg, "WatchRequest")


def decode_watch_request(
    data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> tuple[list[str], int]:
    """Decode a `WatchRequest` into (names, from_seq)."""
    msg = parse(dref_watch_pb2.WatchRequest, data, "WatchRequest", max_bytes)
    return [str(n) for n in msg.names], int(msg.from_seq)


def encode_watch_event(event: WatchEvent) -> bytes:
    """Encode a `WatchEvent` (absent value = deleted)."""
    try:
        msg: Any = dref_watch_pb2.WatchEvent(name=event.name, seq=event.seq, resync=event.resync)
        if event.value is not None:
            msg.value = event.value
    except (ValueError, TypeError) as exc:
        raise WireError(f"cannot encode WatchEvent: {exc}") from exc
    return _serialize(msg, "WatchEvent")


def decode_watch_event(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> WatchEvent:
    """Decode a `WatchEvent`."""
    msg = parse(dref_watch_pb2.WatchEvent, data, "WatchEvent", max_bytes)
    value = bytes(msg.value) if msg.HasField("value") else None
    return WatchEvent(str(msg.name), value, int(msg.seq), bool(msg.resync))


# ---------------------------------------------------------------------------- DRefExt


def encode_compare_request(command: Command) -> bytes:
    """Encode a `CompareRequest` carrying `command` (a compare command) as StateCommand bytes."""
    if not isinstance(command, COMPARE_REQUESTS):
        raise WireError(f"not a compare command: {type(command).__name__}")
    msg: Any = dref_ext_pb2.CompareRequest(command=_command_bytes(command))
    return _serialize(msg, "CompareRequest")


def decode_compare_request(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Command:
    """Decode a `CompareRequest`; anything but a compare command → `WireError`."""
    msg = parse(dref_ext_pb2.CompareRequest, data, "CompareRequest", max_bytes)
    command = _command(bytes(msg.command))
    if not isinstance(command, COMPARE_REQUESTS):
        raise WireError(f"CompareRequest carries {type(command).__name__}, not a compare command")
    return command


def encode_compare_response(result: CompareResult) -> bytes:
    """Encode a `CompareResponse` (absent `current` = missing)."""
    try:
        msg: Any = dref_ext_pb2.CompareResponse(
            matched=result.matched, seq=result.seq, stale=result.stale, ahead=result.ahead
        )
        if result.current is not None:
            msg.current = result.current
    except (ValueError, TypeError) as exc:
        raise WireError(f"cannot encode CompareResponse: {exc}") from exc
    return _serialize(msg, "CompareResponse")


def decode_compare_response(
    data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> CompareResult:
    """Decode a `CompareResponse`."""
    msg = parse(dref_ext_pb2.CompareResponse, data, "CompareResponse", max_bytes)
    current = bytes(msg.current) if msg.HasField("current") else None
    return CompareResult(bool(msg.matched), current, int(msg.seq), bool(msg.stale), int(msg.ahead))


def encode_names_request(prefix: str, after: str, limit: int) -> bytes:
    """Encode a `NamesRequest` (`after` "": from the start; `limit` 0: the member's page)."""
    try:
        msg: Any = dref_ext_pb2.NamesRequest(prefix=prefix, after=after, limit=limit)
    except (ValueError, TypeError) as exc:
        raise WireError(f"cannot encode NamesRequest: {exc}") from exc
    return _serialize(msg, "NamesRequest")


def decode_names_request(
    data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> tuple[str, str, int]:
    """Decode a `NamesRequest` into (prefix, after, limit)."""
    msg = parse(dref_ext_pb2.NamesRequest, data, "NamesRequest", max_bytes)
    return str(msg.prefix), str(msg.after), int(msg.limit)


def encode_names_response(page: NamesPage) -> bytes:
    """Encode a `NamesResponse`."""
    try:
        msg: Any = dref_ext_pb2.NamesResponse(names=list(page.names), more=page.more)
    except (ValueError, TypeError) as exc:
        raise WireError(f"cannot encode NamesResponse: {exc}") from exc
    return _serialize(msg, "NamesResponse")


def decode_names_response(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> NamesPage:
    """Decode a `NamesResponse`."""
    msg = parse(dref_ext_pb2.NamesResponse, data, "NamesResponse", max_bytes)
    return NamesPage(tuple(str(n) for n in msg.names), bool(msg.more))


def encode_status_request() -> bytes:
    """Encode a `StatusRequest` (it has no fields)."""
    return _serialize(dref_ext_pb2.StatusRequest(), "StatusRequest")


def encode_member_status(status: MemberStatus) -> bytes:
    """Encode a `StatusResponse`."""
    try:
        msg: Any = dref_ext_pb2.StatusResponse(
            node_id=status.node_id,
            role=status.role,
            term=status.term,
            commit=status.commit,
            applied=status.applied,
        )
        if status.leader is not None:
            msg.leader = status.leader
        if status.last_contact_ms is not None:
            msg.last_contact_ms = status.last_contact_ms
    except (ValueError, TypeError) as exc:
        raise WireError(f"cannot encode StatusResponse: {exc}") from exc
    return _serialize(msg, "StatusResponse")


def decode_member_status(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> MemberStatus:
    """Decode a `StatusResponse`."""
    msg = parse(dref_ext_pb2.StatusResponse, data, "StatusResponse", max_bytes)
    return MemberStatus(
        node_id=str(msg.node_id),
        role=str(msg.role),
        term=int(msg.term),
        commit=int(msg.commit),
        applied=int(msg.applied),
        leader=str(msg.leader) if msg.HasField("leader") else None,
        last_contact_ms=int(msg.last_contact_ms) if msg.HasField("last_contact_ms") else None,
    )


# ---------------------------------------------------------------------------- DRefStream
# A call is (id, method path, request bytes); an answer is (id, response bytes, status code,
# details): code 0 is success, anything else the gRPC status the unary method would fail with.


def encode_stream_calls(calls: list[tuple[int, str, bytes]]) -> bytes:
    """Encode a `StreamCalls` batch."""
    try:
        msg: Any = dref_stream_pb2.StreamCalls()
        add = msg.calls.add
        for call_id, method, request in calls:
            add(id=call_id, method=method, request=request)
    except (ValueError, TypeError) as exc:
        raise WireError(f"cannot encode StreamCalls: {exc}") from exc
    return _serialize(msg, "StreamCalls")


def decode_stream_calls(
    data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> list[tuple[int, str, bytes]]:
    """Decode a `StreamCalls` batch; a call without a method → `WireError`."""
    msg = parse(dref_stream_pb2.StreamCalls, data, "StreamCalls", max_bytes)
    calls = [(int(c.id), str(c.method), bytes(c.request)) for c in msg.calls]
    for call_id, method, _ in calls:
        if not method:
            raise WireError(f"StreamCalls: call {call_id} names no method")
    return calls


def encode_stream_answers(answers: list[tuple[int, bytes, int, str]]) -> bytes:
    """Encode a `StreamAnswers` batch."""
    try:
        msg: Any = dref_stream_pb2.StreamAnswers()
        add = msg.answers.add
        for call_id, response, code, details in answers:
            add(id=call_id, response=response, code=code, details=details)
    except (ValueError, TypeError) as exc:
        raise WireError(f"cannot encode StreamAnswers: {exc}") from exc
    return _serialize(msg, "StreamAnswers")


def decode_stream_answers(
    data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> list[tuple[int, bytes, int, str]]:
    """Decode a `StreamAnswers` batch."""
    msg = parse(dref_stream_pb2.StreamAnswers, data, "StreamAnswers", max_bytes)
    return [(int(a.id), bytes(a.response), int(a.code), str(a.details)) for a in msg.answers]
