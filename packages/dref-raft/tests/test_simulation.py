"""Deterministic simulation of the Raft core: a few hundred seeds, invariants and histories.

Run more with `python -m dref_raft.simulation --seeds 0:10000 --jobs 8`; replay a failing seed
with `--seed K --trace`.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import pytest

from dref_compat.fencing import Hold, check_mutual_exclusion, check_within_grants
from dref_raft.simulation import SimConfig, run_seed
from dref_raft.simulation.runner import SimResult

THREE = SimConfig(nodes=3, steps=2000)
FIVE = SimConfig(nodes=5, steps=2000)


def _run(args: tuple[int, SimConfig]) -> SimResult:
    result = run_seed(*args)
    result.history, result.holds, result.grants = [], [], []
    return result


def _results(seeds: range, config: SimConfig) -> list[SimResult]:
    jobs = min(2, os.cpu_count() or 1)
    with ProcessPoolExecutor(jobs) as pool:
        return list(pool.map(_run, [(s, config) for s in seeds], chunksize=10))


def _failures(results: list[SimResult]) -> list[str]:
    return [f"seed {r.seed}: {r.failure}" for r in results if not r.ok]


@pytest.mark.timeout(300)
def test_three_node_seeds() -> None:
    results = _results(range(200), THREE)
    assert _failures(results) == []
    # The lock histories are not trivial: contention, expiries that hand a lock on, renewals,
    # paused holders overlapping their successors (only their lower fence protects the
    # resource) and unknown outcomes all happen across these seeds.
    totals: Counter[str] = Counter()
    for result in results:
        totals.update(result.stats)
    assert totals["locks_acquired"] > 1000, totals
    assert totals["locks_busy"] > 300, totals
    assert totals["lock_expiries"] > 200, totals
    assert totals["lock_renewals"] > 300, totals
    assert totals["locks_lost"] > 100, totals
    assert totals["lock_fenced_overlaps"] > 10, totals
    assert totals["lock_lock_unknown"] > 10, totals
    assert totals["lock_grants"] >= totals["locks_acquired"]


@pytest.mark.timeout(300)
def test_five_node_seeds() -> None:
    assert _failures(_results(range(1000, 1040), FIVE)) == []


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
    failures = [f for s in range(3) if (f := run_seed(s, broken).failure) is not None]
    assert failures
    assert all("locks (" in f for f in failures), failures
    assert any("acted outside its grant" in f and "fence " in f for f in failures), failures
