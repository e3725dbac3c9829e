"""Membership operations (docs/raft.md#membership): what a member answers on `DRefMembership`
(`NodeMembership`: changes proposed by its node when it leads), and `ClusterMembers`, which
asks a cluster's leader from anywhere.

`ClusterMembers` sends every request to the leader over the dref-only `DRefMembership` service,
retried per upstream's policy (`with_leader`: not-leader hints followed, bounded by one
deadline); given a local `NodeMembership` it answers in process while that member leads. The
members learnt from answers are remembered, so a leader added later is found too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from dref.errors import BackendTimeoutError, ConfigurationError, DRefError, NoLeaderError
from dref.resources import AsyncResource
from dref_raft.commands import Membership, MembersView
from dref_raft.errors import MembershipError
from dref_raft.member.node import RaftNode, not_leader_error
from dref_raft.settings import RaftSettings
from dref_raft.transport.grpc_membership import MembershipClient, MembershipHandler
from dref_raft.transport.retry import with_leader
from dref_raft.transport.security import PLAINTEXT, TransportSecurity

__all__ = ["DEFAULT_PROMOTION_TIMEOUT", "ClusterMembers", "NodeMembership", "request_join"]

logger = logging.getLogger("dref_raft.member.membership")

#: Pause between two join requests of a discovering member.
_JOIN_RETRY = 0.5

#: How long `add` waits for the new member's promotion to voter by default (seconds).
DEFAULT_PROMOTION_TIMEOUT = 60.0
#: Pause between two looks at a learner that is not promoted yet.
_PROMOTION_POLL = 0.1


class NodeMembership:
    """`MembershipHandler` over a member's node: changes are proposed on the leader only (a
    follower raises not-leader, so callers route to the leader) and answered once committed."""

    def __init__(self, node: RaftNode, settings: RaftSettings) -> None:
        self.node = node
        self.settings = settings

    def _check(self) -> None:
        if self.settings.mixed_cluster:
            raise MembershipError(
                "mixed_cluster = true: upstream nodes would ignore a configuration change; "
                "membership changes need a cluster of dref nodes only"
            )

    async def add_member(self, node_id: str, address: str) -> MembersView:
        """Add `node_id` at `address` as a learner (nothing to do when it is a member)."""
        self._check()

        def change(m: Membership) -> Membership | None:
            if node_id in m.members:
                return None
            others = tuple(a for a in m.addresses if a[0] != node_id)
            return Membership(
                m.voters,
                tuple(sorted({*m.learners, node_id})),
                tuple(sorted((*others, (node_id, address)))),
            )

        return await self.node.change_membership(change, self.settings.op_timeout)

    async def remove_member(self, node_id: str) -> MembersView:
        """Remove a voter or a learner (a removed leader steps down once it committed)."""
        self._check()

        def change(m: Membership) -> Membership:
            if node_id not in m.members:
                raise MembershipError(
                    f"{node_id!r} is not a member (members: {', '.join(m.members)})"
                )
            return Membership(
                tuple(v for v in m.voters if v != node_id),
                tuple(v for v in m.learners if v != node_id),
                tuple(a for a in m.addresses if a[0] != node_id),
            )

        return await self.node.change_membership(change, self.settings.op_timeout)

    async def list_members(self) -> MembersView:
        """The configuration in force, as the leader sees it."""
        if not self.node.is_leader:
            raise not_leader_error(self.node.leader_id)
        return self.node.members_view()

    async def transfer_leadership(self, node_id: str) -> str:
        """Hand leadership to `node_id` ("": the most up-to-date voter); the new leader."""
        return await self.node.transfer_leadership(node_id or None, self.settings.op_timeout)


class ClusterMembers(AsyncResource):
    """Membership operations on the cluster whose members are `endpoints` (id → host:port).

    `local` (with `local_id`) answers in process when that member leads. `timeout` bounds each
    request, retries included (`op_timeout`).
    """

    def __init__(
        self,
        endpoints: Mapping[str, str],
        *,
        timeout: float = 10.0,
        local: MembershipHandler | None = None,
        local_id: str | None = None,
        local_leader: Callable[[], str | None] | None = None,
        security: TransportSecurity = PLAINTEXT,
    ) -> None:
        if not endpoints and local is None:
            raise ConfigurationError("membership operations need the members' endpoints")
        self.timeout = timeout
        self.security = security
        self._addresses = dict(endpoints)
        self._local, self._local_id, self._local_leader = local, local_id, local_leader
        self._order = sorted(self._addresses)
        self._rotation = 0
        self._leader: str | None = None
        self._clients: dict[str, MembershipClient] = {}

    async def add(
        self,
        node_id: str,
        address: str,
        *,
        wait: bool = True,
        promotion_timeout: float = DEFAULT_PROMOTION_TIMEOUT,
    ) -> MembersView:
        """Add `node_id` (listening at `address`, started with `join = true`) as a learner.

        With `wait` (default) return once the leader promoted it to voter (it caught up to
        within `learner_promotion_lag` entries) and that change is committed, else
        `BackendTimeoutError` after `promotion_timeout` seconds (it stays a learner; remove it
        or let it catch up).
        Without `wait`: once the learner is in the committed configuration.
        """
        view = await self._route(lambda h: h.add_member(node_id, address))
        if not wait:
            return view
        loop = asyncio.get_running_loop()
        deadline = loop.time() + promotion_timeout
        while node_id not in view.voters or not view.committed:
            if loop.time() >= deadline:
                row = next((m for m in view.members if m.node_id == node_id), None)
                held = f"holds {row.match_seq} of {view.last_seq}" if row else "is no member"
                raise BackendTimeoutError(
                    f"{node_id} was added as a learner but not promoted within "
                    f"{promotion_timeout:g} s (it {held}): is it running with join = true at "
                    f"{address}?"
                )
            await asyncio.sleep(_PROMOTION_POLL)
            view = await self.list()
        return view

    async def remove(self, node_id: str) -> MembersView:
        """Remove a voter or a learner; returns once the change is committed (a removed
        leader steps down then; stop the removed member's process afterwards)."""
        return await self._route(lambda h: h.remove_member(node_id))

    async def list(self) -> MembersView:
        """The configuration in force, as the leader sees it."""
        return await self._route(lambda h: h.list_members())

    async def transfer_leader(self, node_id: str | None = None) -> str:
        """Hand leadership to `node_id` (None: the most up-to-date voter); the new leader.
        `BackendTimeoutError` when it did not take over within an election timeout."""
        new: list[str] = []

        async def call(handler: MembershipHandler) -> MembersView:
            new.append(await handler.transfer_leadership(node_id or ""))
            return MembersView((), 0, True, new[-1], 0)

        await self._route(call)
        self._leader = new[-1]
        return new[-1]

    async def _route(
        self, call: Callable[[MembershipHandler], Awaitable[MembersView]]
    ) -> MembersView:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout

        async def op(target: str) -> MembersView:
            handler = self._handler(target, max(0.001, deadline - loop.time()))
            try:
                view = await call(handler)
            except Exception:
                if self._leader == target:
                    self._leader = None
                raise
            self._leader = view.leader or target
            for member in view.members:
                if member.address:
                    self._addresses[member.node_id] = member.address
            return view

        return await with_leader(op, self._find_leader, deadline)

    async def _find_leader(self) -> str | None:
        if self._leader is not None:
            return self._leader
        if self._local_leader is not None and (leader := self._local_leader()) is not None:
            return leader
        if not self._order:
            return self._local_id
        node_id = self._order[self._rotation % len(self._order)]
        self._rotation += 1
        return node_id

    def _handler(self, target: str, timeout: float) -> MembershipHandler:
        if target == self._local_id and self._local is not None:
            return self._local
        address = self._addresses.get(target)
        if address is None:
            raise NoLeaderError(f"leader {target!r} has no known address")
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = MembershipClient(
                address, timeout=timeout, security=self.security
            )
        client.timeout = timeout
        return _Remote(client)

    async def aclose(self) -> None:
        """Close the connections."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


class _Remote:
    """A `MembershipClient` seen as a `MembershipHandler`."""

    def __init__(self, client: MembershipClient) -> None:
        self.client = client

    async def add_member(self, node_id: str, address: str) -> MembersView:
        return await self.client.add_member(node_id, address)

    async def remove_member(self, node_id: str) -> MembersView:
        return await self.client.remove_member(node_id)

    async def list_members(self) -> MembersView:
        return await self.client.list_members()

    async def transfer_leadership(self, node_id: str) -> str:
        return await self.client.transfer_leadership(node_id)


async def request_join(settings: RaftSettings) -> None:
    """A member started with `join = true` through discovery asks the leader, through the
    members it found (`settings.endpoints`), to add it at `settings.address` as a learner;
    retried every 0.5 s until `discovery_timeout` (then logged as an error)."""
    others = {i: a for i, a in settings.members.items() if i != settings.node_id}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.discovery_timeout
    async with ClusterMembers(
        others, timeout=settings.op_timeout, security=settings.security
    ) as cluster:
        while True:
            try:
                await cluster.add(settings.node_id, settings.address, wait=False)
            except DRefError as exc:
                if loop.time() >= deadline:
                    logger.error(
                        "raft node %s: could not join through %s: %s (add it with dref raft "
                        "member add)",
                        settings.node_id,
                        ", ".join(others.values()),
                        exc,
                    )
                    return
                await asyncio.sleep(_JOIN_RETRY)
                continue
            logger.info(
                "raft node %s: added as a learner at %s; it becomes a voter once caught up",
                settings.node_id,
                settings.address,
            )
            return
