"""Elections of the Raft core: PreVote, votes by (last_term, last_seq), leases, check-quorum."""

from __future__ import annotations

import random

import pytest

from dref_raft.commands import SetElement, StartNewTerm
from dref_raft.core import (
    CoreConfig,
    CoreState,
    Entry,
    PreVote,
    PreVoteResponse,
    RaftCore,
    Role,
    Vote,
    VoteResponse,
)
from dref_raft.simulation.harness import Harness

IDS = ["a", "b", "c"]


def _set(n: int) -> SetElement:
    return SetElement("k", str(n).encode())


def _log(*terms: int) -> list[Entry]:
    return [Entry(i + 1, t, _set(i + 1)) for i, t in enumerate(terms)]


def test_defaults_follow_scala_timings() -> None:
    config = CoreConfig()
    assert (config.heartbeat_interval_ms, config.election_timeout_ms) == (80, 400)
    assert (config.heartbeat_ticks, config.election_ticks) == (2, 10)
    assert config.max_election_ticks == 15


def test_single_node_elects_itself_and_commits_start_new_term() -> None:
    h = Harness(["a"])
    h.elect("a")
    core = h.cores["a"]
    assert (core.role, core.term, core.commit) == (Role.LEADER, 1, 1)
    assert h.applied["a"] == [Entry(1, 1, StartNewTerm())]


def test_pre_vote_keeps_the_term_then_real_vote_increments_it() -> None:
    h = Harness(IDS)
    a = h.cores["a"]
    while a.role is Role.FOLLOWER:
        h.tick("a")
    assert (a.role, a.term) == (Role.PRE_CANDIDATE, 0)
    pre_votes = h.take()
    assert {type(m) for m in pre_votes} == {PreVote}
    assert all(m.term == 1 and m.ext and m.last_term == 0 for m in pre_votes)
    for m in pre_votes:
        h.deliver(m)
    for m in h.take():
        h.deliver(m)  # PreVoteResponses
    assert (a.role, a.term, a.vote) == (Role.CANDIDATE, 1, "a")
    h.stabilize()
    assert a.role is Role.LEADER
    assert a.log.entry(1) == Entry(1, 1, StartNewTerm())
    assert all(h.cores[n].log.entry(1) == Entry(1, 1, StartNewTerm()) for n in IDS)


def test_randomized_timeout_comes_from_the_seeded_rng() -> None:
    def timeout(seed: int) -> int:
        core = RaftCore("a", IDS, rng=random.Random(seed))
        ticks = 0
        while core.role is Role.FOLLOWER:
            core.tick()
            ticks += 1
        return ticks

    runs = [timeout(s) for s in range(20)]
    assert runs == [timeout(s) for s in range(20)]
    assert all(10 <= t <= 15 for t in runs)
    assert len(set(runs)) > 1


@pytest.mark.parametrize(
    ("voter_log", "last_seq", "last_term", "granted"),
    [
        ((1, 1), 2, 1, True),  # same log
        ((1, 1), 3, 1, True),  # longer
        ((1, 2), 3, 1, False),  # longer but an older last term: refused (upstream would grant)
        ((1, 1), 1, 2, True),  # shorter but newer last term
        ((1, 1), 1, 1, False),  # shorter
    ],
)
def test_vote_compares_last_term_then_last_seq_for_dref_candidates(
    voter_log: tuple[int, ...], last_seq: int, last_term: int, granted: bool
) -> None:
    voter = RaftCore(
        "b", IDS, rng=random.Random(0), state=CoreState(term=2, entries=_log(*voter_log))
    )
    voter.step(Vote("a", "b", 3, last_seq, ext=True, last_term=last_term))
    (reply,) = voter.ready().messages
    assert reply == VoteResponse("b", "a", 3, granted, ext=True)


def test_vote_from_an_upstream_candidate_compares_last_seq_only() -> None:
    voter = RaftCore("b", IDS, rng=random.Random(0), state=CoreState(term=2, entries=_log(1, 2)))
    voter.step(Vote("a", "b", 3, 3, ext=False, last_term=0))
    (reply,) = voter.ready().messages
    assert isinstance(reply, VoteResponse)
    assert reply.granted


def test_one_vote_per_term_and_idempotent_re_vote() -> None:
    voter = RaftCore("c", IDS, rng=random.Random(0))
    voter.step(Vote("a", "c", 1, 0, ext=True))
    voter.step(Vote("b", "c", 1, 0, ext=True))
    voter.step(Vote("a", "c", 1, 0, ext=True))
    replies = voter.ready().messages
    assert [(m.to, m.granted) for m in replies if isinstance(m, VoteResponse)] == [
        ("a", True),
        ("b", False),
        ("a", True),
    ]


def test_pre_vote_refused_while_a_leader_was_heard_within_the_election_timeout() -> None:
    h = Harness(IDS)
    h.elect("a")
    b = h.cores["b"]
    b.step(PreVote("c", "b", b.term + 1, b.log.last_seq + 5, ext=True, last_term=b.term))
    h.drain("b")
    (reply,) = h.take()
    assert reply == PreVoteResponse("b", "c", b.term, False, ext=True)
    h.tick("b", 9)  # still within 10 ticks of the leader's last message
    h.take()
    b.step(Vote("c", "b", b.term + 1, b.log.last_seq + 5, ext=True, last_term=b.term))
    h.drain("b")
    (vote_reply,) = h.take()
    assert isinstance(vote_reply, VoteResponse)
    assert not vote_reply.granted
    assert b.term == 1
    assert b.leader_id == "a"


def test_partitioned_node_does_not_disrupt_the_leader_when_it_returns() -> None:
    h = Harness(IDS)
    h.elect("a")
    h.down.add("c")
    h.tick("c", 100)  # PreVote keeps failing: its term stays
    assert h.cores["c"].term == 1
    h.down.discard("c")
    h.inflight.clear()
    h.tick("a", 2)
    h.stabilize()
    assert h.cores["a"].role is Role.LEADER
    assert h.cores["a"].term == 1


def test_check_quorum_leader_steps_down_without_a_majority() -> None:
    h = Harness(IDS)
    h.elect("a")
    h.down.update({"b", "c"})
    a = h.cores["a"]
    h.tick("a", 2 * a.config.election_ticks)
    assert a.role is Role.FOLLOWER
    assert a.leader_id is None
    assert a.term == 1


def test_leader_keeps_leading_with_a_majority() -> None:
    h = Harness(IDS)
    h.elect("a")
    h.down.add("c")
    for _ in range(50):
        h.tick("a")
        h.stabilize()
    assert h.cores["a"].role is Role.LEADER


def test_higher_term_response_makes_the_leader_step_down() -> None:
    h = Harness(IDS)
    h.elect("a")
    a = h.cores["a"]
    a.step(VoteResponse("b", "a", 7, False, ext=True))
    assert (a.role, a.term, a.vote) == (Role.FOLLOWER, 7, None)
