"""A compare that fails is a linearizable read, not a log entry (dref_raft.member.compare_read),
on a 3-node in-process cluster: through a client and on the leader itself. Only without
exactly-once sessions: a session's write always goes through the log
(docs/raft.md#compare-as-read)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from memory_cluster import memory_members
from test_client_memory import CLIENT, HISTORY, IDS

import dref
from dref_raft.commands import CompareAndDelete, CompareAndExpire, CompareAndSet
from dref_raft.member.registry import Member

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def leader() -> AsyncIterator[Member]:
    async with memory_members(IDS, watch_history=HISTORY) as members:
        leader_id = await members[0].node.wait_for_leader(10)
        yield next(m for m in members if m.node.id == leader_id)


def last_seq(member: Member) -> int:
    return member.node.core.log.last_seq


async def test_a_failing_compare_adds_no_log_entry(leader: Member) -> None:
    async with dref.connect("raft", **CLIENT, exactly_once=False) as ctx:
        backend = ctx.backend
        await backend.set("k", b"a")
        before = last_seq(leader)
        # Wrong guesses: answered with the current value, and the log does not grow.
        assert await backend.compare_and_swap("k", b"x", b"b") == (False, b"a")
        assert not await backend.compare_and_set("k", b"x", b"b")
        assert not await backend.release_lock("k", b"x")  # CompareAndDelete
        assert not await backend.refresh_lock("k", b"x", 5)  # CompareAndExpire
        assert await backend.compare_and_swap("missing", b"x", b"b") == (False, None)
        assert last_seq(leader) == before
        # A right guess is one log entry, as before.
        assert await backend.compare_and_swap("k", b"a", b"b") == (True, b"b")
        assert last_seq(leader) == before + 1
        assert await backend.get("k") == b"b"


async def test_a_failing_compare_of_a_session_goes_through_the_log(leader: Member) -> None:
    """With exactly-once sessions a failing compare is still a log entry: its answer is
    recorded with the session, so a retry of it gets the same answer."""
    async with dref.connect("raft", **CLIENT) as ctx:
        backend = ctx.backend
        assert backend.capabilities.exactly_once
        await backend.set("k", b"a")
        before = last_seq(leader)
        assert await backend.compare_and_swap("k", b"x", b"b") == (False, b"a")
        assert last_seq(leader) == before + 1
        assert await backend.get("k") == b"a"


async def test_a_compare_that_fails_at_apply_time_still_answers_right(leader: Member) -> None:
    handler = leader.handler
    await handler.set_element("k", b"a", None)
    before = last_seq(leader)
    # A write proposed first, not applied yet: the compare looks as if it will match on the
    # leader's state, so it is proposed, and the state machine refuses it after the write.
    write = asyncio.create_task(handler.set_element("k", b"other", None))
    await asyncio.sleep(0)  # the write's proposal is submitted to the driver first
    result = await handler.compare(CompareAndSet("k", b"a", b"b", None))
    await write
    assert (result.matched, result.current) == (False, b"other")
    assert last_seq(leader) == before + 2
    for command in (CompareAndDelete("k", b"a"), CompareAndExpire("k", b"a", 1)):
        failed = await handler.compare(command)
        assert (failed.matched, failed.current) == (False, b"other")
    assert last_seq(leader) == before + 2
