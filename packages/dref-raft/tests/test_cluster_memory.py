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
from memory_cluster import memory_members, memory_options
from raft_lost_answers import LosesAnswers

import dref
from dref_compat.conformance import BackendConformance
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
