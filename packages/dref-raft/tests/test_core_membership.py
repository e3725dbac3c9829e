"""Configuration changes in the core: one server at a time through the log (Raft thesis §4.1),
learners, automatic promotion, a removed leader, persistence across restarts."""

from __future__ import annotations

import random

import pytest

from dref_raft.commands import ConfigChange, Membership, SetElement
from dref_raft.core import (
    AppendEntries,
    ConfigRefused,
    CoreConfig,
    Heartbeat,
    HeartbeatResponse,
    NotLeader,
    PreVote,
    Proposed,
    RaftCore,
    Role,
    Vote,
    VoteResponse,
)
from dref_raft.simulation.harness import Harness
from dref_raft.simulation.invariants import Invariants
from dref_raft.simulation.node import SimNode

VOTERS = ("a", "b", "c")
NO_PROMOTION = CoreConfig(learner_promotion_lag=-1)


def _with_learner(h: Harness, learner: str = "d") -> Membership:
    return Membership(VOTERS, (learner,))


def test_a_change_is_in_force_on_append_before_it_commits() -> None:
    h = Harness([*VOTERS, "d"], joining=["d"], config=NO_PROMOTION)
    h.elect("a")
    a, b = h.cores["a"], h.cores["b"]
    proposed = a.propose_membership(_with_learner(h))
    assert isinstance(proposed, Proposed)
    # the leader uses it at once: it replicates to the learner before anything committed
    assert a.learners == ("d",)
    assert a.config_seq == proposed.first_seq > a.commit
    h.drain("a")
    to_b = h.take(lambda m: m.to == "b" and isinstance(m, AppendEntries))
    assert any(isinstance(m, AppendEntries) and m.to == "d" for m in h.inflight)
    h.take()  # nothing else is delivered: b appends the entry, nobody commits it
    for msg in to_b:
        h.deliver(msg)
    assert b.learners == ("d",)
    assert b.config_seq == proposed.first_seq
    assert b.commit < proposed.first_seq


def test_a_second_change_waits_until_the_first_is_committed() -> None:
    h = Harness([*VOTERS, "d", "e"], joining=["d", "e"], config=NO_PROMOTION)
    h.elect("a")
    a = h.cores["a"]
    first = a.propose_membership(_with_learner(h))
    assert isinstance(first, Proposed)
    refused = a.propose_membership(Membership(VOTERS, ("d", "e")))
    assert isinstance(refused, ConfigRefused)
    assert "in progress" in refused.reason
    h.stabilize()
    assert a.commit >= first.first_seq
    second = a.propose_membership(Membership(VOTERS, ("d", "e")))
    assert isinstance(second, Proposed)


@pytest.mark.parametrize(
    ("new", "why"),
    [
        (Membership(("a", "b", "c", "d", "e")), "one voter at a time"),
        (Membership(("a",)), "one voter at a time"),
        (Membership(()), "at least one voter"),
        (Membership(("a", "b", "c"), ("c",)), "voter and learner"),
    ],
)
def test_only_single_server_changes_are_proposed(new: Membership, why: str) -> None:
    h = Harness(VOTERS)
    h.elect("a")
    refused = h.cores["a"].propose_membership(new)
    assert isinstance(refused, ConfigRefused)
    assert why in refused.reason


def test_followers_refuse_and_plain_proposals_cannot_carry_a_change() -> None:
    h = Harness(VOTERS)
    h.elect("a")
    assert h.cores["b"].propose_membership(_with_learner(h)) == NotLeader("a")
    with pytest.raises(ValueError, match="propose_membership"):
        h.cores["a"].propose([ConfigChange(_with_learner(h))])


def test_a_learner_catches_up_but_is_not_counted_for_commit() -> None:
    h = Harness([*VOTERS, "d"], joining=["d"], config=NO_PROMOTION)
    h.elect("a")
    a, d = h.cores["a"], h.cores["d"]
    for i in range(5):
        a.propose([SetElement(f"k{i}", b"v")])
    h.stabilize()
    assert isinstance(a.propose_membership(_with_learner(h)), Proposed)
    h.stabilize()
    assert d.applied == a.commit
    assert h.machines["d"].get("k4", 0) == b"v"
    assert d.membership == _with_learner(h)
    # with both other voters down, leader + learner are no majority: nothing commits
    h.down |= {"b", "c"}
    before = a.commit
    assert isinstance(a.propose([SetElement("x", b"1")]), Proposed)
    h.stabilize()
    assert d.log.last_seq == a.log.last_seq > before
    assert a.commit == before
    # and a learner never campaigns, however long it hears nothing
    h.down |= {"a"}
    h.tick("d", 10 * h.config.max_election_ticks)
    assert d.role is Role.FOLLOWER
    assert d.term == a.term


