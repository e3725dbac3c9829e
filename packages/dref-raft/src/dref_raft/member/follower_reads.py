"""`FollowerReads`: reads a member serves from its own state (docs/raft.md#read-modes).

* Linearizable, on a follower (`barrier`): the follower asks the leader for its read index
  (`LeaderApi.read_index`: the leader runs a ReadIndex round, then answers the seq it has
  applied), waits until it has applied that seq itself, and the read is served from its own
  state machine. One request to the leader is in flight at a time; every read that arrives
  meanwhile waits for the next one, which is sent after it arrived (a request sent earlier may
  have been answered with an index older than a write acknowledged before the read started), so
  all the reads waiting on a follower share one round.
* Session (`caught_up`): wait until this member has applied the caller's seq, no round at all.

A member that does not catch up within `catch_up` seconds (one election timeout: a healthy
follower is one heartbeat behind) sends the read on to the leader (`NotLeaderError` with the
leader's id: the caller retries there); without a leader it fails with `BackendTimeoutError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from dref.errors import (
    BackendTimeoutError,
    ClosedError,
    NoLeaderError,
    NotLeaderError,
    UnsupportedOperationError,
)
from dref_raft.core import PeerKind
from dref_raft.member.node import RaftNode
from dref_raft.transport.base import LeaderApi

__all__ = ["FollowerReads"]


class FollowerReads:
    """Read barriers of one member; `leader_client(id)` reaches the leader (`Member`)."""

    def __init__(
        self,
        node: RaftNode,
        leader_client: Callable[[str], LeaderApi],
        *,
        timeout: float,
        catch_up: float,
    ) -> None:
        self.node = node
        self._leader_client = leader_client
        self._timeout = timeout
        self._catch_up = catch_up
        self._next: asyncio.Future[int] | None = None
        """The read-index round the reads arriving now wait for (not sent yet)."""
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0
        """Read-index requests this member sent to the leader (metrics, tests)."""

    async def barrier(self) -> None:
        """Return once this member may serve a linearizable read from its own state: it has
        applied the leader's read index, taken after this call (on the leader: a ReadIndex
        round). Raises `NotLeaderError` (ask the leader instead), `NoLeaderError`,
        `TransportError` / `QuorumLostError` (the leader unreachable or unconfirmed) or
        `BackendTimeoutError`."""
        node = self.node
        if node.is_leader:
            await node.read_barrier(self._timeout)
            return
        leader = node.leader_id
        if leader is not None and node.core.peer_kinds.get(leader) is PeerKind.UPSTREAM:
            raise NotLeaderError(leader)  # an upstream leader answers no read index: read there
        future = self._next
        if future is None:
            future = self._next = asyncio.get_running_loop().create_future()
        if self._task is None:
            self._task = asyncio.create_task(self._rounds(), name=f"dref-read-index:{node.id}")
            node.track(self._task)
        try:
            async with asyncio.timeout(self._timeout):
                seq = await asyncio.shield(future)
        except TimeoutError:
            raise BackendTimeoutError(
                f"node {node.id}: no read index from the leader within {self._timeout:g} s"
            ) from None
        await self.caught_up(seq)

    async def caught_up(self, seq: int) -> None:
        """Return once this member has applied `seq` (see the module docstring for a member
        that does not catch up in time)."""
        node = self.node
        if seq <= node.applied:
            return
        wait = self._timeout if node.is_leader else self._catch_up
        if await node.wait_applied(seq, wait):
            return
        leader = node.leader_id
        if leader is not None and leader != node.id:
            raise NotLeaderError(leader)  # lagging: the leader has it
        raise BackendTimeoutError(
            f"node {node.id}: seq {seq} not applied here within {wait:g} s "
            f"(applied {node.applied}, leader {leader or 'unknown'})"
        )

    async def _rounds(self) -> None:
        """Send one read-index request per batch of waiting reads, one at a time."""
        try:
            while (future := self._next) is not None:
                self._next = None
                try:
                    seq = await self._ask()
                except asyncio.CancelledError:
                    future.set_exception(ClosedError(f"node {self.node.id} stopped"))
                    future.exception()  # retrieved: its readers may all have given up
                    raise
                except Exception as exc:
                    future.set_exception(exc)
                    future.exception()
                else:
                    future.set_result(seq)
        finally:
            self._task = None
            if self._next is not None:
                self._next.set_exception(ClosedError(f"node {self.node.id} stopped"))
                self._next.exception()
                self._next = None

    async def _ask(self) -> int:
        node = self.node
        leader = node.leader_id
        if leader is None:
            raise NoLeaderError(f"node {node.id}: no leader to ask for a read index")
        self.rounds += 1
        if leader == node.id:
            await node.read_barrier(self._timeout)
            return node.applied
        try:
            return await self._leader_client(leader).read_index(timeout=self._timeout)
        except UnsupportedOperationError:
            raise NotLeaderError(leader) from None  # an upstream leader: read there
