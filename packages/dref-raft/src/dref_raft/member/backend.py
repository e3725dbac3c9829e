"""`RaftBackend`: the dref SPI over a Raft member running in this process.

`dref.connect("raft", ...)` starts (or, when a member with the same `node_id` already runs in
this process, joins) a voting member and waits up to `leader_wait` for a leader. Writes are
proposals: on the leader directly, from a follower forwarded to the leader over `DRefRaft`
(compare commands over the dref-only `DRefExt/Compare`) with upstream's retry policy bounded by
`op_timeout`. Reads are linearizable (ReadIndex on the leader); session reads
(`ref.get(consistency="session")`) come from this member's own state once it has applied every
write and read this context saw (docs/raft.md#read-modes). Change events come from the member's
own state machine: every member sees every committed change, in commit order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from dref.changes import Subscription
from dref.clock import Clock
from dref.errors import BackendTimeoutError, ClosedError
from dref.settings import DRefSettings
from dref.spi import Backend, BackendStatus, Capabilities, LockGrant
from dref_raft.commands import (
    Command,
    CompareResult,
    DeleteElement,
    ExpireElement,
    MemberStatus,
    NamesPage,
    SetElement,
)
from dref_raft.member.handler import NodeClientHandler
from dref_raft.member.registry import Member, local_members
from dref_raft.ops import (
    CompareOps,
    cluster_status,
    expire_at_ms,
    fenced_try_lock,
    paged_names,
    remote_expire,
)
from dref_raft.reads import FOLLOWER_READ
from dref_raft.sessions import WriteSession
from dref_raft.settings import RaftSettings
from dref_raft.transport.base import LeaderApi
from dref_raft.transport.retry import with_leader

__all__ = ["RaftBackend", "open_backend"]

logger = logging.getLogger("dref_raft")
T = TypeVar("T")


class RaftBackend(CompareOps):
    """The `raft` backend: one context's view of the member running in this process."""

    def __init__(
        self,
        member: Member,
        *,
        clock: Clock,
        change_buffer: int,
        exactly_once: bool = True,
        fair_updates: bool = True,
        waiter_life: float = 2.0,
    ) -> None:
        self.member = member
        self.node = member.node
        self.settings = member.settings
        self.clock = clock
        self.default_ttl = self.settings.default_ttl
        self.poll_interval = 1.0
        self._change_buffer = change_buffer
        self._closed = False
        #: The highest seq any operation of this context saw (its write applied, or the state
        #: its read came from): a session read waits until this member applied it.
        self._session_seq = 0
        # Compare commands need every voter to be a dref node (upstream would apply them as
        # no-ops); they reach the leader over DRefExt/Compare on either transport.
        native = not self.settings.mixed_cluster
        self.capabilities = Capabilities(
            linearizable=True,
            durable=self.settings.storage_dir is not None,
            distributed=self.settings.transport == "grpc",
            fencing=True,
            native_cas=native,
            owner_checked_locks=native,
            fenced_writes=native,
            exact_events=True,
            expiry_events=True,
            names=True,
            revisions=True,
            session_reads=True,
            exactly_once=native and exactly_once,
            fair_updates=native and fair_updates,
            lock_queue=native and fair_updates,
        )
        self.waiter_life = waiter_life
        if self.capabilities.lock_queue:
            # Lock waiters try again this often, renewing their place in the lock's line.
            self.poll_interval = min(self.poll_interval, waiter_life / 4)
        if native and exactly_once:
            self._session = WriteSession()

    # -- routing ----------------------------------------------------------------------------------
    def _check(self) -> None:
        if self._closed:
            raise ClosedError("the raft context is closed")

    async def _find_leader(self) -> str | None:
        return await self.node.wait_for_leader(0.05)

    async def _here(self) -> str:
        return self.node.id

    async def _route(
        self,
        local: Callable[[NodeClientHandler], Awaitable[T]],
        remote: Callable[[LeaderApi, float], Awaitable[T]],
        *,
        here: bool = False,
    ) -> T:
        """Run on the leader (`here`: on this member first): `local` when it is this node,
        else `remote` over DRefRaft."""
        self._check()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.op_timeout

        async def op(target: str) -> T:
            if target == self.node.id:
                result = await local(self.member.handler)
                self._session_seq = max(self._session_seq, self.node.applied)
                return result
            client = self.member.leader_client(target)
            result = await remote(client, max(0.001, deadline - loop.time()))
            self._session_seq = max(self._session_seq, client.applied_seq)
            # Read your writes in events too, lazily: what reads this member's own state next
            # (a session read, a stream opened, a revision, a place in line) waits until this
            # member has applied what the leader had when it answered (`_applied_through`).
            self.node.acknowledged(client.applied_seq)
            return result

        return await with_leader(op, self._here if here else self._find_leader, deadline)

    def _expire_at(self, ttl: float | None) -> int | None:
        return expire_at_ms(self.node.wall_ms(), ttl)

    async def _compare(self, command: Command) -> CompareResult:
        return await self._route(
            lambda h: h.compare(command),
            lambda c, left: c.compare(command, timeout=left),
        )

    # -- required ---------------------------------------------------------------------------------
    async def get(self, name: str) -> bytes | None:
        """Linearizable: on the leader, or with `read_from = "any"` from this member's own
        state once it applied the leader's read index (`FollowerReads`; a lagging member
        sends the read on to the leader)."""
        if self.settings.read_from == "any" and not self.settings.mixed_cluster:
            return await self._route(
                lambda h: h.get_element(name, FOLLOWER_READ),
                lambda c, left: c.get_element(name, timeout=left, read=FOLLOWER_READ),
                here=True,
            )
        return await self._route(
            lambda h: h.get_element(name),
            lambda c, left: c.get_element(name, timeout=left),
        )

    async def get_session(self, name: str) -> bytes | None:
        """This member's own value once it applied everything this context saw (no round trip
        when it has, as after every call that returned in time)."""
        self._check()
        if self.settings.mixed_cluster:
            # An upstream leader does not say what it applied: a linearizable read instead.
            return await self.get(name)
        await self._applied_through(self._session_seq, f"session read of {name}")
        return self.node.get_local(name)

    async def _applied_through(self, seq: int, what: str) -> None:
        """Return once this member has applied `seq` (at once when it has: as a rule after
        the previous call); `BackendTimeoutError` after `op_timeout`."""
        node = self.node
        if seq > node.applied and not await node.wait_applied(seq, self.settings.op_timeout):
            raise BackendTimeoutError(
                f"node {node.id}: {what}: seq {seq} not applied here within "
                f"{self.settings.op_timeout:g} s (applied {node.applied})"
            )

    async def set(self, name: str, value: bytes, ttl: float | None = None) -> None:
        expire_at = self._expire_at(ttl)
        if await self._session_write(SetElement(name, value, expire_at)) is not None:
            return
        await self._route(
            lambda h: h.set_element(name, value, expire_at),
            lambda c, left: c.set_element(name, value, expire_at, timeout=left),
        )

    async def _set_if_not_exist(self, name: str, value: bytes, expire_at: int | None) -> bool:
        return await self._route(
            lambda h: h.set_element_if_not_exist(name, value, expire_at),
            lambda c, left: c.set_element_if_not_exist(name, value, expire_at, timeout=left),
        )

    async def delete(self, name: str) -> None:
        if await self._session_write(DeleteElement(name)) is not None:
            return
        await self._route(
            lambda h: h.delete_element(name),
            lambda c, left: c.delete_element(name, timeout=left),
        )

    async def expire(self, name: str, ttl: float) -> bool:
        expire_at = self._expire_at(ttl)
        assert expire_at is not None
        written = await self._session_write(ExpireElement(name, expire_at))
        if written is not None:
            return written.matched

        async def local(h: NodeClientHandler) -> bool:
            _, result = await h._propose(ExpireElement(name, expire_at))
            return bool(result.created)

        async def remote(c: LeaderApi, left: float) -> bool:
            return await remote_expire(c, name, expire_at, left)

        return await self._route(local, remote)

    async def subscribe(self, name: str) -> Subscription:
        self._check()
        await self._applied_through(self.node.acknowledged_seq, f"stream of {name}")
        return self.node.hub.subscribe(name, self._change_buffer)

    async def get_with_revision(self, name: str) -> tuple[bytes | None, int]:
        """A linearizable read (as `get`), then this member's value and applied seq, taken
        together: the member has applied at least what the read had to see."""
        await self.get(name)
        await self._applied_through(self._session_seq, f"revision of {name}")
        return self.node.get_local(name), self.node.applied

    async def subscribe_since(self, name: str, since: int) -> Subscription:
        """Replay from the member's watch history (`watch_history` events), then live."""
        self._check()
        await self._applied_through(self.node.acknowledged_seq, f"stream of {name}")
        watch = self.member.watch
        assert watch is not None, "a member always keeps its watch history"
        replay = watch.replay(name, since)
        sub = self.node.hub.subscribe(name, self._change_buffer)
        sub.preload(replay, max(since, self.node.applied))
        return sub

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await local_members.release(self.member)

    # -- tools ------------------------------------------------------------------------------------
    def names(self, prefix: str = "") -> AsyncIterator[str]:
        """From the leader's state machine after a read barrier (this member's when it leads,
        else over `DRefExt/Names`), a page of names at a time."""

        def page(after: str) -> Awaitable[NamesPage]:
            return self._route(
                lambda h: h.names(prefix, after, 0),
                lambda c, left: c.names(prefix, after, timeout=left),
            )

        return paged_names(page)

    async def status(self) -> BackendStatus:
        """Every member's own view: this one's directly, the others' over `DRefExt/Status`."""
        self._check()
        timeout = self.settings.op_timeout

        async def fetch(node_id: str) -> MemberStatus:
            if node_id == self.node.id:
                return self.member.handler.status()
            return await self.member.leader_client(node_id).status(timeout=timeout)

        summary = f"raft member {self.node.id} in this process ({self.settings.transport})"
        return await cluster_status(summary, dict(self.settings.members), fetch)

    # -- native paths -----------------------------------------------------------------------------
    async def _wait_turn(self, name: str, ticket: bytes, wait: float) -> tuple[bool, bytes | None]:
        """From this member's applied state, once it has applied the fair swap that queued
        `ticket` (`_applied_through`): the line is here then."""
        self._check()
        await self._applied_through(self._session_seq, f"turn on {name}")
        return await self.node.turns.wait(name, ticket, wait)

    async def try_lock(self, name: str, token: bytes, ttl: float) -> LockGrant | None:
        self._check()
        return await fenced_try_lock(
            lambda: self._acquire_lock(name, token, ttl),
            self.node.watch_created(name, token),
            self.settings.op_timeout,
            f"on node {self.node.id}",
        )


async def open_backend(settings: RaftSettings, core: DRefSettings, clock: Clock) -> Backend:
    """Start or join this process's member and wait up to `leader_wait` for a leader
    (`mode = "member"`; `dref_raft.plugin.open_raft` opens client mode with `dref_raft.client`)."""
    member = await local_members.acquire(settings, core.change_buffer)
    backend = RaftBackend(
        member,
        clock=clock,
        change_buffer=core.change_buffer,
        exactly_once=settings.exactly_once,  # this context's choice, not the member's
        fair_updates=settings.fair_updates,  # as are these
        waiter_life=settings.waiter_life,
    )
    try:
        leader = await member.node.wait_for_leader(settings.leader_wait)
    except BaseException:
        await backend.aclose()
        raise
    if leader is None:
        logger.warning(
            "raft node %s: no leader within %g s; operations retry until op_timeout",
            settings.node_id,
            settings.leader_wait,
            extra={"dref_node": settings.node_id},
        )
    return backend
