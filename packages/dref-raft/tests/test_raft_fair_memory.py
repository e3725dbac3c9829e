"""The fair line through a 3-member cluster on the in-memory transport
(docs/raft.md#the-fair-line): dead waiters lapse after `waiter_life`, for updates and for lock
waiters, and the line survives a change of leader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from memory_cluster import memory_members, memory_options

import dref
from dref_compat.conformance import DEADLINE, eventually
from dref_raft.member.registry import Member

pytestmark = pytest.mark.timeout(60)

IDS = ("f1", "f2", "f3")
LIFE = 0.4


def options(node_id: str) -> dict[str, Any]:
    return memory_options(IDS, node_id, waiter_life=LIFE)


@pytest.fixture
async def cluster() -> AsyncIterator[list[Member]]:
    async with memory_members(IDS, waiter_life=LIFE) as members:
        yield members


async def test_an_update_behind_a_head_that_never_returns_completes(cluster: list[Member]) -> None:
    async with dref.connect("raft", **options("f1")) as ctx:
        ref = await ctx.make(0, "fair:dead-head")
        backend = ctx.backend
        swapped, _, _ = await backend.fair_compare_and_swap(ref.name, b"-", b"\x01", b"t-dead")
        assert not swapped  # a contender that never comes back heads the line
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await asyncio.wait_for(ref.update_and_get(lambda n: n + 1), DEADLINE) == 1
        # It had to wait for the dead place to lapse (log time), and not much longer.
        assert LIFE * 0.5 <= loop.time() - started < DEADLINE


async def test_a_lock_waiter_behind_a_dead_one_gets_the_lock(cluster: list[Member]) -> None:
    async with dref.connect("raft", **options("f2")) as ctx:
        backend = ctx.backend
        assert backend.capabilities.lock_queue
        assert await backend.try_lock("fair:lock", b"holder00", 5) is not None
        assert await backend.try_lock("fair:lock", b"deadwait", 5) is None  # queued, then gone
        assert await backend.release_lock("fair:lock", b"holder00")
        async with ctx.lock("fair:lock", ttl=5, timeout=DEADLINE) as guard:
            assert guard.fence is not None


async def test_the_line_survives_a_change_of_leader(cluster: list[Member]) -> None:
    async with dref.connect("raft", **{**options("f3"), "waiter_life": 30.0}) as ctx:
        backend = ctx.backend
        await ctx.make(0, "fair:leader-change")
        tickets = [b"first", b"second", b"third"]
        for expected_ahead, ticket in enumerate(tickets):
            swapped, _, ahead = await backend.fair_compare_and_swap(
                "fair:leader-change", b"-", b"x", ticket
            )
            assert (swapped, ahead) == (False, expected_ahead)
        old = next(m for m in cluster if m.node.is_leader)
        assert await old.node.step_down()

        async def new_leader() -> bool:
            return any(m.node.is_leader and m is not old for m in cluster)

        await eventually(new_leader, what="another leader")
        # The new leader holds the same line: the second still has one waiter in front of it.
        swapped, _, ahead = await backend.fair_compare_and_swap(
            "fair:leader-change", b"-", b"x", b"second"
        )
        assert (swapped, ahead) == (False, 1)
        await backend.leave_line("fair:leader-change", b"first")
        turn = await asyncio.wait_for(backend.wait_turn("fair:leader-change", b"second"), DEADLINE)
        assert turn is not None
        for member in cluster:  # every member holds the same line
            await eventually(
                lambda m=member: _true(
                    m.node.machine.lines.position("fair:leader-change", b"third") == 1
                ),
                what=f"{member.node.id} applied the leave",
            )


async def _true(value: bool) -> bool:
    return value