def test_learner_votes_are_not_counted() -> None:
    h = Harness([*VOTERS, "d"], joining=["d"], config=CoreConfig(pre_vote=False))
    h.elect("a")
    a = h.cores["a"]
    a.propose_membership(Membership(VOTERS, ("d",)))
    h.stabilize()
    b = h.cores["b"]
    h.down |= {"a", "c"}
    h.tick("b", h.config.max_election_ticks + 1)
    assert b.role is Role.CANDIDATE
    votes = h.take(lambda m: isinstance(m, Vote))
    assert {m.to for m in votes} == {"a", "c", "d"}  # learners are asked too
    b.step(VoteResponse("d", "b", b.term, True, True))
    h.drain("b")
    assert b.role is Role.CANDIDATE  # b + learner d is no majority of a, b, c


def test_a_caught_up_learner_is_promoted_to_voter() -> None:
    h = Harness([*VOTERS, "d"], joining=["d"], config=CoreConfig(learner_promotion_lag=0))
    h.elect("a")
    a = h.cores["a"]
    assert isinstance(a.propose_membership(_with_learner(h)), Proposed)
    h.stabilize()
    h.tick("a", h.config.heartbeat_ticks)
    h.stabilize()
    assert a.membership.voters == ("a", "b", "c", "d")
    assert a.membership.learners == ()
    assert a.commit >= a.config_seq
    assert a.quorum == 3
    for node in ("b", "c", "d"):
        assert h.cores[node].membership == a.membership


def test_a_removed_leader_replicates_without_counting_itself_then_steps_down() -> None:
    h = Harness(VOTERS)
    h.elect("a")
    a = h.cores["a"]
    removal = a.propose_membership(Membership(("b", "c")))
    assert isinstance(removal, Proposed)
    assert a.role is Role.LEADER
    assert a.quorum == 2
    # only b answers: a + b would be a majority of a, b, c but is not one of b, c
    h.down.add("c")
    h.stabilize()
    assert h.cores["b"].log.last_seq == removal.first_seq
    assert a.commit < removal.first_seq
    assert a.role is Role.LEADER
    h.down.discard("c")
    for _ in range(h.config.election_ticks):  # c's lost probe is sent again
        h.tick("a")
        h.stabilize()
    assert a.commit >= removal.first_seq
    assert a.role is Role.FOLLOWER  # stepped down once its removal committed
    # it never campaigns again; b or c takes over
    for _ in range(3 * h.config.max_election_ticks):
        for node in VOTERS:
            h.tick(node)
        h.stabilize()
        if any(h.cores[n].role is Role.LEADER for n in ("b", "c")):
            break
    assert a.role is Role.FOLLOWER
    leader = next(n for n in ("b", "c") if h.cores[n].role is Role.LEADER)
    assert h.cores[leader].peers == tuple(sorted({"b", "c"} - {leader}))


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_removed_member_cannot_disrupt_the_cluster(pre_vote: bool) -> None:
    h = Harness(VOTERS, config=CoreConfig(pre_vote=pre_vote))
    h.elect("a")
    a = h.cores["a"]
    assert isinstance(a.propose_membership(Membership(("a", "b"))), Proposed)
    h.stabilize()
    term = a.term
    # c never hears of its removal (nothing is sent to it any more): it times out and
    # campaigns, and the members refuse a non-member's requests without changing term
    h.tick("c", 3 * h.config.max_election_ticks)
    assert any(isinstance(m, (Vote, PreVote)) for m in h.inflight)
    h.stabilize()
    assert a.role is Role.LEADER
    assert a.term == term == h.cores["b"].term
    assert h.cores["b"].leader_id == "a"


def test_the_configuration_survives_restarts_through_log_and_snapshot() -> None:
    invariants = Invariants()
    nodes: dict[str, SimNode] = {}
    outbox: list = []

    def noop(*args: object) -> None:
        return None

    for node_id in VOTERS:
        nodes[node_id] = SimNode(
            node_id,
            list(VOTERS),
            CoreConfig(learner_promotion_lag=-1),
            1,
            invariants,
            snapshot_every=0,
            on_apply=noop,
            on_read=noop,
        )

    def run(rounds: int) -> None:
        for _ in range(rounds):
            for node in nodes.values():
                if node.core is not None:
                    node.core.tick()
                    node.drain(outbox)
            while outbox:
                msg = outbox.pop(0)
                target = nodes.get(msg.to)
                if target is not None and target.core is not None:
                    target.core.step(msg)
                    target.drain(outbox)

    run(40)
    leader = next(n for n in nodes.values() if n.core and n.core.role is Role.LEADER)
    assert leader.core is not None
    new = Membership(VOTERS, ("d",), (("d", "127.0.0.1:9"),))
    assert isinstance(leader.core.propose_membership(new), Proposed)
    leader.drain(outbox)
    run(5)
    follower = next(n for n in nodes.values() if n is not leader)
    assert follower.core is not None
    assert follower.core.commit >= follower.core.config_seq > 0
    # from the log
    follower.crash()
    follower.start()
    assert follower.core is not None
    assert follower.core.membership == new
    assert follower.machine.membership == new
    # from a snapshot (the entry compacted away)
    core = follower.core
    core.compact(core.applied, follower.machine.snapshot(core.applied))
    follower.stores.snapshot.save(follower.machine.snapshot(core.applied))
    follower.stores.command_log.truncate_through(core.applied)
    follower.crash()
    follower.start()
    assert follower.core is not None
    assert follower.core.membership == new
    assert follower.core.log.entries == []
    assert follower.core.learners == ("d",)


