"""Command line: `python -m dref_raft.simulation --seeds 0:10000 --jobs 2 [--nodes 5]`.

Prints each failing seed, the nemesis totals and, last, `N seeds, K anomalies, T s`.
`--seed K --trace` replays one seed exactly and prints its trace. Exit status 1 on failure.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from dref_raft.simulation.runner import NEMESES, SimConfig, SimResult, run_seed

#: Statistics summed over a range of seeds: how often each nemesis did its thing.
NEMESIS_STATS = (
    "stale_leader_episodes",
    "reads_at_superseded_leader",
    "writes_at_superseded_leader",
    "figure8_episodes",
    "figure8_old_term_majority",
    "figure8_completed",
    "divergent_elections",
    "replays",
    "crashes_in_persist",
    "stale_term_deliveries",
    "crashes",
    "nemesis_crashes",
    "partitions",
)


def _run(args: tuple[int, SimConfig]) -> SimResult:
    result = run_seed(args[0], args[1])
    result.history, result.holds, result.grants = [], [], []
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the seeds and print failures with their seeds."""
    parser = argparse.ArgumentParser(prog="python -m dref_raft.simulation")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--seeds", help="a range START:END (END excluded)")
    group.add_argument("--seed", type=int, help="one seed")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--trace", action="store_true", help="print the trace (with --seed)")
    parser.add_argument("--no-history-check", action="store_true")
    parser.add_argument("--lock-clients", type=int, default=2, help="lease-lock clients (0: none)")
    parser.add_argument(
        "--nemesis",
        action="append",
        choices=NEMESES,
        help="run these nemeses in every seed (repeatable; default: each seed picks a mix)",
    )
    args = parser.parse_args(argv)
    config = SimConfig(
        nodes=args.nodes,
        steps=args.steps,
        check_history=not args.no_history_check,
        lock_clients=args.lock_clients,
        nemeses=tuple(args.nemesis) if args.nemesis else None,
    )
    if args.seed is not None:
        result = run_seed(args.seed, config, trace=args.trace)
        for line in result.trace:
            print(line)
        print(f"seed {args.seed}: {result.failure or 'ok'}; {result.stats}")
        print(f"linearizability: {result.linearizability}")
        print(f"locks: {result.locks}")
        return 0 if result.ok else 1
    start_s, _, end_s = args.seeds.partition(":")
    seeds = range(int(start_s), int(end_s))
    started = time.monotonic()
    failures = 0
    work = [(seed, config) for seed in seeds]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(_run, work, chunksize=8))
    else:
        results = [_run(w) for w in work]
    totals: Counter[str] = Counter()
    for result in results:
        totals.update(result.stats)
        if not result.ok:
            failures += 1
            print(f"FAIL seed {result.seed}: {result.failure}")
    elapsed = time.monotonic() - started
    print("nemeses: " + ", ".join(f"{k} {totals[k]}" for k in NEMESIS_STATS))
    print(f"{config.nodes} nodes, {config.steps} steps a seed, {args.jobs} jobs")
    print(f"{len(seeds)} seeds, {failures} anomalies, {elapsed:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
