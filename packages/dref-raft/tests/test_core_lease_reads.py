"""Lease reads (`CoreConfig.lease_ticks`): served without a round only while provably valid."""

from __future__ import annotations

import pytest

from dref_raft.core import CoreConfig, PreVote, ReadIndex, Role
from dref_raft.simulation.harness import Harness

IDS = ["a", "b", "c"]
LEASE = CoreConfig(lease_ticks=6)  # election_ticks is 10


def _booted(config: CoreConfig = LEASE) -> Harness:
    """A cluster whose followers-to-be are past their start-up vote hold (ticked one election
    timeout); `a` is elected next."""
    h = Harness(IDS, config=config)
    for node in IDS[1:]:
        for _ in range(config.election_ticks):
            h.cores[node].tick()
            h.drain(node)
    h.take()
    return h


def _rounds(h: Harness) -> list[ReadIndex]:
    return [m for m in h.inflight if isinstance(m, ReadIndex)]


def _read(h: Harness, node: str, request_id: int) -> None:
    assert h.cores[node].read_index(request_id) is None
    h.drain(node)


def _served(h: Harness, node: str) -> list[int]:
    return [r.request_id for r in h.reads[node]]


def test_reads_need_a_round_without_the_setting() -> None:
    h = Harness(IDS)
    h.elect("a")
    _read(h, "a", 1)
    h.stabilize()
    _read(h, "a", 2)
    assert len(_rounds(h)) == 2  # a round for every batch
    assert _served(h, "a") == [1]


def test_a_confirmed_round_lets_the_leader_serve_at_once_until_the_lease_ends() -> None:
    h = _booted()
    h.elect("a")
    _read(h, "a", 1)  # no lease yet: a round
    assert len(_rounds(h)) == 2
    assert _served(h, "a") == []
    h.stabilize()
    assert _served(h, "a") == [1]
    _read(h, "a", 2)  # within the lease: no round, served in the same Ready
    assert _rounds(h) == []
    assert _served(h, "a") == [1, 2]
    for _ in range(LEASE.lease_ticks):
        h.cores["a"].tick()
    h.take()  # heartbeats do not renew the lease
    _read(h, "a", 3)
    assert len(_rounds(h)) == 2  # expired: a round again
    assert _served(h, "a") == [1, 2]
    h.stabilize()
    assert _served(h, "a") == [1, 2, 3]


def test_a_leader_cut_off_from_the_majority_serves_no_lease_read() -> None:
    h = _booted()
    h.elect("a")
    h.down.update({"b", "c"})
    _read(h, "a", 1)
    h.stabilize()
    _read(h, "a", 2)
    h.stabilize()
    assert _served(h, "a") == []  # no round was confirmed: no lease


def test_the_lease_starts_when_the_round_was_sent_not_when_it_was_confirmed() -> None:
    h = _booted()
    h.elect("a")
    _read(h, "a", 1)
    rounds = h.take(lambda m: isinstance(m, ReadIndex))
    for _ in range(LEASE.lease_ticks):  # the answers are late
        h.cores["a"].tick()
    h.take()
    for msg in rounds:
        h.deliver(msg)
    h.stabilize()
    assert _served(h, "a") == [1]
    _read(h, "a", 2)
    assert len(_rounds(h)) == 2  # the confirmed round is already a lease old
    assert _served(h, "a") == [1]


def test_a_new_leader_has_no_lease() -> None:
    h = _booted()
    h.elect("a")
    _read(h, "a", 1)
    h.stabilize()
    assert h.cores["a"].step_down()
    h.drain("a")
    h.elect("b")
    _read(h, "b", 2)
    assert len(_rounds(h)) == 2


def test_a_restarted_node_grants_no_vote_for_an_election_timeout() -> None:
    h = Harness(IDS, config=LEASE)
    core = h.cores["b"]
    pre_vote = PreVote("c", "b", 1, 0, True, 0)
    core.step(pre_vote)
    h.drain("b")
    assert not [m for m in h.take() if getattr(m, "granted", False)]
    for _ in range(LEASE.election_ticks):
        core.tick()
    h.take()
    if core.role is Role.FOLLOWER:
        core.step(pre_vote)
        h.drain("b")
        assert [m for m in h.take() if getattr(m, "granted", False)]


def test_the_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="below election_ticks"):
        CoreConfig(lease_ticks=10)
    with pytest.raises(ValueError, match="check_quorum and pre_vote"):
        CoreConfig(lease_ticks=5, check_quorum=False)


def test_read_mode_lease_turns_into_a_lease_shorter_than_the_election_timeout() -> None:
    from dref_raft.member.node import NodeConfig
    from dref_raft.settings import RaftSettings

    assert NodeConfig("n1", {}).core_config().lease_ticks == 0  # off by default
    config = NodeConfig("n1", {}, read_mode="lease", max_clock_drift=0.1).core_config()
    assert config.lease_ticks == 6  # (400 ms - 100 ms) / 40 ms ticks, less one
    assert config.lease_ticks < config.election_ticks
    with pytest.raises(ValueError, match="max_clock_drift"):
        RaftSettings(
            node_id="n1",
            port=8082,
            endpoints=["n1=127.0.0.1:8082"],
            read_mode="lease",
            max_clock_drift=0.3,
        )
    settings = RaftSettings(
        node_id="n1", port=8082, endpoints=["n1=127.0.0.1:8082"], read_mode="lease"
    )
    assert settings.read_mode == "lease"
