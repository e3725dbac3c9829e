"""Session reads (`ref.get(consistency="session")`) on a follower of a real 3-process cluster:
two `python -m dref_raft` processes and a member in the test process."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_procs import (
    ProcCluster,
    check_session_reads_see_own_writes,
    follower_member,
    wait_until,
)

import dref
from dref_raft.member.backend import RaftBackend

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcCluster]:
    with ProcCluster(2, storage=tmp_path, extra=1).running() as cluster:
        yield cluster


async def test_a_follower_session_read_sees_the_callers_own_writes(procs: ProcCluster) -> None:
    async with follower_member(procs) as member:
        assert not member.node.is_leader
        async with dref.connect("raft", **procs.member_options(0)) as ctx:
            assert ctx.backend.capabilities.session_reads
            refs = [ctx.ref(f"session:{i}", type=int) for i in range(4)]
            # Every write is forwarded to the leader in another process.
            await check_session_reads_see_own_writes(refs, 40)


async def test_a_session_read_is_served_by_the_follower_alone(procs: ProcCluster) -> None:
    """With both other processes stopped (SIGSTOP), the follower still answers a session read
    with the caller's last write, from its own state; a linearizable read cannot (no quorum)."""
    async with (
        follower_member(procs, op_timeout=1.0) as member,
        dref.connect("raft", **procs.member_options(0), op_timeout=1.0) as ctx,
    ):
        ref = ctx.ref("session:local", type=str)
        await ref.set("mine")
        assert not member.node.is_leader
        # The leader answered once the write committed; the follower applies it when the
        # leader's next message says so: before both stop, or it could never (that wait is
        # the session read's own, tested above).
        backend = ctx.backend
        assert isinstance(backend, RaftBackend)
        seen = backend._session_seq
        await wait_until(lambda: member.node.applied >= seen, 10, "the follower to apply it")
        for node in procs.nodes:
            node.signal(signal.SIGSTOP)
        try:
            async with asyncio.timeout(0.5):
                assert await ref.get(consistency="session") == "mine"
            with pytest.raises(dref.errors.DRefError):
                await ref.get(consistency="linearizable")
        finally:
            for node in procs.nodes:
                node.signal(signal.SIGCONT)
