"""`DRefStream` between a real grpc.aio server and `LeaderClient` on 127.0.0.1: calls multiplexed
over one stream, answered out of order, batched; a cancelled caller; the unary statuses; the
window; the unary fallback against a server without the service; a server that goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from cluster_procs import wait_until

from dref.errors import NoLeaderError, NotLeaderError, QuorumLostError
from dref_raft.errors import TransportError
from dref_raft.reads import LEADER_READ, ReadRequest
from dref_raft.transport import GrpcServer, LeaderClient
from dref_raft.transport.grpc_stream import StreamSession

pytestmark = pytest.mark.timeout(30)


class Consensus:
    async def handle(self, request: Any) -> Any:
        raise AssertionError("not used")


class Client:
    """A `ClientHandler` whose `set_element` of a name in `held` waits until it is released."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.held: dict[str, asyncio.Event] = {}
        self.started: set[str] = set()
        self.errors: dict[str, Exception] = {}

    async def set_element(self, name: str, value: bytes, expire_at: int | None) -> None:
        self.started.add(name)
        if name in self.errors:
            raise self.errors[name]
        if name in self.held:
            await self.held[name].wait()
        self.data[name] = value

    async def set_element_if_not_exist(
        self, name: str, value: bytes, expire_at: int | None
    ) -> bool:
        created = name not in self.data
        self.data.setdefault(name, value)
        return created

    async def get_element(self, name: str, read: ReadRequest = LEADER_READ) -> bytes | None:
        if name in self.errors:
            raise self.errors[name]
        return self.data.get(name)

    async def delete_element(self, name: str) -> None:
        self.data.pop(name, None)

    async def expire_element(self, name: str, expire_at: int) -> None:
        pass

    def endpoint_ids(self) -> list[str]:
        return ["n2", "n1"]

    def applied_seq(self) -> int:
        return len(self.data)


@pytest.fixture
async def served() -> AsyncIterator[tuple[GrpcServer, Client]]:
    client = Client()
    async with GrpcServer("n1", Consensus(), client, port=0, stream_window=64) as server:
        yield server, client


def session_of(leader: LeaderClient) -> StreamSession:
    assert leader.session is not None
    return leader.session


async def test_calls_share_one_stream_and_are_answered_out_of_order(served: Any) -> None:
    server, handler = served
    handler.held["slow"] = asyncio.Event()
    async with LeaderClient(server.address, stream_window=64) as leader:
        slow = asyncio.create_task(leader.set_element("slow", b"1"))
        await wait_until(lambda: "slow" in handler.started, 10, "the slow call to start")
        # Sent after it, answered before it:
        await leader.set_element("fast", b"2")
        assert await leader.get_element("fast") == b"2"
        assert not slow.done()
        handler.held["slow"].set()
        await slow
        assert await leader.get_element("slow") == b"1"
        assert leader.applied_seq == 2  # the responses' applied_seq extension still arrives
        session = session_of(leader)
        assert session.streams_opened == 1
        assert not session.unsupported


async def test_many_concurrent_calls_go_in_few_messages(served: Any) -> None:
    server, _ = served
    async with LeaderClient(server.address, stream_window=64) as leader:
        await asyncio.gather(*(leader.set_element(f"k{i}", b"%d" % i) for i in range(200)))
        values = await asyncio.gather(*(leader.get_element(f"k{i}") for i in range(200)))
        assert values == [b"%d" % i for i in range(200)]
        assert await leader.get_endpoints() == ["n2", "n1"]
        session = session_of(leader)
        assert session.calls_sent == 401
        assert session.batches_sent <= 401 // 8, session.batches_sent


