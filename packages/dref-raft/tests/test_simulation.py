"""Deterministic simulation of the Raft core: a few hundred seeds, invariants and histories.

Run more with `python -m dref_raft.simulation --seeds 0:10000 --jobs 2`; replay a failing seed
with `--seed K --trace`. The mutation check (`tox -e mutation`, docs/simulation.md) shows that
these seeds alone catch deliberate safety bugs of the core.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import multiprocessing
import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

from dref_compat.fencing import Hold, check_mutual_exclusion, check_within_grants
from dref_raft.commands import FairSwap
from dref_raft.errors import MissingSimulationDependency
from dref_raft.fsm import ApplyResult, StateMachine
from dref_raft.simulation import SimConfig, run_seed
from dref_raft.simulation.runner import NEMESES, SimResult

MUTATION_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mutation_check.py"

THREE = SimConfig(nodes=3, steps=2000)
FIVE = SimConfig(nodes=5, steps=2000)


def _run(args: tuple[int, SimConfig]) -> SimResult:
    result = run_seed(*args)
    result.history, result.holds, result.grants = [], [], []
    return result


def _results(seeds: range, config: SimConfig) -> list[SimResult]:
    jobs = min(2, os.cpu_count() or 1)
    # Spawned, not forked: a fork of this process (gRPC threads of earlier tests) can hang.
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_run, [(s, config) for s in seeds], chunksize=10))


def _failures(results: list[SimResult]) -> list[str]:
    return [f"seed {r.seed}: {r.failure}" for r in results if not r.ok]


def _totals(seeds: range, config: SimConfig) -> Counter[str]:
    """Run `seeds`, require every check to pass, and sum their stats."""
    results = _results(seeds, config)
    assert _failures(results) == []
    totals: Counter[str] = Counter()
    for result in results:
        totals.update(result.stats)
    return totals


@pytest.mark.timeout(300)
def test_three_node_seeds() -> None:
    # The lock histories are not trivial: contention, expiries that hand a lock on, renewals,
    # paused holders overlapping their successors (only their lower fence protects the
    # resource) and unknown outcomes all happen across these seeds.
    totals = _totals(range(200), THREE)
    assert totals["locks_acquired"] > 1000, totals
    assert totals["locks_busy"] > 300, totals
    assert totals["lock_expiries"] > 200, totals
    assert totals["lock_renewals"] > 300, totals
    assert totals["locks_lost"] > 100, totals
    assert totals["lock_fenced_overlaps"] > 10, totals
    assert totals["lock_lock_unknown"] > 10, totals
    assert totals["lock_grants"] >= totals["locks_acquired"]
    # Each nemesis is in about half of the seeds and does what it is for: a partitioned old
    # leader still asked for reads and writes while another leads, Figure 8 (an earlier
    # term's entry on a majority when its leader crashes, then a leader with the other log),
    # elections among divergent logs, and stale messages of old terms delivered late.
    for name in NEMESES:
        assert 50 < totals[f"nemesis_{name}"] < 150, totals
    assert 50 < totals["pre_vote"] < 150, totals
    assert 50 < totals["check_quorum"] < 150, totals
    assert totals["stale_leader_episodes"] > 80, totals
    assert totals["reads_at_superseded_leader"] > 15, totals
    # (5 over these seeds since the fsync/heartbeat/lease changes of issue 11 moved the schedules)
    assert totals["writes_at_superseded_leader"] > 3, totals
    assert totals["figure8_old_term_majority"] > 20, totals
    assert totals["figure8_completed"] > 15, totals
    assert totals["divergent_elections"] > 150, totals
    assert totals["replays"] > 2000, totals
    assert totals["stale_term_deliveries"] > 1000, totals
    # The membership nemesis grows and shrinks the voter set (one server at a time) and stops
    # removed nodes for good; a second change right after the first is refused.
    assert totals["membership_add"] > 80, totals
    assert totals["membership_promote"] > 10, totals
    assert totals["membership_remove_voter"] > 20, totals
    assert totals["membership_remove_learner"] > 10, totals
    assert totals["decommissioned"] > 40, totals
    assert totals["membership_refused"] > 50, totals
    # Nodes crash between sending a Ready's early messages and persisting it.
    assert totals["crashes_in_persist"] > 100, totals


@pytest.mark.timeout(300)
def test_compactions_that_keep_a_tail_of_the_log_stay_safe() -> None:
    # Each compaction keeps the last 5 entries its snapshot covers: lagging nodes catch up
    # from that tail when they can (about half of the snapshots sent without it) and from a
    # snapshot otherwise; every check still passes.
    config = dataclasses.replace(THREE, catch_up_entries=5)
    assert _failures(_results(range(2000, 2100), config)) == []


@pytest.mark.timeout(300)
def test_five_node_seeds() -> None:
    assert _failures(_results(range(1000, 1040), FIVE)) == []


@pytest.mark.timeout(300)
def test_lock_clients_in_the_state_machines_line() -> None:
    """Locks acquired with `FairSwap` and released with `LeaveLine` (`lock_queue`): exclusion,
    fences and recovered state (the lines included) hold under the same faults."""
    totals = _totals(range(16), replace(THREE, fair_locks=True))
    assert totals["locks_acquired"] > 80, totals
    assert totals["locks_queued_behind"] > 5, totals  # waiters were lined up behind others
    assert totals["lock_expiries"] > 10, totals


@pytest.mark.timeout(300)
def test_fair_swaps_stay_linearizable() -> None:
    """Register clients updating with `FairSwap` in their own place in line (as `modify` with
    `fair_updates`) under every nemesis: the history stays linearizable, swaps were refused
    behind waiters and made it later (docs/simulation.md)."""
    totals = _totals(range(400, 430), replace(THREE, fair_swaps=True))
    assert totals["fair_swaps_ok"] > 300, totals
    assert totals["fair_swaps_queued_behind"] > 400, totals


def test_a_fair_swap_that_ignores_its_expected_value_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    swap = StateMachine._fair_swap

    def ignores_expected(machine: StateMachine, command: FairSwap) -> ApplyResult:
        found = machine.get(command.name, command.now)
        return swap(machine, replace(command, expected=found))

    monkeypatch.setattr(StateMachine, "_fair_swap", ignores_expected)
    config = replace(THREE, fair_swaps=True)
    failures = [f for s in range(400, 404) if (f := run_seed(s, config).failure) is not None]
    assert len(failures) == 4, failures
    assert all("not linearizable" in f for f in failures), failures


def test_a_seed_replays_exactly() -> None:
    first = run_seed(7, THREE, trace=True)
    second = run_seed(7, THREE, trace=True)
    assert first.trace == second.trace
    assert first.history == second.history
    assert first.holds == second.holds
    assert first.grants == second.grants
    assert len(first.trace) > 1000


def test_histories_are_checked_for_linearizability() -> None:
    result = run_seed(3, THREE)
    assert result.ok, result.failure
    assert result.history
    assert result.linearizability.startswith(("ok", "checker not available"))
    assert result.stats["writes_ok"] > 0
    assert result.stats["reads_ok"] > 0


def test_lock_histories_are_checked() -> None:
    result = run_seed(3, THREE)
    assert result.ok, result.failure
    assert result.holds
    assert len(result.grants) >= len(result.holds)
    assert "respect fence order and exclusion" in result.locks
    by_fence = {g.fence: g for g in result.grants}
    for hold in result.holds:  # every fence a client learned is the seq of its own grant
        assert by_fence[hold.fence].client == hold.client
    # The checks are not vacuous on this very history: an injected overlap, a swapped fence and
    # a hold kept past its grant are each caught, naming the holds and fences involved.
    clean = [h for h in result.holds if not h.lost and h.released is not None]
    a, b = _two_of_a_name(clean)
    assert b.released is not None
    overlapping = [*result.holds, replace(a, client="intruder", fence=None, released=b.released)]
    verdict = check_mutual_exclusion(overlapping)
    assert verdict.ok is False
    assert "overlap" in verdict.explanation
    assert "'intruder'" in verdict.explanation
    swapped = [
        replace(h, fence=b.fence) if h == a else replace(h, fence=a.fence) if h == b else h
        for h in result.holds
    ]
    verdict = check_within_grants(swapped, result.grants)
    assert verdict.ok is False
    assert f"fence {b.fence}" in verdict.explanation
    assert "another owner's grant" in verdict.explanation
    grant = by_fence[a.fence]
    assert grant.released is not None
    late = [replace(h, released=grant.released + 1) if h == a else h for h in result.holds]
    verdict = check_within_grants(late, result.grants)
    assert verdict.ok is False
    assert "acted outside its grant" in verdict.explanation


def _two_of_a_name(holds: list[Hold]) -> tuple[Hold, Hold]:
    for first in holds:
        same = [h for h in holds if h.name == first.name and h.fence != first.fence]
        if same:
            return first, same[0]
    raise AssertionError("no lock was held twice")


def test_a_client_trusting_its_lease_too_long_is_caught() -> None:
    # A broken client that acts 100 steps past the expiry it asked for: the reaper hands its
    # lock on in time, and the end-of-run check reports the hold and its grant.
    broken = replace(THREE, lease_slack=100)
    failures = [f for s in range(8) if (f := run_seed(s, broken).failure) is not None]
    assert failures
    assert all("locks (" in f for f in failures), failures
    assert any("acted outside its grant" in f and "fence " in f for f in failures), failures


@pytest.mark.timeout(300)
def test_follower_reads_stay_linearizable() -> None:
    """Half the reads served by a random node once it applied its leader's read index
    (docs/raft.md#read-modes), under every nemesis; many had to wait for it."""
    totals = _totals(range(300, 340), replace(THREE, follower_reads=0.5))
    assert totals["follower_reads_ok"] > 800, totals
    assert totals["follower_reads_waited"] > 200, totals


def test_a_follower_that_does_not_wait_for_the_read_index_is_caught() -> None:
    broken = replace(THREE, follower_reads=0.5, follower_read_wait=False)
    failures = [f for s in range(300, 306) if (f := run_seed(s, broken).failure) is not None]
    assert len(failures) >= 2, failures
    assert all("not linearizable" in f for f in failures), failures


def test_a_seed_runs_the_nemeses_it_is_given() -> None:
    result = run_seed(5, replace(THREE, nemeses=("figure8",)))
    assert result.ok, result.failure
    assert result.stats["nemesis_figure8"] == 1
    assert "nemesis_stale_leader" not in result.stats
    assert result.stats["figure8_episodes"] > 0
    with pytest.raises(ValueError, match="unknown nemeses"):
        run_seed(5, replace(THREE, nemeses=("chaos",)))


def test_missing_checkers_fail_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dref_compat.linearizability", None)
    with pytest.raises(MissingSimulationDependency, match=r"dref-raft\[simulation\]"):
        run_seed(0, THREE)
    assert issubclass(MissingSimulationDependency, ImportError)


def _mutation_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_check", MUTATION_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_mutant_applies_to_the_core_exactly_once(tmp_path: Path) -> None:
    # A refactor of the core must update the mutants, not turn them into silent no-ops.
    mutation = _mutation_module()
    assert len(mutation.MUTANTS) >= 10
    for i, mutant in enumerate(mutation.MUTANTS):
        root = mutation.mutate(tmp_path / str(i), mutant)
        text = (root / "dref_raft" / mutant.file).read_text()
        assert mutant.new in text, mutant.name
    gone = mutation.Mutant("gone", "nothing", "core/raft.py", "no such text", "x")
    with pytest.raises(SystemExit, match="occurs 0 times"):
        mutation.mutate(tmp_path / "gone", gone)


@pytest.mark.timeout(120)
def test_the_mutation_check_catches_a_mutant() -> None:
    # The whole list runs in the `mutation` tox env; here one quick mutant end to end.
    args = ["--only", "leader-keeps-role-on-higher-term", "--seeds", "20", "--baseline-seeds", "2"]
    proc = subprocess.run(
        [sys.executable, str(MUTATION_SCRIPT), *args, "--jobs", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CAUGHT   leader-keeps-role-on-higher-term: seed " in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1].startswith("1 of 1 mutants caught")
