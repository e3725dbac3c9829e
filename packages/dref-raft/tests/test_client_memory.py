"""Client mode against a 3-node in-process cluster (in-memory transport): the conformance suite
through client contexts, and watch resumes (after a member stops, within and beyond the ring)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from cluster_procs import wait_until
from memory_cluster import memory_members, memory_options
from raft_lost_answers import LosesAnswers

import dref
from dref.errors import BackendUnavailableError, ChangeStreamLaggedError
from dref_compat.conformance import BackendConformance, eventually
from dref_raft.client.backend import RaftClientBackend
from dref_raft.errors import CompareUnsupportedError, LimitExceededError
from dref_raft.member.registry import Member, local_members
from dref_raft.reads import FOLLOWER_READ, ReadRequest

pytestmark = pytest.mark.timeout(60)

IDS = ("n1", "n2", "n3")
ENDPOINTS = [f"{i}=mem-{i}:1" for i in IDS]
HISTORY = 8


def member_options(node_id: str) -> dict[str, Any]:
    return memory_options(IDS, node_id, watch_history=HISTORY)


CLIENT = {"mode": "client", "transport": "memory", "endpoints": ENDPOINTS}


@pytest.fixture
async def cluster() -> AsyncIterator[list[Member]]:
    async with memory_members(IDS, watch_history=HISTORY) as members:
        yield members


class TestRaftClientMemory(LosesAnswers, BackendConformance):
    backend = "raft"
    revision_history = HISTORY
    fairness_updates = 400

    @pytest.fixture
    def fairness_options(self, cluster: list[Member]) -> dict[str, Any]:
        return CLIENT

    @pytest.fixture
    async def open_context(
        self, cluster: list[Member]
    ) -> AsyncIterator[Callable[[], Awaitable[dref.DRefContext]]]:
        async with AsyncExitStack() as stack:

            async def open_one() -> dref.DRefContext:
                return await stack.enter_async_context(dref.connect("raft", **CLIENT))

            yield open_one


@pytest.fixture
async def client(cluster: list[Member]) -> AsyncIterator[RaftClientBackend]:
    async with dref.connect("raft", **CLIENT) as ctx:
        assert isinstance(ctx.backend, RaftClientBackend)
        yield ctx.backend


def _member_at(cluster: list[Member], address: str) -> Member:
    return next(m for m in cluster if m.settings.address == address)


async def test_client_mode_capabilities(client: RaftClientBackend) -> None:
    caps = client.capabilities
    assert caps.linearizable
    assert caps.fencing
    assert caps.expiry_events
    assert caps.native_cas
    assert caps.owner_checked_locks
    assert caps.fenced_writes
    assert caps.fair_updates  # contended modify: a line in the state machine
    assert not caps.exact_events
    assert client.poll_interval <= 0.2
    assert not caps.distributed


async def test_client_mode_mixed_cluster_has_no_compare(cluster: list[Member]) -> None:
    async with dref.connect("raft", **CLIENT, mixed_cluster=True) as ctx:
        caps = ctx.backend.capabilities
        assert not caps.native_cas
        assert not caps.owner_checked_locks
        assert not caps.fenced_writes  # FencedWrite is a dref-only command
        assert not caps.fair_updates  # FairSwap / LeaveLine are dref-only commands
        assert not caps.lock_queue
        assert await ctx.backend.set_if_not_exist("m", b"a")
        assert not await ctx.backend.set_if_not_exist("m", b"b")


async def test_a_member_without_dref_ext_refuses_compare(cluster: list[Member]) -> None:
    network = cluster[0].network
    assert network is not None
    for m in cluster:  # serve DRefRaft and DRefWatch only, like an upstream node
        network.serve(m.settings.address, m.settings.node_id, m.node, m.handler, m.watch)
    async with dref.connect("raft", **CLIENT) as ctx:
        with pytest.raises(CompareUnsupportedError, match="mixed_cluster"):
            await ctx.backend.compare_and_set("k", b"a", b"b")
        await ctx.backend.set("k", b"a")  # DRefRaft still works


async def test_watch_survives_the_stop_of_its_member(
    cluster: list[Member], client: RaftClientBackend
) -> None:
    async with await client.subscribe("k") as sub:
        stream = client._streams["k"]
        assert stream.address is not None
        victim = _member_at(cluster, stream.address)
        for i in range(10):
            await client.set("k", b"%d" % i)
        got = [(await asyncio.wait_for(anext(sub), 10)).value for _ in range(10)]
        await local_members.release(victim)  # its watch ends; the stream resumes elsewhere
        # Fewer than HISTORY writes before the stream is back: replayed from the ring (or
        # live, if it is back already), never resynced.
        for i in range(10, 10 + HISTORY - 3):
            await client.set("k", b"%d" % i)
        await wait_until(
            lambda: stream.address not in (None, victim.settings.address), 10, "the resume"
        )
        for i in range(10 + HISTORY - 3, 30):
            await client.set("k", b"%d" % i)
        got += [(await asyncio.wait_for(anext(sub), 10)).value for _ in range(20)]
    assert got == [b"%d" % i for i in range(30)]


async def test_a_broken_watch_resumes_on_another_member_than_the_one_that_failed(
    client: RaftClientBackend,
) -> None:
    await client.set("k", b"v")  # the client now knows the leader
    leader = client._leader
    assert leader is not None
    failed = client._members[leader]
    assert client._watch_target(None) == failed  # the leader while it answers
    targets = {client._watch_target(failed) for _ in range(6)}
    assert failed not in targets


@pytest.mark.parametrize(("writes", "expected"), [(5, list(range(5))), (3 * HISTORY, None)])
async def test_resume_replays_within_the_ring_and_raises_lagged_beyond_it(
    cluster: list[Member], client: RaftClientBackend, writes: int, expected: list[int] | None
) -> None:
    """A broken stream resumes from its last seq: every missed change is replayed while the
    member's history holds it; beyond it the subscription ends with `ChangeStreamLaggedError`
    (never the latest value alone), and a new subscription works."""
    network = cluster[0].network
    assert network is not None
    async with (
        await client.subscribe("k") as sub,
        dref.connect("raft", **member_options("n1")) as member_ctx,
    ):
        writer = member_ctx.backend
        await writer.set("k", b"start")
        assert (await asyncio.wait_for(anext(sub), 10)).value == b"start"
        stream = client._streams["k"]
        source = client._source
        for member in cluster:  # the client cannot reconnect while the writes happen
            network.partition(source, member.settings.address)
        watching = _member_at(cluster, stream.address or "")
        assert watching.watch is not None
        for watcher in list(watching.watch._watchers):
            watcher.end(BackendUnavailableError("test: connection lost"))

        async def disconnected() -> bool:
            return stream.address is None

        await eventually(disconnected, what="the stream broke")
        for i in range(writes):
            await writer.set("k", b"%d" % i)
        network.heal()
        if expected is None:
            with pytest.raises(ChangeStreamLaggedError, match="after revision"):
                await asyncio.wait_for(anext(sub), 10)
            sub = await client.subscribe("k")
        else:
            got = [(await asyncio.wait_for(anext(sub), 10)).value for _ in expected]
            assert got == [b"%d" % i for i in expected]
        await writer.set("k", b"end")  # nothing else was queued before it
        assert (await asyncio.wait_for(anext(sub), 10)).value == b"end"
        await sub.aclose()


async def test_read_now_answers_only_what_get_element_would_without_waiting(
    cluster: list[Member], client: RaftClientBackend
) -> None:
    # `InstantReads.read_now` (DRefStream answers it without a task): a session read of a seq
    # the member has applied gets the value `get_element` returns; a seq beyond it, or a read
    # that is not a session read, is left to `get_element`.
    await client.set("k", b"v")
    seq = client._seen_seq()
    for member in cluster:
        await wait_until(lambda m=member: m.node.applied >= seq, 10, "the write to be applied")
        handler = member.handler
        read = ReadRequest(session_seq=seq, follower=True)
        assert handler.read_now("k", read) == (True, await handler.get_element("k", read))
        assert handler.read_now("k", read) == (True, b"v")
        assert handler.read_now("nope", read) == (True, None)
        beyond = ReadRequest(session_seq=member.node.applied + 1, follower=True)
        assert handler.read_now("k", beyond) == (False, None)
        assert handler.read_now("k", FOLLOWER_READ) == (False, None)
        with pytest.raises(LimitExceededError):
            handler.read_now("x" * (member.settings.max_name_bytes + 1), read)