async def test_a_cancelled_caller_leaves_the_others_and_the_stream_fine(served: Any) -> None:
    server, handler = served
    handler.held["slow"] = asyncio.Event()
    async with LeaderClient(server.address, stream_window=64) as leader:
        slow = asyncio.create_task(leader.set_element("slow", b"1"))
        others = [asyncio.create_task(leader.set_element(f"o{i}", b"x")) for i in range(20)]
        await wait_until(lambda: "slow" in handler.started, 10, "the slow call to start")
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        await asyncio.gather(*others)
        handler.held["slow"].set()  # its answer arrives for nobody: dropped
        assert await leader.get_element("o7") == b"x"
        await wait_until(lambda: "slow" in handler.data, 10, "the cancelled call to finish")
        assert await leader.get_element("slow") == b"1"
        assert session_of(leader).streams_opened == 1


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (NotLeaderError("n2"), NotLeaderError),
        (NoLeaderError(), NoLeaderError),
        (QuorumLostError("quorum-lost"), QuorumLostError),
        (RuntimeError("bug"), Exception),
    ],
)
async def test_errors_are_the_unary_ones(
    served: Any, error: Exception, expected: type[Exception]
) -> None:
    server, handler = served
    handler.errors["bad"] = error
    async with (
        LeaderClient(server.address) as unary,
        LeaderClient(server.address, stream_window=64) as streamed,
    ):
        failures = []
        for leader in (unary, streamed):
            with pytest.raises(expected) as caught:
                await leader.get_element("bad")
            failures.append(caught.value)
            assert await leader.get_element("fine") is None  # the stream is still up
        assert type(failures[0]) is type(failures[1])
        assert str(failures[0]) == str(failures[1])
        assert session_of(streamed).streams_opened == 1
        if isinstance(error, NotLeaderError):
            assert failures[1].leader_id == "n2"  # type: ignore[attr-defined]


async def test_the_window_bounds_calls_in_flight(served: Any) -> None:
    server, handler = served
    handler.held = {f"h{i}": asyncio.Event() for i in range(3)}
    async with LeaderClient(server.address, stream_window=2) as leader:
        tasks = [asyncio.create_task(leader.set_element(f"h{i}", b"x")) for i in range(3)]
        await wait_until(lambda: len(handler.started) == 2, 10, "two calls to start")
        session = session_of(leader)
        assert session.calls_sent == 2  # the third caller waits for a slot
        # A caller that cannot get a slot in time times out like a unary call would.
        with pytest.raises(TransportError, match="DEADLINE_EXCEEDED"):
            await leader.get_element("h0", timeout=0.05)
        handler.held["h0"].set()
        await wait_until(lambda: len(handler.started) == 3, 10, "the third call to start")
        for event in handler.held.values():
            event.set()
        await asyncio.gather(*tasks)
        assert session.calls_sent == 3


async def test_each_call_sent_times_out_at_its_own_deadline(served: Any) -> None:
    # The calls in flight share one deadline timer per stream: a call sent later with a shorter
    # timeout still fails first, a longer one later, and the stream keeps serving the others.
    server, handler = served
    handler.held = {"long": asyncio.Event(), "short": asyncio.Event()}
    loop = asyncio.get_running_loop()
    async with LeaderClient(server.address, stream_window=64) as leader:
        failed: dict[str, float] = {}

        async def held(name: str, timeout: float) -> None:
            with pytest.raises(TransportError, match="DEADLINE_EXCEEDED"):
                await leader.set_element(name, b"x", timeout=timeout)
            failed[name] = loop.time()

        start = loop.time()
        long = asyncio.create_task(held("long", 1.5))
        await wait_until(lambda: "long" in handler.started, 10, "the long call to start")
        short = asyncio.create_task(held("short", 0.2))
        await short
        assert "long" not in failed
        assert 0.2 <= failed["short"] - start < 1.5
        assert await leader.get_element("free") is None  # the stream still answers
        await long
        assert failed["long"] - start >= 1.5
        assert session_of(leader).streams_opened == 1
        for event in handler.held.values():
            event.set()


class InstantClient(Client):
    """A `Client` that answers session reads of a seq it has "applied" at once (`read_now`)."""

    def __init__(self) -> None:
        super().__init__()
        self.applied = 0
        self.waited: list[str] = []

    def read_now(self, name: str, read: ReadRequest) -> tuple[bool, bytes | None]:
        if name in self.errors:
            raise self.errors[name]
        if read.session_seq is None or read.session_seq > self.applied:
            return False, None
        return True, self.data.get(name)

    async def get_element(self, name: str, read: ReadRequest = LEADER_READ) -> bytes | None:
        self.waited.append(name)
        return await super().get_element(name, read)


