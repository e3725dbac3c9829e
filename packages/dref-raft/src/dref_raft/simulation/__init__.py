"""Deterministic simulation of `dref_raft.core`: seeded faults, invariants, histories.

`python -m dref_raft.simulation --seeds 0:1000` runs many seeds; `--seed K --trace` replays
one exactly.
"""

from __future__ import annotations

from dref_raft.simulation.runner import SimConfig, SimResult, run_seed

__all__ = ["SimConfig", "SimResult", "run_seed"]
