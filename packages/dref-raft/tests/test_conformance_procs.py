"""The conformance suite through member contexts of a real 3-member cluster over gRPC: two
`python -m dref_raft` processes (the leader among them) and a follower member in this process.

One cluster serves the whole module: the processes, the in-process member and the event loop
live as long as the module (`loop_scope="module"`), and every test opens fresh contexts on that
member (the suite isolates its tests by unique element names). Every operation of the tests
is forwarded from the in-process follower to a leader in another process, and the change
events of a write are seen on the follower once the write has returned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack

import pytest
import pytest_asyncio
from cluster_procs import ProcCluster, follower_member
from raft_lost_answers import LosesAnswers

import dref
from dref_compat.conformance import BackendConformance
from dref_raft.member.registry import Member

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio(loop_scope="module")]

HISTORY = 64
"""The in-process member's `watch_history`, small so that the history test is short."""


@pytest.fixture(scope="module")
def shared_procs() -> Iterator[ProcCluster]:
    """Two member processes and the slot of the member in this process."""
    with ProcCluster(2, extra=1).running() as cluster:
        yield cluster


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_member(shared_procs: ProcCluster) -> AsyncIterator[Member]:
    """The in-process member, held for the whole module (contexts join it), as a follower."""
    async with follower_member(shared_procs, watch_history=HISTORY) as member:
        yield member


class TestRaftMemberContextsProcs(LosesAnswers, BackendConformance):
    backend = "raft"
    revision_history = HISTORY
    fairness_updates = 600

    @pytest.fixture
    def fairness_options(self, shared_procs: ProcCluster) -> dict[str, object]:
        """The contending processes cannot join this process's member: they are client
        contexts of the cluster (its leader is a member process)."""
        return {"mode": "client", "endpoints": shared_procs.endpoints}

    # The suite's async fixtures, on the module's loop (the member's).
    @pytest_asyncio.fixture(loop_scope="module")
    async def open_context(
        self, shared_procs: ProcCluster, shared_member: Member
    ) -> AsyncIterator[Callable[[], Awaitable[dref.DRefContext]]]:
        async with AsyncExitStack() as stack:

            async def open_one() -> dref.DRefContext:
                options = shared_procs.member_options(0)
                ctx = await stack.enter_async_context(dref.connect("raft", **options))
                assert ctx.backend.member is shared_member  # type: ignore[attr-defined]
                return ctx

            yield open_one

    @pytest_asyncio.fixture(loop_scope="module")
    async def ctx(
        self, open_context: Callable[[], Awaitable[dref.DRefContext]]
    ) -> dref.DRefContext:
        return await open_context()

    @pytest_asyncio.fixture(loop_scope="module")
    async def ctx2(
        self, open_context: Callable[[], Awaitable[dref.DRefContext]]
    ) -> dref.DRefContext:
        return await open_context()
