"""`RaftNode.step_down` on a 3-member in-memory cluster: another member takes over."""

from __future__ import annotations

import pytest
from cluster_procs import wait_until
from test_cluster_memory import memory_cluster  # noqa: F401  (fixture)

from dref.errors import NoLeaderError, NotLeaderError
from dref_raft.commands import SetElement
from dref_raft.member.registry import Member

pytestmark = pytest.mark.timeout(30)


async def test_step_down_elects_another_member_and_keeps_the_data(
    memory_cluster: list[Member],  # noqa: F811
) -> None:
    old = next(m for m in memory_cluster if m.node.is_leader)
    others = [m for m in memory_cluster if m is not old]
    seq, _ = await old.node.propose(SetElement("k", b"v"), 5)
    assert not await others[0].node.step_down()  # a follower: nothing to do
    term = old.node.term
    assert await old.node.step_down()
    assert not old.node.is_leader
    with pytest.raises((NotLeaderError, NoLeaderError)):
        await old.node.propose(SetElement("k", b"w"), 5)
    await wait_until(
        lambda: any(m.node.is_leader for m in others) and old.node.leader_id is not None,
        10,
        "a new leader",
    )
    new = next(m for m in others if m.node.is_leader)
    assert old.node.leader_id == new.node.id
    assert new.node.term > term
    await new.node.propose(SetElement("k2", b"x"), 5)
    await wait_until(lambda: old.node.applied >= seq + 2, 10, "the old leader catching up")
    assert old.node.get_local("k") == b"v"
    assert old.node.get_local("k2") == b"x"
