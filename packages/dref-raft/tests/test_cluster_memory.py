"""A 3-node cluster in one process over the in-memory transport: the conformance suite,
with the contexts spread over the members (leader and followers)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

import dref
from dref_compat.conformance import BackendConformance
from dref_raft.backend import Member, acquire_member, release_member, reset_memory_network
from dref_raft.settings import RaftSettings

IDS = ("n1", "n2", "n3")


def member_options(node_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "host": f"mem-{node_id}",
        "port": 1,
        "endpoints": [f"{i}=mem-{i}:1" for i in IDS],
        "transport": "memory",
        **extra,
    }


@pytest.fixture
async def memory_cluster() -> AsyncIterator[list[Member]]:
    reset_memory_network()
    members = [await acquire_member(RaftSettings(**member_options(i))) for i in IDS]
    try:
        for member in members:
            assert await member.node.wait_for_leader(10) is not None
        yield members
    finally:
        for member in members:
            await release_member(member)
        reset_memory_network()


class TestRaftMemoryCluster(BackendConformance):
    backend = "raft"

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
