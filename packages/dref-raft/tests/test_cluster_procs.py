"""Real multi-process clusters over gRPC on 127.0.0.1: node processes plus a member in the test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cluster_procs import ProcCluster, lead_elsewhere

import dref
from dref.errors import DRefError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcCluster]:
    with ProcCluster(2, storage=tmp_path, extra=1).running() as cluster:
        yield cluster


@pytest.fixture
async def member(procs: ProcCluster) -> AsyncIterator[dref.DRefContext]:
    async with dref.connect("raft", **procs.member_options(0)) as ctx:
        yield ctx


async def test_writes_reads_and_events_across_processes(member: dref.DRefContext) -> None:
    backend = member.backend
    assert backend.capabilities.distributed
    assert backend.capabilities.linearizable
    async with await backend.subscribe("k") as events:
        for i in range(20):
            await backend.set("k", b"%d" % i)
        assert await backend.get("k") == b"19"
        seen = [(await anext(events)).value for _ in range(20)]
    assert seen == [b"%d" % i for i in range(20)]
    assert await backend.set_if_not_exist("once", b"a")
    assert not await backend.set_if_not_exist("once", b"b")


async def test_kill_leader_during_writes_loses_no_acknowledged_write(
    procs: ProcCluster, member: dref.DRefContext
) -> None:
    backend = member.backend
    node = backend.member.node  # type: ignore[attr-defined]
    acked: list[int] = []
    # Make a node process the leader: the in-test member must not be the one killed.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    await lead_elsewhere(node)
    victim = next(n for n in procs.nodes if n.node_id == node.leader_id)

    async def writer() -> None:
        for i in range(400):
            try:
                await backend.set(f"w{i}", b"x")
                acked.append(i)
            except DRefError:
                pass

    task = asyncio.create_task(writer())
    while len(acked) < 50:
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    victim.kill()
    await task
    assert node.leader_id not in (None, victim.node_id)
    for i in acked:
        assert await backend.get(f"w{i}") == b"x", f"acknowledged write w{i} lost"
    assert len(acked) > 100
