"""Deterministic simulation of the Raft core: a few hundred seeds, invariants and histories.

Run more with `python -m dref_raft.simulation --seeds 0:10000 --jobs 8`; replay a failing seed
with `--seed K --trace`.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import pytest

from dref_raft.simulation import SimConfig, run_seed
from dref_raft.simulation.runner import SimResult

THREE = SimConfig(nodes=3, steps=2000)
FIVE = SimConfig(nodes=5, steps=2000)


def _run(args: tuple[int, SimConfig]) -> SimResult:
    result = run_seed(*args)
    result.history = []
    return result


def _failures(seeds: range, config: SimConfig) -> list[str]:
    jobs = min(2, os.cpu_count() or 1)
    with ProcessPoolExecutor(jobs) as pool:
        results = list(pool.map(_run, [(s, config) for s in seeds], chunksize=10))
    return [f"seed {r.seed}: {r.failure}" for r in results if not r.ok]


@pytest.mark.timeout(300)
def test_three_node_seeds() -> None:
    assert _failures(range(200), THREE) == []


@pytest.mark.timeout(300)
def test_five_node_seeds() -> None:
    assert _failures(range(1000, 1040), FIVE) == []


def test_a_seed_replays_exactly() -> None:
    first = run_seed(7, THREE, trace=True)
    second = run_seed(7, THREE, trace=True)
    assert first.trace == second.trace
    assert first.history == second.history
    assert len(first.trace) > 1000


def test_histories_are_checked_for_linearizability() -> None:
    result = run_seed(3, THREE)
    assert result.ok, result.failure
    assert result.history
    assert result.linearizability.startswith(("ok", "checker not available"))
    assert result.stats["writes_ok"] > 0
    assert result.stats["reads_ok"] > 0
