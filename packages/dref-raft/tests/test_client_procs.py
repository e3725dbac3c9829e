"""Client mode against real member processes over gRPC: the conformance suite through client
contexts, and a watch that survives `kill -9` of the member it streams from."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from cluster_procs import ProcCluster
from raft_lost_answers import LosesAnswers

import dref
from dref.errors import DRefError
from dref_compat.conformance import BackendConformance
from dref_raft.client.backend import RaftClientBackend

pytestmark = pytest.mark.timeout(120)

HISTORY = 64
"""The members' `watch_history`, small so that the history test is short."""


def client_options(cluster: ProcCluster) -> dict[str, Any]:
    return {"mode": "client", "endpoints": cluster.endpoints}


@pytest.fixture(scope="module")
def shared_procs() -> Iterator[ProcCluster]:
    history = {"DREF_RAFT_WATCH_HISTORY": str(HISTORY)}
    with ProcCluster(3, node_env=history).running() as cluster:
        yield cluster


class TestRaftClientProcs(LosesAnswers, BackendConformance):
    backend = "raft"
    revision_history = HISTORY
    fairness_updates = 600

    @pytest.fixture
    def fairness_options(self, shared_procs: ProcCluster) -> dict[str, Any]:
        """The contending processes are client contexts of the cluster."""
        return client_options(shared_procs)

    @pytest.fixture
    async def open_context(
        self, shared_procs: ProcCluster
    ) -> AsyncIterator[Callable[[], Awaitable[dref.DRefContext]]]:
        async with AsyncExitStack() as stack:

            async def open_one() -> dref.DRefContext:
                options = client_options(shared_procs)
                return await stack.enter_async_context(dref.connect("raft", **options))

            yield open_one


@pytest.fixture
def procs() -> Iterator[ProcCluster]:
    with ProcCluster(3).running() as cluster:
        yield cluster


async def test_watch_survives_kill_of_its_member(procs: ProcCluster) -> None:
    async with dref.connect("raft", **client_options(procs)) as ctx:
        client = ctx.backend
        assert isinstance(client, RaftClientBackend)
        assert client.capabilities.distributed
        async with await client.subscribe("k") as sub:
            stream = client._streams["k"]
            victim = next(n for n in procs.nodes if n.address == stream.address)
            written: list[int] = []

            async def writer() -> None:
                for i in range(60):
                    for _ in range(20):  # an outcome-unknown write is retried (same value)
                        try:
                            await client.set("k", b"%d" % i)
                            break
                        except DRefError:
                            continue
                    else:
                        raise AssertionError(f"write {i} never acknowledged")
                    written.append(i)
                    if i == 20:
                        victim.kill()  # kill -9 the member the stream is connected to

            task = asyncio.create_task(writer())
            seen: list[int] = []
            try:
                while not seen or seen[-1] != 59:
                    event = await asyncio.wait_for(anext(sub), 20)
                    assert event.value is not None
                    seen.append(int(event.value))
            finally:
                await task
        assert stream.address not in (None, victim.address)
    # In order, no gap: each value is the previous one or the next (a retried write repeats).
    assert seen[0] == 0
    for before, after in itertools.pairwise(seen):
        assert after in (before, before + 1), seen
