"""A real grpc.aio server and clients on 127.0.0.1 free ports: every service and status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from dref.errors import (
    BackendError,
    CodecError,
    NoLeaderError,
    NotLeaderError,
    QuorumLostError,
    UnsupportedOperationError,
)
from dref_raft._pb import dref_consensus_pb2_grpc, dref_pb2, dref_pb2_grpc, dref_watch_pb2_grpc
from dref_raft.commands import SetElement, WatchEvent
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
from dref_raft.errors import TransportError, WatchUnsupportedError
from dref_raft.fsm import ClusterSnapshot, SnapshotEntry
from dref_raft.reads import FOLLOWER_READ, LEADER_READ, ReadRequest
from dref_raft.transport import GrpcServer, LeaderClient, PeerClients, WatchClient, grpc_client
from dref_raft.wire import messages

pytestmark = pytest.mark.timeout(30)


class Consensus:
    def __init__(self) -> None:
        self.seen: list[Request] = []

    async def handle(self, request: Request) -> Response:
        self.seen.append(request)
        s, t = request.to, request.sender
        match request:
            case AppendEntries():
                return AppendEntriesResponse(
                    s, t, 7, True, request.seq + len(request.entries), True
                )
            case Heartbeat():
                return HeartbeatResponse(s, t, 7, True, True, 99)
            case ReadIndex():
                return ReadIndexResponse(s, t, 7, True, request.read_ctx, True)
            case Vote():
                return VoteResponse(s, t, 7, True, True)
            case PreVote():
                return PreVoteResponse(s, t, 7, False, True)
            case InstallSnapshot():
                if request.last_seq == 666:
                    raise RuntimeError("boom")
                return InstallSnapshotResponse(s, t, 7, True, request.last_seq, True)


class Client:
    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, int | None]] = {}
        self.fail: Exception | None = None
        self.reads: list[ReadRequest] = []

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    async def set_element(self, name: str, value: bytes, expire_at: int | None) -> None:
        self._check()
        self.data[name] = (value, expire_at)

    async def set_element_if_not_exist(
        self, name: str, value: bytes, expire_at: int | None
    ) -> bool:
        self._check()
        if name in self.data:
            return False
        self.data[name] = (value, expire_at)
        return True

    async def get_element(self, name: str, read: ReadRequest = LEADER_READ) -> bytes | None:
        self._check()
        self.reads.append(read)
        item = self.data.get(name)
        return None if item is None else item[0]

    async def read_index(self) -> int:
        self._check()
        return 77

    async def delete_element(self, name: str) -> None:
        self._check()
        self.data.pop(name, None)

    async def expire_element(self, name: str, expire_at: int) -> None:
        self._check()
        if name in self.data:
            self.data[name] = (self.data[name][0], expire_at)

    def endpoint_ids(self) -> list[str]:
        return ["n2", "n3", "n1"]

    def applied_seq(self) -> int:
        return 40 + len(self.data)  # grows with every write, like a node's applied seq


class Watch:
    async def watch(self, names: list[str], from_seq: int) -> AsyncIterator[WatchEvent]:
        if from_seq == 0:
            yield WatchEvent(names[0], b"now", 10, resync=True)
        for seq in range(max(from_seq, 10) + 1, 13):
            yield WatchEvent(names[0], None if seq == 12 else b"v%d" % seq, seq)


@pytest.fixture
async def served() -> AsyncIterator[tuple[GrpcServer, Consensus, Client]]:
    consensus, client = Consensus(), Client()
    server = GrpcServer("n1", consensus, client, Watch(), port=0)
    async with server:
        yield server, consensus, client


SNAP = ClusterSnapshot((SnapshotEntry("k", b"v", 5),), 3)
REQUESTS: list[Request] = [
    AppendEntries("n0", "n1", 7, 4, SetElement("k", b"v"), 3, True, 3, 6,
                  (Entry(4, 7, SetElement("k", b"v")), Entry(5, 7, SetElement("k", b"w")))),
    Heartbeat("n0", "n1", 7, 3, True),
    ReadIndex("n0", "n1", 7, True, 5),
    Vote("n0", "n1", 7, 4, True, 6),
    PreVote("n0", "n1", 8, 4, True, 6),
    InstallSnapshot("n0", "n1", 7, SNAP, 3, True, 6),
]  # fmt: skip


@pytest.fixture
async def served_stream() -> AsyncIterator[tuple[GrpcServer, Consensus]]:
    """A member serving `DRefStream` and `DRefPeer` (`stream = true`)."""
    consensus = Consensus()
    async with GrpcServer("n1", consensus, Client(), Watch(), port=0, stream_window=64) as server:
        yield server, consensus


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
async def test_every_consensus_method_round_trips(served: Any, request_: Request) -> None:
    server, consensus, _ = served
    async with PeerClients() as peers:
        response = await peers.call(server.address, request_, timeout=5)
    assert consensus.seen == [request_]
    assert response.sender == "n1"
    assert response.to == "n0"
    assert response.term == 7


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
async def test_every_consensus_method_round_trips_over_drefpeer(
    served_stream: Any, request_: Request
) -> None:
    server, consensus = served_stream
    async with PeerClients(stream_window=8) as peers:
        response = await peers.call(server.address, request_, timeout=5)
        ((session, _),) = peers._sessions.values()
        assert (session.streams_opened, session.calls_sent) == (1, 1)  # not a unary call
    assert consensus.seen == [request_]
    assert (response.sender, response.to, response.term) == ("n1", "n0", 7)


async def test_concurrent_consensus_calls_share_one_drefpeer_stream(served_stream: Any) -> None:
    server, consensus = served_stream
    async with PeerClients(stream_window=8) as peers:
        answers = await asyncio.gather(
            *(peers.call(server.address, REQUESTS[1], timeout=5) for _ in range(20))
        )
        ((session, _),) = peers._sessions.values()
        assert session.streams_opened == 1
        assert session.calls_sent == 20
    assert [a.term for a in answers] == [7] * 20
    assert len(consensus.seen) == 20


async def test_a_peer_without_drefpeer_is_called_unary(served: Any) -> None:
    server, consensus, _ = served  # serves DRefConsensus only, as upstream does
    async with PeerClients(stream_window=8) as peers:
        for request in REQUESTS[:3]:
            await peers.call(server.address, request, timeout=5)
        ((session, _),) = peers._sessions.values()
        assert session.unsupported
        assert session.calls_sent == 0
    assert consensus.seen == REQUESTS[:3]  # each exactly once


async def test_a_peer_without_drefpeer_is_asked_again_after_the_retry_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An upgraded peer (restarted on its address, now serving `DRefPeer`) is not asked again
    before `PEER_STREAM_RETRY`; after it, calls go over a new stream."""
    consensus = Consensus()
    async with PeerClients(stream_window=8) as peers:
        async with GrpcServer("n1", consensus, Client(), Watch(), port=0) as old:
            address, port = old.address, int(old.address.rpartition(":")[2])
            await peers.call(address, REQUESTS[1], timeout=5)
        async with GrpcServer(
            "n1", consensus, Client(), Watch(), port=port, stream_window=64
        ) as upgraded:
            assert upgraded.address == address
            await peers.call(address, REQUESTS[1], timeout=5)
            ((first, _),) = peers._sessions.values()
            assert first.unsupported  # within the interval: unary
            assert first.calls_sent == 0
            monkeypatch.setattr(grpc_client, "PEER_STREAM_RETRY", 0.0)
            await peers.call(address, REQUESTS[1], timeout=5)
            ((second, _),) = peers._sessions.values()
            assert second is not first
            assert not second.unsupported
            assert (second.streams_opened, second.calls_sent) == (1, 1)
    assert len(consensus.seen) == 3  # each call exactly once


