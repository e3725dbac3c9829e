"""The in-memory transport (faults, determinism) and the bounded leader retry policy."""

from __future__ import annotations

import asyncio
import random

import pytest
from test_transport_grpc import REQUESTS, Client, Consensus, Watch

from dref.errors import (
    BackendTimeoutError,
    CodecError,
    NoLeaderError,
    NotLeaderError,
    QuorumLostError,
)
from dref_raft.commands import WatchEvent
from dref_raft.core.messages import HeartbeatResponse
from dref_raft.errors import TransportError, WatchUnsupportedError
from dref_raft.transport import MemoryNetwork, RetryPolicy, with_leader

pytestmark = pytest.mark.timeout(30)
HEARTBEAT = REQUESTS[1]


def network(**kwargs: object) -> MemoryNetwork:
    net = MemoryNetwork(**kwargs)  # type: ignore[arg-type]
    net.serve("a", "n0", Consensus(), Client())
    net.serve("b", "n1", Consensus(), Client(), Watch())
    return net


async def test_calls_go_through_the_wire_conversion() -> None:
    net = network()
    response = await net.peer_clients("a").call("b", REQUESTS[0], 1)
    assert response.sender == "n1"
    assert response.match_seq == 6  # type: ignore[union-attr]
    assert await net.peer_clients("a").call("b", HEARTBEAT, 1) == HeartbeatResponse(
        "n1", "n0", 7, True, True, 99
    )


async def test_unknown_address_fails_at_once_and_partitions_time_out() -> None:
    net = network()
    peers = net.peer_clients("a")
    with pytest.raises(TransportError, match="refused"):
        await peers.call("zz", HEARTBEAT, 1)
    net.partition("a", "b", symmetric=False)
    with pytest.raises(TransportError, match="lost"):
        await peers.call("b", HEARTBEAT, 0.05)
    with pytest.raises(TransportError):  # b's request reaches a, a's answer to b is lost
        await net.peer_clients("b").call("a", HEARTBEAT, 0.05)
    net.heal()
    assert (await peers.call("b", HEARTBEAT, 1)).term == 7


async def test_one_way_partition_loses_the_answer() -> None:
    net = network()
    net.partition("b", "a", symmetric=False)  # requests a→b arrive, answers b→a are lost
    consensus = Consensus()
    net.serve("b", "n1", consensus, Client())
    with pytest.raises(TransportError):
        await net.peer_clients("a").call("b", HEARTBEAT, 0.05)
    assert consensus.seen == [HEARTBEAT]


async def outcomes(seed: int) -> list[bool]:
    net = network(rng=random.Random(seed), drop_rate=0.5, delay=(0.0, 0.002))
    peers, results = net.peer_clients("a"), []
    for _ in range(12):
        try:
            await peers.call("b", HEARTBEAT, 0.02)
            results.append(True)
        except TransportError:
            results.append(False)
    return results


async def test_faults_are_deterministic_for_a_seed() -> None:
    first = await outcomes(7)
    assert first == await outcomes(7)
    assert True in first
    assert False in first


async def test_leader_client_errors_pass_through_status_strings() -> None:
    net = network()
    client = Client()
    net.serve("b", "n1", Consensus(), client)
    leader = net.leader_client("a", "b")
    await leader.set_element("k", b"v", 5)
    assert await leader.get_element("k") == b"v"
    assert await leader.get_endpoints() == ["n2", "n3", "n1"]
    for error, expected in [
        (NotLeaderError("n3"), NotLeaderError),
        (QuorumLostError("q"), QuorumLostError),
        (CodecError("c"), CodecError),
    ]:
        client.fail = error
        with pytest.raises(expected):
            await leader.get_element("k")


async def test_memory_watch() -> None:
    net = network()
    events = [e async for e in net.watch_client("a", "b").watch(["k"], 11)]
    assert events == [WatchEvent("k", None, 12)]
    with pytest.raises(WatchUnsupportedError):
        async for _ in net.watch_client("b", "a").watch(["k"], 0):
            pass


FAST = RetryPolicy(0.001, 0.001, 3, 0.001, 3)


@pytest.mark.parametrize("bounded", [False, True])
async def test_with_leader_follows_hints_and_retries_transport_errors(bounded: bool) -> None:
    # `bounded` (the first attempt without a deadline timer) retries exactly as without it.
    loop = asyncio.get_running_loop()
    tried: list[str] = []

    async def op(target: str) -> str:
        tried.append(target)
        if target == "n1":
            raise NotLeaderError("n2")
        if len(tried) < 4:
            raise TransportError("down")
        return target

    async def find() -> str | None:
        return "n1"

    assert await with_leader(op, find, loop.time() + 5, FAST, bounded=bounded) == "n2"
    assert tried == ["n1", "n2", "n1", "n2"]


@pytest.mark.parametrize("bounded", [False, True])
async def test_with_leader_is_bounded(bounded: bool) -> None:
    loop = asyncio.get_running_loop()

    async def not_leader(target: str) -> None:
        raise NotLeaderError(None)

    async def find() -> str | None:
        return "n1"

    async def nobody() -> str | None:
        return None

    async def down(target: str) -> None:
        raise TransportError("down")

    start = loop.time()
    with pytest.raises(NotLeaderError):
        await with_leader(not_leader, find, loop.time() + 0.1, FAST, bounded=bounded)
    assert loop.time() - start < 1
    with pytest.raises(TransportError):
        await with_leader(down, find, loop.time() + 5, FAST, bounded=bounded)
    with pytest.raises(NoLeaderError):
        await with_leader(down, nobody, loop.time() + 5, FAST, bounded=bounded)

    async def fatal(target: str) -> None:
        raise CodecError("x")

    with pytest.raises(CodecError):
        await with_leader(fatal, find, loop.time() + 5, FAST, bounded=bounded)

    async def hangs(target: str) -> None:
        await asyncio.Event().wait()

    # A leader was found but the attempt was cut off by the deadline: its outcome is unknown,
    # so the caller must not read it as "no leader" (refused, certainly not applied).
    with pytest.raises(BackendTimeoutError, match="n1 did not answer"):
        await with_leader(hangs, find, loop.time() + 0.1, FAST)
