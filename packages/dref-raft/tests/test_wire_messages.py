"""Core messages ⇄ protobuf: round trips, upstream bytes, extension fields, malformed input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from raft_helpers import varint

from dref_raft.commands import (
    DeleteElement,
    DeleteIfExpired,
    ExpireElement,
    NoOp,
    SetElement,
    SetIfNotExist,
    StartNewTerm,
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
from dref_raft.fsm import ClusterSnapshot, SnapshotEntry
from dref_raft.wire import messages
from dref_raft.wire.snapshot_messages import decode_chunk

u64 = st.integers(0, 2**64 - 1)
small = st.integers(0, 2**20)
ids = st.text(min_size=1, max_size=8)
names = st.text(max_size=8)
commands = st.one_of(
    st.builds(SetElement, names, st.binary(max_size=8), st.none() | u64),
    st.builds(SetIfNotExist, names, st.binary(max_size=8), st.none() | u64),
    st.builds(DeleteElement, names),
    st.builds(ExpireElement, names, u64),
    st.builds(DeleteIfExpired, names, u64),
    st.just(StartNewTerm()),
    st.just(NoOp()),
)
snapshots = st.builds(
    ClusterSnapshot,
    st.lists(
        st.builds(SnapshotEntry, names, st.binary(max_size=8), st.none() | u64), max_size=3
    ).map(tuple),
    u64,
)


@st.composite
def append_entries(draw: Any) -> AppendEntries:
    ext = draw(st.booleans())
    seq, command = draw(small), draw(commands)
    entries: tuple[Entry, ...] = ()
    if ext and draw(st.booleans()):
        rest = draw(st.lists(st.tuples(u64, commands), max_size=3))
        later = [Entry(seq + i, term, c) for i, (term, c) in enumerate(rest, start=1)]
        entries = (Entry(seq, draw(u64), command), *later)
    return AppendEntries(
        draw(ids), draw(ids), draw(u64), seq, command, draw(u64), ext,
        draw(u64) if ext else 0, draw(u64) if ext else 0, entries,
    )  # fmt: skip


@st.composite
def requests(draw: Any) -> Request:
    ext = draw(st.booleans())
    sender, to, term = draw(ids), draw(ids), draw(u64)
    x = (lambda s: draw(s)) if ext else (lambda s: 0)
    return draw(
        st.sampled_from(
            [
                draw(append_entries()),
                Heartbeat(sender, to, term, draw(u64), ext),
                Vote(sender, to, term, draw(u64), ext, x(u64)),
                PreVote(sender, to, term, draw(u64), ext, x(u64)),
                ReadIndex(sender, to, term, ext, x(u64)),
                InstallSnapshot(sender, to, term, draw(snapshots), draw(u64), ext, x(u64)),
            ]
        )
    )


def responses_for(request: Request, ext: bool, term: int, ok: bool, a: int, b: int) -> Response:
    s, t = request.to, request.sender
    match request:
        case AppendEntries():
            if ext:
                return AppendEntriesResponse(s, t, term, ok, a, True, b)
            return AppendEntriesResponse(s, t, term, ok, request.seq if ok else 0)
        case Heartbeat():
            return HeartbeatResponse(s, t, term, ok, ext, a if ext else 0)
        case Vote():
            return VoteResponse(s, t, term, ok, ext)
        case PreVote():
            return PreVoteResponse(s, t, term, ok, ext)
        case ReadIndex():
            return ReadIndexResponse(s, t, term, ok, a if ext else request.read_ctx, ext)
        case InstallSnapshot():
            match_seq = a if ext else (request.last_seq if ok else 0)
            return InstallSnapshotResponse(s, t, term, ok, match_seq, ext)
    raise AssertionError(request)


@given(requests())
def test_every_request_round_trips(request: Request) -> None:
    data = messages.encode_request(request)
    assert messages.decode_request(messages.method_of(request), data, request.to) == request


@given(requests(), st.booleans(), u64, st.booleans(), u64, u64)
def test_every_response_round_trips(
    request: Request, ext: bool, term: int, ok: bool, a: int, b: int
) -> None:
    response = responses_for(request, ext, term, ok, a, b)
    assert messages.decode_response(request, messages.encode_response(response)) == response


# Hand-built upstream encodings (docs/protocol.md#wire-dref-consensus field tables): tag, value,
# ... in field order.
def _field(number: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    raw = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(raw)) + raw


SET_K = SetElement("my-key", b"\x01\x02\x03", 1700000000)
SET_K_BYTES = bytes.fromhex("0a130a066d792d6b657912030102031880e2cfaa06")  # golden vector


@pytest.mark.parametrize(
    ("message", "upstream"),
    [
        (
            AppendEntries("n1", "n2", 7, 12, SET_K, 11),
            _field(1, "n1") + _field(2, 7) + _field(3, SET_K_BYTES) + _field(4, 12)
            + _field(5, 11),
        ),
        (Heartbeat("n1", "n2", 7, 11), _field(1, "n1") + _field(2, 7) + _field(3, 11)),
        (ReadIndex("n1", "n2", 7), _field(1, "n1") + _field(2, 7)),
        (Vote("n1", "n2", 8, 12), _field(1, "n1") + _field(2, 8) + _field(3, 12)),
        (PreVote("n1", "n2", 8, 12), _field(1, "n1") + _field(2, 8) + _field(3, 12)),
        (
            InstallSnapshot(
                "n1", "n2", 7,
                ClusterSnapshot((SnapshotEntry("shared-key", b"hi", 1700000000),)), 12,
            ),
            _field(1, "n1") + _field(2, 7)
            + _field(3, bytes.fromhex("0a160a0a7368617265642d6b6579120268691880e2cfaa06"))
            + _field(4, 12),
        ),
        (AppendEntriesResponse("n2", "n1", 7, True), _field(1, 1) + _field(2, 7)),
        (HeartbeatResponse("n2", "n1", 7, True), _field(1, 1) + _field(2, 7)),
        (ReadIndexResponse("n2", "n1", 7, True), _field(1, 1) + _field(2, 7)),
        (VoteResponse("n2", "n1", 7, True), _field(1, 1) + _field(2, 7)),
        (PreVoteResponse("n2", "n1", 7, False), _field(2, 7)),
        (InstallSnapshotResponse("n2", "n1", 7, True), _field(1, 1) + _field(2, 7)),
    ],
)  # fmt: skip
def test_messages_without_extensions_encode_exactly_as_upstream(
    message: Request | Response, upstream: bytes
) -> None:
    if isinstance(
        message, AppendEntries | Heartbeat | ReadIndex | Vote | PreVote | InstallSnapshot
    ):
        assert messages.encode_request(message) == upstream
    else:
        assert messages.encode_response(message) == upstream


def test_extension_fields_use_numbers_from_1000_and_follow_the_upstream_bytes() -> None:
    plain = AppendEntries("n1", "n2", 7, 12, SET_K, 11)
    extended = AppendEntries(
        "n1", "n2", 7, 12, SET_K, 11, True, 11, 6, (Entry(12, 7, SET_K), Entry(13, 7, NoOp()))
    )
    data = messages.encode_request(extended)
    assert data.startswith(messages.encode_request(plain))
    tail = data[len(messages.encode_request(plain)) :]
    first = _field(1, 12) + _field(2, 7) + _field(3, SET_K_BYTES)
    second = _field(1, 13) + _field(2, 7)  # NoOp: empty command bytes are not written
    assert tail == (
        _field(1000, 1) + _field(1001, 11) + _field(1002, 6) + _field(1003, first)
        + _field(1003, second)
    )  # fmt: skip


def test_upstream_responses_get_match_seq_and_read_ctx_from_the_request() -> None:
    append = AppendEntries("n1", "n2", 7, 12, SET_K, 11, True, 11, 6, (Entry(12, 7, SET_K),))
    ok = messages.decode_response(append, _field(1, 1) + _field(2, 7))
    assert ok == AppendEntriesResponse("n2", "n1", 7, True, match_seq=12)
    refused = messages.decode_response(append, _field(2, 9))
    assert refused == AppendEntriesResponse("n2", "n1", 9, False, match_seq=0)
    read = ReadIndex("n1", "n2", 7, True, read_ctx=42)
    assert messages.decode_response(read, _field(1, 1) + _field(2, 7)).read_ctx == 42  # type: ignore[union-attr]
    snap = InstallSnapshot("n1", "n2", 7, ClusterSnapshot(), 30, True, 6)
    assert messages.decode_response(snap, _field(1, 1) + _field(2, 7)) == InstallSnapshotResponse(
        "n2", "n1", 7, True, match_seq=30
    )


def test_extension_fields_without_dref_ext_are_ignored() -> None:
    data = _field(1, "n1") + _field(2, 7) + _field(1001, 99)  # read_ctx but no dref_ext
    assert messages.decode_request("ReadIndex", data, "n2") == ReadIndex("n1", "n2", 7)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff",  # truncated varint / bad tag
        _field(1, b"\xff\xfe"),  # invalid UTF-8 in leader_id
        _field(3, b"\x0a\x05ab"),  # command: truncated submessage
        _field(4, 5) + _field(1000, 1) + _field(1003, _field(1, 6)),  # entries[0] is not seq
        _field(4, 5) + _field(1000, 1) + _field(1003, _field(1, 5)) + _field(1003, _field(1, 9)),
        _field(3, b"\x1a\x00") + _field(4, 5) + _field(1000, 1) + _field(1003, _field(1, 5)),
    ],
)
def test_malformed_bytes_raise_wire_error(data: bytes) -> None:
    with pytest.raises(WireError):
        messages.decode_request("AppendEntries", data, "n2")


def test_oversized_bytes_and_unknown_methods_raise_wire_error() -> None:
    with pytest.raises(WireError, match="exceeds the limit"):
        messages.decode_request("Heartbeat", b"\x00" * 101, "n2", max_bytes=100)
    with pytest.raises(WireError, match="unknown"):
        messages.decode_request("Nope", b"", "n2")
    with pytest.raises(WireError):
        messages.encode_request(Heartbeat("n1", "n2", -1, 0))
    with pytest.raises(WireError, match="first entry"):
        messages.encode_request(
            AppendEntries("n1", "n2", 1, 5, NoOp(), 0, True, 4, 1, (Entry(6, 1, NoOp()),))
        )


def test_a_misplaced_field_of_a_flat_message_raises_wire_error() -> None:
    # A message with no message inside (GetElementResponse, client mode's hottest answer) is
    # checked on its own unknown fields: a declared field with a wire type its type does not
    # use is an error, an undeclared field (a newer peer's addition) is not.
    _, response = messages.raft_pb_classes("GetElement")
    with pytest.raises(WireError, match=r"field value \(number 1\) has wire type 0"):
        messages.parse(response, _field(1, 7) + _field(1000, 3), "GetElementResponse")
    msg = messages.parse(response, _field(1, b"v") + _field(1000, 3) + _field(5000, 9), "x")
    assert (msg.value, msg.applied_seq) == (b"v", 3)


@given(st.lists(names, max_size=3), u64, names, st.none() | st.binary(max_size=8), u64)
def test_watch_messages_round_trip(
    watched: list[str], from_seq: int, name: str, value: bytes | None, seq: int
) -> None:
    assert messages.decode_watch_request(messages.encode_watch_request(watched, from_seq)) == (
        watched,
        from_seq,
    )
    for resync in (False, True):
        event = WatchEvent(name, value, seq, resync)
        assert messages.decode_watch_event(messages.encode_watch_event(event)) == event


def test_a_misplaced_field_of_a_snapshot_chunk_or_its_header_raises_wire_error() -> None:
    # A chunk holds one message (its header): both are checked without copying the chunk's
    # megabyte; an undeclared field (a newer peer's addition) is not an error.
    header = _field(1, "n1") + _field(2, 3) + _field(6, b"s" * 32)
    chunk = _field(1, header) + _field(2, 0) + _field(3, b"data") + _field(4, 9)
    decoded = decode_chunk(chunk + _field(1000, 1), 1024)
    assert (decoded.data, decoded.crc32, decoded.header is not None) == (b"data", 9, True)
    with pytest.raises(WireError, match=r"field data \(number 3\) has wire type 0"):
        decode_chunk(_field(3, 7) + _field(2, 0), 1024)
    with pytest.raises(WireError, match=r"field header.term \(number 2\) has wire type 2"):
        decode_chunk(_field(1, _field(1, "n1") + _field(2, b"x")) + _field(3, b"d"), 1024)
