"""A 3-node cluster in one process over the in-memory transport: the conformance suite,
with the contexts spread over the members (leader and followers)."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import msgpack
import pytest
from cluster_procs import wait_until
from memory_cluster import memory_members, memory_options
from raft_lost_answers import LosesAnswers

import dref
from dref_compat.conformance import BackendConformance
from dref_raft.core import AppendEntries
from dref_raft.errors import TransportError
from dref_raft.member.registry import Member

IDS = ("n1", "n2", "n3")
HISTORY = 64


def member_options(node_id: str, **extra: Any) -> dict[str, Any]:
    return memory_options(IDS, node_id, watch_history=HISTORY, **extra)


@pytest.fixture
async def memory_cluster() -> AsyncIterator[list[Member]]:
    async with memory_members(IDS, watch_history=HISTORY) as members:
        yield members


class TestRaftMemoryCluster(LosesAnswers, BackendConformance):
    backend = "raft"
    revision_history = HISTORY
    fairness_updates = 400

    @pytest.fixture
    def fairness_options(self, memory_cluster: list[Member]) -> dict[str, Any]:
        return member_options(IDS[0])

    @pytest.fixture
    async def open_context(
        self, memory_cluster: list[Member]
    ) -> AsyncIterator[Callable[[], Awaitable[dref.DRefContext]]]:
        rotation = itertools.cycle(IDS)
        async with AsyncExitStack() as stack:

            async def open_one() -> dref.DRefContext:
                options = member_options(next(rotation))
                return await stack.enter_async_context(dref.connect("raft", **options))

            yield open_one


async def test_a_stream_opened_on_a_follower_after_a_write_through_it_starts_after_it(
    memory_cluster: list[Member],
) -> None:
    """Read your writes in events: a subscription opened on a follower right after a write
    through it starts after that write (its event never shows up as a new change), whether or
    not the leader's commit reached the follower before the write returned."""
    follower = next(m for m in memory_cluster if not m.node.is_leader)
    network = follower.network
    assert network is not None
    # Answers and the leader's commit messages race each other, as between processes.
    network.rng, network.delay = random.Random(7), (0.001, 0.02)
    async with dref.connect("raft", **member_options(follower.settings.node_id)) as ctx:
        ref = await ctx.make(0, "rw")
        for i in range(1, 21):
            await ref.set(i)
            async with ref.changes() as stream:
                assert follower.node.get_local("rw") == msgpack.packb(i)  # applied here now
                await ref.set(-i)
                assert await anext(stream) == -i


def _racing_follower(members: list[Member]) -> Member:
    """A follower whose answers and commit messages race each other, as between processes."""
    follower = next(m for m in members if not m.node.is_leader)
    network = follower.network
    assert network is not None
    network.rng, network.delay = random.Random(7), (0.001, 0.02)
    return follower


class _HeldAppends:
    """A member's consensus handler that holds the leader's entries (not its heartbeats)
    until `release` is set: the member stays behind without starting an election."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.release = asyncio.Event()

    async def handle(self, request: Any) -> Any:
        if isinstance(request, AppendEntries) and request.entries:
            await self.release.wait()
        return await self.inner.handle(request)


async def test_get_with_revision_on_a_follower_never_answers_older_than_its_read(
    memory_cluster: list[Member],
) -> None:
    """`get_with_revision` through a follower: the linearizable read goes to the leader, and
    the value and revision returned are the follower's own only once it applied what that
    read saw; a follower held behind waits, never answers with an older value."""
    follower = next(m for m in memory_cluster if not m.node.is_leader)
    leader = next(m for m in memory_cluster if m.node.is_leader)
    network = follower.network
    assert network is not None
    host = network._hosts[f"mem-{follower.settings.node_id}:1"]
    held = _HeldAppends(host.consensus)
    async with (
        dref.connect("raft", **member_options(leader.settings.node_id)) as writer,
        dref.connect("raft", **member_options(follower.settings.node_id)) as reader,
    ):
        written = await writer.make(0, "rev")
        read = await reader.make(0, "rev")
        before = await read.get_with_revision()
        assert before[0] == 0
        host.consensus = held
        try:
            await written.set(1)
            task = asyncio.create_task(read.get_with_revision())
            node = follower.node
            await wait_until(
                lambda: task.done() or bool(node._applied_waiters), 10, "the read to come back"
            )
            assert not task.done(), f"answered before the follower applied the write: {task}"
        finally:
            held.release.set()
            host.consensus = held.inner
        value, revision = await asyncio.wait_for(task, 10)
        assert value == 1
        assert revision > before[1]


async def test_a_fair_turn_waited_on_a_follower_knows_the_place_it_just_took(
    memory_cluster: list[Member],
) -> None:
    """`wait_turn` through a follower right after its swap failed and queued the ticket waits
    for the turn (the follower first applies the entry that queued it), rather than answering
    "not yet" because its own state does not show the ticket in line yet."""
    follower = _racing_follower(memory_cluster)
    leader = next(m for m in memory_cluster if m.node.is_leader)
    async with (
        dref.connect("raft", **member_options(leader.settings.node_id)) as head_ctx,
        dref.connect("raft", **member_options(follower.settings.node_id)) as waiter_ctx,
    ):
        head: Any = head_ctx.backend
        waiter: Any = waiter_ctx.backend
        for i in range(10):
            name = f"line{i}"
            await head.set(name, b"v0")
            # The head queues first (a swap expecting the wrong value), then the waiter.
            assert (await head.fair_compare_and_swap(name, b"no", b"h", b"head"))[0] is False
            swapped, _, ahead = await waiter.fair_compare_and_swap(name, b"v0", b"w", b"waiter")
            assert (swapped, ahead) == (False, 1)
            turn = asyncio.create_task(waiter.wait_turn(name, b"waiter"))
            await head.leave_line(name, b"head")
            assert await asyncio.wait_for(turn, 10) == b"v0"
            await waiter.leave_line(name, b"waiter")


async def test_an_update_whose_answer_was_lost_is_sent_again_and_applied_once(
    memory_cluster: list[Member],
) -> None:
    """The compare-and-set of `update_and_get` commits, but its answer is lost: the context
    sends the same request again, and the state machine answers with the recorded result
    instead of applying it twice (without sessions the retry would see its own write as a
    conflict and increment again)."""
    async with dref.connect("raft", **member_options("n1")) as ctx:
        ref = await ctx.make(0, "exactly-once")
        backend: Any = ctx.backend
        real = backend._compare
        sent: list[Any] = []

        async def lossy(command: Any) -> Any:
            result = await real(command)
            sent.append(command)
            if len(sent) == 1:
                raise TransportError("test: the answer was lost")
            return result

        backend._compare = lossy
        async with ref.changes() as stream:
            assert await ref.update_and_get(lambda n: n + 1) == 1
            assert await ref.get() == 1
            await ref.set(2)
            assert [await asyncio.wait_for(anext(stream), 10) for _ in range(2)] == [1, 2]
        assert len(sent) == 3
        assert sent[0] == sent[1]  # the same session and request number, sent twice
        assert sent[2].request == sent[0].request + 1
