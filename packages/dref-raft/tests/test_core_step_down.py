"""`RaftCore.step_down`: the leader gives up leadership and another member is elected."""

from __future__ import annotations

import pytest

from dref_raft.commands import SetElement
from dref_raft.core import NotLeader, Proposed, Role, Vote
from dref_raft.simulation.harness import Harness

IDS = ["a", "b", "c"]


def _tick_all_until_leader(h: Harness, limit: int) -> str:
    """Tick every node once per round, delivering everything, until a leader is known."""
    for _ in range(limit):
        for node in h.ids:
            h.tick(node)
        h.stabilize()
        leaders = [i for i, c in h.cores.items() if c.role is Role.LEADER]
        if leaders:
            assert len(leaders) == 1
            return leaders[0]
    raise AssertionError("no leader elected")


@pytest.mark.parametrize("seed", range(20))
def test_step_down_hands_leadership_to_another_member(seed: int) -> None:
    h = Harness(IDS, seed=seed)
    h.elect("a")
    a = h.cores["a"]
    proposed = a.propose([SetElement("k", b"v")])
    assert isinstance(proposed, Proposed)
    h.stabilize()
    term = a.term
    assert a.step_down()
    h.drain_all()
    assert (a.role, a.leader_id, a.term) == (Role.FOLLOWER, None, term)
    assert a.propose([SetElement("k", b"w")]) == NotLeader(None)
    assert a.read_index(1) == NotLeader(None)
    assert not a.step_down()
    assert not h.cores["b"].step_down()
    new = _tick_all_until_leader(h, limit=3 * h.config.max_election_ticks)
    assert new != "a"
    assert h.cores[new].term == term + 1
    h.stabilize()
    # the committed write survives and every member follows the new leader
    for node in IDS:
        assert h.machines[node].get("k", 0) == b"v"
        assert h.cores[node].leader_id == new


def test_the_stepped_down_node_holds_back_for_one_election_timeout_then_campaigns() -> None:
    h = Harness(IDS)
    h.elect("a")
    a = h.cores["a"]
    assert a.step_down()
    h.drain_all()
    h.take()
    # alone (the others unreachable), it waits out the hold before its own election timer
    h.down = {"b", "c"}
    for _ in range(h.config.max_election_ticks + h.config.election_ticks - 1):
        a.tick()
        h.drain("a")
        assert a.role is Role.FOLLOWER
    for _ in range(h.config.max_election_ticks + 1):
        a.tick()
        h.drain("a")
    assert a.role is not Role.FOLLOWER  # a (pre-)candidate once the hold is over


def test_a_stepped_down_leader_still_votes() -> None:
    h = Harness(IDS)
    h.elect("a")
    a = h.cores["a"]
    assert a.step_down()
    h.drain_all()
    h.take()
    vote = Vote("b", "a", a.term + 1, a.log.last_seq, True, a.log.last_term)
    a.step(vote)
    h.drain("a")
    replies = h.take(lambda m: m.sender == "a")
    assert [getattr(m, "granted", None) for m in replies] == [True]
