"""Exactly-once updates while the leader is SIGKILLed and members are paused (SIGSTOP/SIGCONT):
a 3-process cluster with storage, many tasks of a client-mode context calling
`update_and_get(lambda n: n + 1)` (docs/raft-wire.md#sessions).

A longer run of the same nemesis: `python benchmarks/raft_chaos.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster_procs import ProcCluster
from exactly_once_chaos import ChaosReport, run_chaos

pytestmark = pytest.mark.timeout(120)


async def test_updates_are_exactly_once_through_leader_kills_and_pauses(tmp_path: Path) -> None:
    with ProcCluster(3, storage=tmp_path).running() as cluster:
        report: ChaosReport = await run_chaos(cluster, seconds=12.0, tasks=8, period=2.0)
    print(report)
    assert report.kills >= 2, report
    assert report.pauses >= 1, report
    assert len(set(report.returned)) == len(report.returned), "a value was returned twice"
    assert len(report.returned) <= report.final <= len(report.returned) + report.raised, report
    assert len(report.returned) >= 0.999 * (len(report.returned) + report.raised), report
