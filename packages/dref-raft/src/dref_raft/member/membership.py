"""What a member answers on `DRefMembership`: configuration changes proposed by its node when
it leads (docs/raft.md#membership)."""

from __future__ import annotations

from dref_raft.commands import Membership, MembersView
from dref_raft.errors import MembershipError
from dref_raft.member.node import RaftNode, not_leader_error
from dref_raft.settings import RaftSettings

__all__ = ["NodeMembership"]


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