async def test_consensus_handler_failure_over_drefpeer_is_unavailable_and_logged(
    served_stream: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = served_stream
    async with PeerClients(stream_window=8) as peers:
        with pytest.raises(TransportError, match="UNAVAILABLE"):
            await peers.call(server.address, InstallSnapshot("n0", "n1", 7, SNAP, 666), 5)
        assert (await peers.call(server.address, REQUESTS[1], 5)).term == 7  # same stream
        ((session, _),) = peers._sessions.values()
        assert session.streams_opened == 1
    assert "DRefPeer AppendEntries" not in caplog.text
    assert "DRefPeer InstallSnapshot from n0 failed" in caplog.text


async def test_consensus_handler_failure_is_unavailable_and_logged(
    served: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server, _, _ = served
    async with PeerClients() as peers:
        with pytest.raises(TransportError, match="UNAVAILABLE"):
            await peers.call(server.address, InstallSnapshot("n0", "n1", 7, SNAP, 666), 5)
        assert (await peers.call(server.address, REQUESTS[1], 5)).term == 7  # still serving
    assert "DRefConsensus/InstallSnapshot" in caplog.text


async def test_client_service_calls(served: Any) -> None:
    server, _, client = served
    async with LeaderClient(server.address, target_id="n1", timeout=5) as leader:
        await leader.set_element("a", b"1", 1700000000)
        assert client.data["a"] == (b"1", 1700000000)
        await leader.set_element("b", b"2")
        assert client.data["b"] == (b"2", None)
        assert await leader.set_element_if_not_exist("c", b"3") is True
        assert await leader.set_element_if_not_exist("c", b"4", 5) is False
        assert await leader.get_element("c") == b"3"
        await leader.set_element("empty", b"")
        assert await leader.get_element("empty") == b""
        assert await leader.get_element("missing") is None
        await leader.expire_element("c", 77)
        assert client.data["c"] == (b"3", 77)
        await leader.delete_element("c")
        assert await leader.get_element("c") is None
        assert await leader.get_endpoints() == ["n2", "n3", "n1"]


async def test_data_answers_carry_the_applied_seq_extension(served: Any) -> None:
    """dref members tell how far they had applied when they answered (field 1000, which
    upstream clients skip); an answer without it (upstream's) leaves `applied_seq` alone."""
    server, _, _ = served
    async with LeaderClient(server.address, timeout=5) as leader:
        assert leader.applied_seq == 0
        await leader.set_element("a", b"1")
        assert leader.applied_seq == 41
        assert await leader.set_element_if_not_exist("b", b"2") is True
        assert leader.applied_seq == 42
        assert await leader.get_element("a") == b"1"
        await leader.delete_element("a")
        assert leader.applied_seq == 42  # never decreases (41 now)
        await leader.get_endpoints()  # no applied_seq in EndpointResponse
        assert leader.applied_seq == 42
    upstream_answer = dref_pb2.SetElementResponse.FromString(b"")
    assert upstream_answer.applied_seq == 0
    assert dref_pb2.SetElementResponse(applied_seq=5).SerializeToString() == b"\xc0>\x05"


async def test_read_kinds_and_read_index_cross_the_wire(served: Any) -> None:
    """dref's read kinds are additive `GetElementRequest` fields (1800-1802,
    docs/raft-wire.md#follower-reads): upstream's request bytes are unchanged, and a member
    sees each kind as sent; `read_index` answers the leader's seq in `applied_seq`."""
    server, _, client = served
    client.data["k"] = (b"v", None)
    async with LeaderClient(server.address, timeout=5) as leader:
        assert await leader.get_element("k") == b"v"
        assert await leader.get_element("k", read=ReadRequest(session_seq=0)) == b"v"
        assert await leader.get_element("k", read=ReadRequest(session_seq=9)) == b"v"
        assert await leader.get_element("k", read=FOLLOWER_READ) == b"v"
        assert await leader.read_index() == 77
    assert client.reads == [LEADER_READ, ReadRequest(0), ReadRequest(9), FOLLOWER_READ]
    plain = dref_pb2.GetElementRequest(id="n1", name="k").SerializeToString()
    assert plain == b"\n\x02n1\x12\x01k"  # upstream's bytes: no extension field set


async def test_read_index_from_an_upstream_leader_is_unsupported() -> None:
    """An answer without `applied_seq` (an upstream member) is no read index."""

    class Upstream(Client):
        async def read_index(self) -> int:
            return 0  # the answer carries no applied_seq, as upstream's GetElement answer

    server = GrpcServer("n1", Consensus(), Upstream(), Watch(), port=0)
    async with server, LeaderClient(server.address, timeout=5) as leader:
        with pytest.raises(UnsupportedOperationError, match="no read index"):
            await leader.read_index()


async def test_send_command_is_a_no_op(served: Any) -> None:
    server, _, _ = served
    async with grpc.aio.insecure_channel(server.address) as channel:
        rpc = channel.unary_unary(messages.method_path(messages.RAFT_SERVICE, "SendCommand"))
        assert await rpc(bytes.fromhex("0a016e120101"), timeout=5) == b""


@pytest.mark.parametrize(
    ("error", "code", "details", "expected"),
    [
        (NotLeaderError("n3"), grpc.StatusCode.FAILED_PRECONDITION, "not-leader:n3",
         NotLeaderError),
        (NotLeaderError(None), grpc.StatusCode.FAILED_PRECONDITION, "not-leader:unknown",
         NotLeaderError),
        (NoLeaderError(), grpc.StatusCode.FAILED_PRECONDITION, "no-leader:unknown", NoLeaderError),
        (QuorumLostError("x"), grpc.StatusCode.UNAVAILABLE, "quorum-lost", QuorumLostError),
        (CodecError("bad"), grpc.StatusCode.INTERNAL, "serialize: bad", CodecError),
        (BackendError("disk on fire"), grpc.StatusCode.UNAVAILABLE, "disk on fire", TransportError),
        (ValueError("bug"), grpc.StatusCode.INTERNAL, "internal: ValueError: bug", BackendError),
    ],
)  # fmt: skip
async def test_error_statuses_both_directions(
    served: Any, error: Exception, code: Any, details: str, expected: type[Exception]
) -> None:
    server, _, client = served
    client.fail = error
    async with grpc.aio.insecure_channel(server.address) as channel:
        rpc = channel.unary_unary(messages.method_path(messages.RAFT_SERVICE, "GetElement"))
        with pytest.raises(grpc.aio.AioRpcError) as raw:
            await rpc(b"", timeout=5)
    assert (raw.value.code(), raw.value.details()) == (code, details)
    async with LeaderClient(server.address) as leader:
        with pytest.raises(expected) as caught:
            await leader.get_element("k")
    assert type(caught.value) is expected
    if isinstance(error, NotLeaderError):
        assert caught.value.leader_id == error.leader_id  # type: ignore[attr-defined]


async def test_watch_streams_events_and_resumes(served: Any) -> None:
    server, _, _ = served
    async with WatchClient(server.address) as client:
        events = [e async for e in client.watch(["k"], 0)]
        assert events == [
            WatchEvent("k", b"now", 10, True),
            WatchEvent("k", b"v11", 11),
            WatchEvent("k", None, 12),
        ]
        assert [e.seq async for e in client.watch(["k"], 11)] == [12]


async def test_watch_on_a_node_without_it_is_unsupported() -> None:
    async with (
        GrpcServer("n1", Consensus(), Client(), port=0) as server,
        WatchClient(server.address) as client,
    ):
        with pytest.raises(WatchUnsupportedError):
            async for _ in client.watch(["k"], 0):
                pass


@pytest.mark.parametrize(
    ("service", "method"),
    [(messages.CONSENSUS_SERVICE, m) for m in messages.CONSENSUS_METHODS]
    + [(messages.RAFT_SERVICE, "SetElement"), (messages.WATCH_SERVICE, "Watch")],
)
async def test_malformed_requests_are_rejected_logged_and_the_server_stays_up(
    served: Any, caplog: pytest.LogCaptureFixture, service: str, method: str
) -> None:
    server, consensus, _ = served
    caplog.set_level(logging.WARNING, "dref_raft.transport")
    async with grpc.aio.insecure_channel(server.address) as channel:
        path = messages.method_path(service, method)
        call = (channel.unary_stream if service == messages.WATCH_SERVICE else channel.unary_unary)(
            path
        )
        with pytest.raises(grpc.aio.AioRpcError) as raw:
            result = call(b"\x0a\xff\xff", timeout=5)
            if service == messages.WATCH_SERVICE:
                await result.read()
            else:
                await result
    assert raw.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "undecodable" in caplog.text
    assert method in caplog.text
    assert consensus.seen == []
    async with PeerClients() as peers:
        assert (await peers.call(server.address, REQUESTS[1], 5)).term == 7


async def test_oversized_request_is_rejected() -> None:
    async with GrpcServer("n1", Consensus(), Client(), port=0, max_message_bytes=4096) as server:
        big = InstallSnapshot(
            "n0", "n1", 7, ClusterSnapshot((SnapshotEntry("k", b"x" * 10000),)), 1
        )
        async with PeerClients() as peers:
            with pytest.raises(TransportError, match="RESOURCE_EXHAUSTED"):
                await peers.call(server.address, big, 5)
            assert (await peers.call(server.address, REQUESTS[1], 5)).term == 7


@pytest.mark.parametrize(
    "address", ["127.0.0.1:1", "no-such-host.invalid:8082", "10.255.255.1:8082"]
)
async def test_unknown_peer_address_fails_within_the_timeout(address: str) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with PeerClients() as peers:
        with pytest.raises(TransportError):
            await peers.call(address, REQUESTS[1], timeout=0.5)
    assert loop.time() - start < 2.0


async def test_port_in_use_is_a_transport_error(served: Any) -> None:
    server, _, _ = served
    with pytest.raises(TransportError, match="cannot bind"):
        await GrpcServer("n9", Consensus(), Client(), port=server.port).start()


def test_full_method_paths_match_the_generated_stubs() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.paths: list[str] = []

        def unary_unary(self, path: str, *args: Any, **kwargs: Any) -> object:
            self.paths.append(path)
            return object()

        unary_stream = unary_unary

    expected = {
        "DRefConsensus": [messages.method_path(messages.CONSENSUS_SERVICE, m)
                          for m in messages.CONSENSUS_METHODS],
        "DRefRaft": [messages.method_path(messages.RAFT_SERVICE, m) for m in messages.RAFT_METHODS],
        "DRefWatch": ["/io.github.tobia80.DRefWatch/Watch"],
    }  # fmt: skip
    for module, name in [
        (dref_consensus_pb2_grpc, "DRefConsensus"),
        (dref_pb2_grpc, "DRefRaft"),
        (dref_watch_pb2_grpc, "DRefWatch"),
    ]:
        recorder = Recorder()
        getattr(module, f"{name}Stub")(recorder)
        assert recorder.paths == expected[name]
    assert expected["DRefConsensus"][0] == "/io.github.tobia80.DRefConsensus/AppendEntries"
