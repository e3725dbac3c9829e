"""In-process Raft clusters over the in-memory transport (`transport = "memory"`), for the
tests that need one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from dref_raft.member.registry import Member, local_members
from dref_raft.settings import RaftSettings


def memory_options(ids: Sequence[str], node_id: str, **extra: Any) -> dict[str, Any]:
    """Options of member `node_id` of the in-memory cluster of `ids`."""
    return {
        "node_id": node_id,
        "host": f"mem-{node_id}",
        "port": 1,
        "endpoints": [f"{i}=mem-{i}:1" for i in ids],
        "transport": "memory",
        **extra,
    }


@asynccontextmanager
async def memory_members(ids: Sequence[str], **extra: Any) -> AsyncIterator[list[Member]]:
    """A member per id (with `extra` options), each knowing a leader; released (those the test
    has not released itself) and the network reset at exit."""
    local_members.reset_network()
    members = [
        await local_members.acquire(RaftSettings(**memory_options(ids, i, **extra))) for i in ids
    ]
    try:
        for member in members:
            assert await member.node.wait_for_leader(10) is not None
        yield members
    finally:
        for member in members:
            if member.refs > 0:
                await local_members.release(member)
        local_members.reset_network()