def test_a_joining_node_knows_no_configuration_and_never_campaigns() -> None:
    core = RaftCore("d", [], rng=random.Random(0), joining=True)
    assert core.membership == Membership(())
    assert core.voters == frozenset()
    for _ in range(100):
        core.tick()
    assert core.role is Role.FOLLOWER
    assert not core.has_ready()


def test_a_learner_that_never_answered_is_not_promoted() -> None:
    h = Harness([*VOTERS, "d"], joining=["d"], config=CoreConfig(learner_promotion_lag=64))
    h.elect("a")
    a = h.cores["a"]
    h.down.add("d")  # added while not running: its match stays 0, within 64 of a short log
    assert isinstance(a.propose_membership(_with_learner(h)), Proposed)
    for _ in range(3):
        h.tick("a", h.config.heartbeat_ticks)
        h.stabilize()
    assert a.membership.learners == ("d",)
    h.down.discard("d")
    for _ in range(h.config.election_ticks):
        h.tick("a")
        h.stabilize()
    assert a.membership.voters == ("a", "b", "c", "d")


# -- leadership transfer (TimeoutNow) ----------------------------------------------------------


def _dref_peers(h: Harness) -> None:
    """Peers learn each other's kind from messages; let the leader hear from everyone."""
    for node in h.ids:
        h.tick(node)
    h.stabilize()


def test_transfer_hands_leadership_to_the_target_at_once() -> None:
    h = Harness(VOTERS)
    h.elect("a")
    _dref_peers(h)
    a, c = h.cores["a"], h.cores["c"]
    term = a.term
    assert a.transfer_leadership("c") == "c"
    # no proposals while handing over: the hint names the target
    assert a.propose([SetElement("k", b"v")]) == NotLeader("c")
    h.drain("a")
    timeout_now = [m for m in h.inflight if isinstance(m, Heartbeat) and m.timeout_now]
    assert [m.to for m in timeout_now] == ["c"]
    h.stabilize()
    # c campaigned without waiting for its election timeout, and the lease did not stop it
    assert c.role is Role.LEADER
    assert c.term == term + 1
    assert a.role is Role.FOLLOWER
    assert a.leader_id == "c"


def test_transfer_catches_a_lagging_target_up_first() -> None:
    h = Harness(VOTERS)
    h.elect("a")
    _dref_peers(h)
    a, c = h.cores["a"], h.cores["c"]
    h.down.add("c")
    for i in range(5):
        a.propose([SetElement(f"k{i}", b"v")])
    h.stabilize()
    assert c.log.last_seq < a.log.last_seq
    h.down.discard("c")
    last = a.log.last_seq
    assert a.transfer_leadership("c") == "c"
    h.drain("a")
    assert not any(isinstance(m, Heartbeat) and m.timeout_now for m in h.inflight)
    for _ in range(h.config.election_ticks):
        h.tick("a")
        h.stabilize()
        if c.role is Role.LEADER:
            break
    assert c.role is Role.LEADER
    assert c.log.entry(last) == a.log.entry(last)  # it had the whole log when it took over


def test_transfer_gives_up_after_an_election_timeout_and_the_leader_resumes() -> None:
    h = Harness(VOTERS)
    h.elect("a")
    _dref_peers(h)
    a = h.cores["a"]
    h.down.add("c")  # TimeoutNow is lost
    assert a.transfer_leadership("c") == "c"
    h.stabilize()
    assert a.propose([SetElement("k", b"v")]) == NotLeader("c")
    for _ in range(h.config.election_ticks):
        h.tick("a")
        h.stabilize()
    assert a.transfer_target is None
    assert a.role is Role.LEADER
    assert isinstance(a.propose([SetElement("k", b"v")]), Proposed)


def test_transfer_is_refused_to_non_voters_and_nodes_not_known_to_run_dref() -> None:
    h = Harness([*VOTERS, "d"], joining=["d"], config=NO_PROMOTION)
    h.elect("a")
    a = h.cores["a"]
    _dref_peers(h)
    # an upstream peer (its messages carry no dref extension) never gets TimeoutNow
    a.step(HeartbeatResponse("b", "a", a.term, True))
    refused = a.transfer_leadership("b")
    assert isinstance(refused, ConfigRefused)
    assert "dref extensions" in refused.reason
    _dref_peers(h)
    a.propose_membership(_with_learner(h))
    h.stabilize()
    refused = a.transfer_leadership("d")
    assert isinstance(refused, ConfigRefused)
    assert "not another voter" in refused.reason
    assert isinstance(a.transfer_leadership("a"), ConfigRefused)
    assert h.cores["b"].transfer_leadership("c") == NotLeader("a")
    # without a target: the most up-to-date voter
    assert a.transfer_leadership() in ("b", "c")
