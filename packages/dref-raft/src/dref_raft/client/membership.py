"""`ClusterMembers`: add, remove and list the members of a running cluster, from anywhere
(docs/raft.md#membership).

Every request goes to the leader over the dref-only `DRefMembership` service, retried per
upstream's policy (`with_leader`: not-leader hints followed, bounded by one deadline). On a
member context (`members(ctx)`) a request is answered in process while the local member leads.
The members learnt from answers are remembered, so a leader added later is found too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from dref.context import DRefContext
from dref.errors import BackendTimeoutError, ConfigurationError, NoLeaderError
from dref.resources import AsyncResource
from dref_raft.client.backend import RaftClientBackend
from dref_raft.commands import MembersView
from dref_raft.member.backend import RaftBackend
from dref_raft.member.membership import NodeMembership
from dref_raft.settings import parse_endpoint
from dref_raft.transport.grpc_membership import MembershipClient, MembershipHandler
from dref_raft.transport.retry import with_leader

__all__ = ["DEFAULT_PROMOTION_TIMEOUT", "ClusterMembers", "members"]

T = TypeVar("T")

#: How long `add` waits for the new member's promotion to voter by default (seconds).
DEFAULT_PROMOTION_TIMEOUT = 60.0
#: Pause between two looks at a learner that is not promoted yet.
_PROMOTION_POLL = 0.1


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
    ) -> None:
        if not endpoints and local is None:
            raise ConfigurationError("membership operations need the members' endpoints")
        self.timeout = timeout
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
            client = self._clients[address] = MembershipClient(address, timeout=timeout)
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


def members(ctx: DRefContext) -> ClusterMembers:
    """Membership operations through a `raft` context (member or client mode):
    `async with dref_raft.members(ctx) as m: await m.add("n4", "10.0.0.4:8082")`."""
    backend = ctx.backend
    if isinstance(backend, RaftBackend):
        node, settings = backend.node, backend.settings
        addresses = {
            **settings.members,
            **{m.node_id: m.address for m in node.members_view().members if m.address},
        }
        return ClusterMembers(
            addresses,
            timeout=settings.op_timeout,
            local=NodeMembership(node, settings),
            local_id=node.id,
            local_leader=lambda: node.leader_id,
        )
    if isinstance(backend, RaftClientBackend):
        settings = backend.settings
        endpoints = dict(parse_endpoint(text) for text in settings.endpoints)
        return ClusterMembers(endpoints, timeout=settings.op_timeout)
    raise ConfigurationError(
        f"membership operations need a raft context, not {type(backend).__name__}"
    )
