"""`DRefExt/Compare` (dref-only): gRPC server/client, the in-memory twin, statuses, and a
member that does not serve it (an upstream node) → `CompareUnsupportedError`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from test_transport_grpc import Client, Consensus

from dref.errors import BackendError, ClosedError, NoLeaderError, NotLeaderError, QuorumLostError
from dref_raft._pb import dref_ext_pb2_grpc
from dref_raft.commands import (
    Command,
    CompareAndDelete,
    CompareAndExpire,
    CompareAndSet,
    CompareResult,
    SetElement,
)
from dref_raft.errors import CompareUnsupportedError, TransportError, WireError
from dref_raft.transport import GrpcServer, LeaderClient, MemoryNetwork
from dref_raft.wire import messages

pytestmark = pytest.mark.timeout(30)


class Compare:
    """Matches when the expected value is b"yes"; remembers what it was asked."""

    def __init__(self) -> None:
        self.seen: list[Command] = []
        self.fail: Exception | None = None

    async def compare(self, command: Command) -> CompareResult:
        self.seen.append(command)
        if self.fail is not None:
            raise self.fail
        expected = getattr(command, "expected", None)
        if expected == b"yes":
            return CompareResult(True, None, 41)
        return CompareResult(False, None if expected is None else b"cur", 42)


COMMANDS: list[Command] = [
    CompareAndSet("k", b"yes", b"v", 123, 0),
    CompareAndSet("k", None, b"v"),
    CompareAndDelete("k", b"no"),
    CompareAndExpire("k", b"yes", 99),
]
RESULTS = [
    CompareResult(True, None, 41),
    CompareResult(False, None, 42),
    CompareResult(False, b"cur", 42),
    CompareResult(True, None, 41),
]


@pytest.fixture
async def served() -> AsyncIterator[tuple[GrpcServer, Compare]]:
    compare = Compare()
    async with GrpcServer("n1", Consensus(), Client(), compare=compare, port=0) as server:
        yield server, compare


async def test_compare_round_trips_over_grpc(served: Any) -> None:
    server, compare = served
    async with LeaderClient(server.address, timeout=5) as leader:
        results = [await leader.compare(c) for c in COMMANDS]
    assert results == RESULTS
    assert compare.seen == COMMANDS


async def test_compare_round_trips_in_memory() -> None:
    net, compare = MemoryNetwork(), Compare()
    net.serve("a", "n1", Consensus(), Client(), compare=compare)
    client = net.leader_client("b", "a")
    assert [await client.compare(c) for c in COMMANDS] == RESULTS
    assert compare.seen == COMMANDS


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (NotLeaderError("n3"), NotLeaderError),
        (NoLeaderError(), NoLeaderError),
        (QuorumLostError("x"), QuorumLostError),
        (BackendError("disk on fire"), TransportError),
        (ValueError("bug"), BackendError),
        (ClosedError("node closed"), TransportError),  # shutting down: retry elsewhere
    ],
)
async def test_compare_statuses_as_for_dref_raft(
    served: Any, error: Exception, expected: type[Exception]
) -> None:
    server, compare = served
    compare.fail = error
    net = MemoryNetwork()
    net.serve("a", "n1", Consensus(), Client(), compare=compare)
    async with LeaderClient(server.address, timeout=5) as leader:
        for client in (leader, net.leader_client("b", "a")):
            with pytest.raises(expected) as caught:
                await client.compare(COMMANDS[0])
            assert type(caught.value) is expected
            if isinstance(error, NotLeaderError):
                assert caught.value.leader_id == "n3"  # type: ignore[attr-defined]


async def test_a_handler_closed_error_is_logged_at_debug_without_traceback(
    served: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server, compare = served
    compare.fail = ClosedError("the raft node is closed")
    caplog.set_level(logging.DEBUG, logger="dref_raft.transport")
    async with LeaderClient(server.address, timeout=5) as leader:
        with pytest.raises(TransportError, match="closed"):
            await leader.compare(COMMANDS[0])
    records = [r for r in caplog.records if "DRefExt" in r.getMessage()]
    assert records, caplog.text
    assert all(r.levelno == logging.DEBUG and r.exc_info is None for r in records)


async def test_a_member_without_dref_ext_is_unsupported() -> None:
    async with (
        GrpcServer("n1", Consensus(), Client(), port=0) as server,
        LeaderClient(server.address, timeout=5) as leader,
    ):
        with pytest.raises(CompareUnsupportedError, match="mixed_cluster"):
            await leader.compare(COMMANDS[0])
        assert await leader.get_endpoints()  # DRefRaft is still served
    net = MemoryNetwork()
    net.serve("a", "n1", Consensus(), Client())
    with pytest.raises(CompareUnsupportedError):
        await net.leader_client("b", "a").compare(COMMANDS[0])


async def test_only_compare_commands_are_sent_or_accepted(
    served: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server, compare = served
    with pytest.raises(WireError):
        messages.encode_compare_request(SetElement("k", b"v"))
    caplog.set_level(logging.WARNING, "dref_raft.transport")
    path = messages.method_path(messages.EXT_SERVICE, messages.COMPARE_METHOD)
    plain = messages._command_bytes(SetElement("k", b""))
    smuggled = bytes([0x0A, len(plain)]) + plain  # CompareRequest{command = SetElement}
    async with grpc.aio.insecure_channel(server.address) as channel:
        for data in (b"\x0a\xff\xff", smuggled):
            with pytest.raises(grpc.aio.AioRpcError) as raw:
                await channel.unary_unary(path)(data, timeout=5)
            assert raw.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert compare.seen == []
    assert "DRefExt/Compare" in caplog.text


def test_the_method_path_matches_the_generated_stub() -> None:
    paths: list[str] = []

    class Recorder:
        def unary_unary(self, path: str, *args: Any, **kwargs: Any) -> object:
            paths.append(path)
            return object()

    dref_ext_pb2_grpc.DRefExtStub(Recorder())
    methods = (messages.COMPARE_METHOD, messages.NAMES_METHOD, messages.STATUS_METHOD)
    assert paths == [messages.method_path(messages.EXT_SERVICE, m) for m in methods]
    assert paths == [f"/io.github.tobia80.DRefExt/{m}" for m in ("Compare", "Names", "Status")]