async def test_session_reads_answered_at_once_match_the_method() -> None:
    # A member answers a session read of a seq it has applied without running the method (no
    # task per call); anything else, and any failure, goes to the method as before.
    handler = InstantClient()
    handler.data["k"] = b"v"
    handler.applied = 5
    handler.errors["bad"] = NotLeaderError("n2")
    async with (
        GrpcServer("n1", Consensus(), handler, port=0, stream_window=64) as server,
        LeaderClient(server.address, stream_window=64) as leader,
    ):
        now = ReadRequest(session_seq=5, follower=True)
        assert await leader.get_element("k", read=now) == b"v"
        assert await leader.get_element("missing", read=now) is None
        assert leader.last_applied_seq == 1  # the answer carries applied_seq as the method's
        assert handler.waited == []
        later = ReadRequest(session_seq=6, follower=True)
        assert await leader.get_element("k", read=later) == b"v"
        assert await leader.get_element("k") == b"v"  # not a session read
        assert handler.waited == ["k", "k"]
        with pytest.raises(NotLeaderError) as caught:
            await leader.get_element("bad", read=now)
        assert caught.value.leader_id == "n2"
        assert handler.waited[-1] == "bad"


async def test_a_server_without_the_stream_gets_unary_calls() -> None:
    handler = Client()
    async with (
        GrpcServer("n1", Consensus(), handler, port=0) as server,
        LeaderClient(server.address, stream_window=64) as leader,
    ):
        await asyncio.gather(*(leader.set_element(f"k{i}", b"v") for i in range(10)))
        assert await leader.get_element("k3") == b"v"
        assert set(handler.data) == {f"k{i}" for i in range(10)}
        session = session_of(leader)
        assert session.unsupported
        assert session.streams_opened == 1  # asked once, never again


async def test_in_flight_calls_fail_as_transport_errors_when_the_server_goes_away() -> None:
    handler = Client()
    handler.held["slow"] = asyncio.Event()
    server = GrpcServer("n1", Consensus(), handler, port=0, stream_window=64)
    await server.start()
    address = server.address
    async with LeaderClient(address, stream_window=64) as leader:
        slow = asyncio.create_task(leader.set_element("slow", b"1"))
        await wait_until(lambda: "slow" in handler.started, 10, "the slow call to start")
        await server.aclose(grace=None)
        with pytest.raises(TransportError):
            await slow
        # The next call opens a new stream (to a server on the same port again).
        port = int(address.rpartition(":")[2])
        async with GrpcServer("n1", Consensus(), Client(), port=port, stream_window=64):
            for _ in range(100):  # the channel reconnects within its 100 ms backoff
                try:
                    assert await leader.get_element("slow", timeout=1) is None
                    break
                except TransportError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("no new stream to the restarted server")
        assert session_of(leader).streams_opened >= 2


async def test_a_stream_ending_with_any_status_fails_its_calls_as_unreachable(served: Any) -> None:
    # grpc-core ends a stream whose member died under a write with INTERNAL "Internal error from
    # Core": as a unary status that would be a fatal error; for the calls in flight it must read
    # as an unreachable member (retried), as a unary call to a dead member does.
    server, handler = served
    handler.held["slow"] = asyncio.Event()
    async with LeaderClient(server.address, stream_window=64) as leader:
        slow = asyncio.create_task(leader.set_element("slow", b"1"))
        await wait_until(lambda: "slow" in handler.started, 10, "the slow call to start")
        stream = session_of(leader)._stream
        assert stream is not None
        stream.fail(grpc.StatusCode.INTERNAL, "Internal error from Core")
        with pytest.raises(TransportError, match="INTERNAL"):
            await slow
        handler.held["slow"].set()
        assert await leader.get_element("x") is None  # a new stream
        assert session_of(leader).streams_opened == 2
