"""`members(ctx)`: membership operations (`ClusterMembers`) through a `raft` context, member
or client mode (docs/raft.md#membership)."""

from __future__ import annotations

from dref.context import DRefContext
from dref.errors import ConfigurationError
from dref_raft.client.backend import RaftClientBackend
from dref_raft.member.backend import RaftBackend
from dref_raft.member.membership import ClusterMembers, NodeMembership
from dref_raft.settings import parse_endpoint

__all__ = ["ClusterMembers", "members"]


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
            security=settings.security,
        )
    if isinstance(backend, RaftClientBackend):
        settings = backend.settings
        endpoints = dict(parse_endpoint(text) for text in settings.endpoints)
        return ClusterMembers(endpoints, timeout=settings.op_timeout, security=settings.security)
    raise ConfigurationError(
        f"membership operations need a raft context, not {type(backend).__name__}"
    )
