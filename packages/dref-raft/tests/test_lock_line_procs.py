"""Lock waiters on different member processes are served in arrival order (`lock_queue`,
docs/raft.md#the-fair-line): the lock's line lives in the replicated state machine, so a
waiter on the leader's process does not overtake one that came earlier on another member.

A node process, a member in this process and a member in a worker process
(`lock_line_worker.py`); the waiters alternate between the two in-test members.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_procs import ProcCluster, follower_member

import dref
from dref_compat.conformance import eventually

pytestmark = pytest.mark.timeout(120)

WAITERS = 8
WORKER = Path(__file__).with_name("lock_line_worker.py")


@pytest.fixture
def procs() -> Iterator[ProcCluster]:
    with ProcCluster(1, extra=2).running() as cluster:
        yield cluster


async def test_lock_waiters_on_different_members_get_the_lock_in_arrival_order(
    procs: ProcCluster,
) -> None:
    lock, order = "lock-line", "lock-line-order"
    async with follower_member(procs, 0) as member:
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            json.dumps(procs.member_options(1)),
            lock,
            order,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert worker.stdin is not None
        assert worker.stdout is not None
        try:
            async with asyncio.timeout(60):
                assert await worker.stdout.readline() == b"ready\n"
            async with dref.connect("raft", **procs.member_options(0)) as ctx:
                assert ctx.backend.capabilities.lock_queue
                await ctx.make("", order)
                lines = member.node.machine.lines

                async def waiter(number: int) -> None:
                    async with ctx.lock(lock, ttl=10, timeout=60):
                        await ctx.ref(order).update(lambda granted: f"{granted}{number},")

                local: list[asyncio.Task[None]] = []
                async with ctx.lock(lock, ttl=10):
                    for number in range(WAITERS):
                        if number % 2:  # on the worker's member
                            worker.stdin.write(b"%d\n" % number)
                            await worker.stdin.drain()
                        else:
                            local.append(asyncio.create_task(waiter(number)))

                        async def arrived(count: int = number + 1) -> bool:
                            return lines.waiting(lock) == count

                        # Queued (its failed attempt applied here) before the next one starts.
                        await eventually(arrived, timeout=30, what=f"waiter {number} queued")
                worker.stdin.close()
                async with asyncio.timeout(60):
                    await asyncio.gather(*local)
                    assert await worker.wait() == 0
                granted = await ctx.ref(order).get()
                assert granted == "".join(f"{n}," for n in range(WAITERS))
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
