"""Exactly-once updates under a nemesis, longer than the CI test: a 3-process Raft cluster
(storage on disk) whose leader is SIGKILLed (and restarted) and whose members are paused
(SIGSTOP/SIGCONT) in turn every `--period` seconds, while `--tasks` tasks of one client-mode
context call `update_and_get(lambda n: n + 1)` on one element.

    python benchmarks/raft_chaos.py [--seconds 60] [--tasks 16] [--period 3] [--without]

Prints the calls, how many returned and raised, the final value and the checks: every returned
value distinct, returned ≤ final ≤ returned + raised, ≥ 99.9 % of calls returned. `--without`
runs the same with `exactly_once = false` (today's behaviour without sessions) for contrast.
The nemesis is `packages/dref-raft/tests/exactly_once_chaos.py`, shared with the CI test
`test_exactly_once_procs.py`. Not a test; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packages" / "dref-raft" / "tests"))

from cluster_procs import ProcCluster
from exactly_once_chaos import ChaosReport, run_chaos


async def _run(seconds: float, tasks: int, period: float, exactly_once: bool) -> ChaosReport:
    with (
        tempfile.TemporaryDirectory(prefix="dref-chaos-") as tmp,
        ProcCluster(3, storage=Path(tmp)).running() as cluster,
    ):
        return await run_chaos(
            cluster, seconds=seconds, tasks=tasks, period=period, exactly_once=exactly_once
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--period", type=float, default=3.0, help="seconds between faults")
    parser.add_argument("--without", action="store_true", help="exactly_once = false")
    args = parser.parse_args(argv)
    report = asyncio.run(_run(args.seconds, args.tasks, args.period, not args.without))
    returned, calls = len(report.returned), len(report.returned) + report.raised
    checks = {
        "returned values distinct": len(set(report.returned)) == returned,
        "returned <= final <= returned + raised": returned <= report.final <= calls,
        ">= 99.9 % of calls returned": returned >= 0.999 * calls,
    }
    mode = "without sessions" if args.without else "exactly-once"
    print(f"{mode}, {args.seconds:g} s, {args.tasks} tasks, a fault every {args.period:g} s")
    print(report)
    for name, ok in checks.items():
        print(f"  {'pass' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
