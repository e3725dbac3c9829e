"""The fairness row every benchmark prints: 4 processes x 4 tasks update one element.

`python benchmarks/<backend>_bench.py --fairness` prints least ÷ most updates per process and the
total updates/s (dref_compat.fairness; in-memory: 4 contexts of one process, as it is not shared
across processes; Raft: 4 client processes of a 3-member cluster started for the run). Target:
least ÷ most ≥ 0.5.

With `--baseline SRC` (a checkout of another commit, e.g. `git worktree add ../base <commit>`)
both sides run in alternating rounds, each in a fresh interpreter (the baseline's packages first
on PYTHONPATH), and the row ends with the ratio of the totals: this ÷ baseline (target ≥ 0.8).
`compare_options` does the same within this tree, between two sets of connect options (Raft:
`fair_updates = false`, today's compare-and-set with backoff, against the fair line).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["compare_options", "compare_rows", "fairness_row", "measure"]

_PACKAGES = ("dref-core", "dref-inmemory", "dref-redis", "dref-raft")


def measure(backend: str, options: dict[str, Any], seconds: float) -> dict[str, Any]:
    """One run for `seconds` (no count bound): counts, seconds, ratio, updates/s.

    Raft with `{"local_cluster": N}`: a cluster of N `python -m dref_raft` processes of this
    interpreter's packages is started for the run, and the contenders are client contexts; with
    `{"members": N}` the contenders are the N member processes of the cluster themselves
    (`_fairness_members`)."""
    if backend == "raft" and "members" in options:
        from _fairness_members import measure_members

        extra = {k: v for k, v in options.items() if k != "members"}
        return measure_members(extra, seconds, members=int(options["members"]))
    if backend == "raft" and "local_cluster" in options:
        from dref_raft.cli.local_cluster import LocalCluster

        extra = {k: v for k, v in options.items() if k != "local_cluster"}
        with LocalCluster(int(options["local_cluster"])) as cluster:
            cluster.wait_for_leader(30)
            client = {**extra, "mode": "client", "endpoints": cluster.endpoints}
            return measure(backend, client, seconds)
    from dref_compat import fairness

    total = 10**9
    if backend == "inmemory":
        result = asyncio.run(
            fairness.run_contexts(
                backend, options, contexts=4, tasks=4, total=total, seconds=seconds
            )
        )
    else:
        result = fairness.run_processes(
            backend, options, processes=4, tasks=4, total=total, seconds=seconds
        )
    return {
        "counts": list(result.counts),
        "seconds": result.seconds,
        "ratio": result.ratio,
        "per_second": result.per_second,
    }


def _row(label: str, m: dict[str, Any]) -> str:
    verdict = "pass" if m["ratio"] >= 0.5 else "FAIL"
    return (
        f"  {label}: least ÷ most {m['ratio']:.3f} [{verdict}], "
        f"{m['per_second']:,.0f} updates/s, counts {m['counts']}"
    )


def fairness_row(
    backend: str, options: dict[str, Any], *, seconds: float = 5.0, shape: str = "4 x 4 tasks"
) -> str:
    """Run the contention for `seconds` (no count bound) and return the printed row."""
    m = measure(backend, options, seconds)
    return f"fairness ({backend}, {shape}, one element):\n" + _row("this", m)


def _measure_in(src: Path | None, backend: str, options: dict[str, Any], seconds: float) -> Any:
    """`measure` in a fresh interpreter; with `src`, that checkout's packages come first."""
    env = dict(os.environ)
    here = Path(__file__).resolve().parent
    paths = [str(here), str(here.parent / "compat" / "src")]
    if src is not None:
        paths = [str(src / "packages" / p / "src") for p in _PACKAGES] + paths
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    code = (
        "import json, sys; from _fairness import measure; "
        "print(json.dumps(measure(sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, backend, json.dumps(options), str(seconds)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=seconds + 180,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare_rows(
    backend: str, options: dict[str, Any], baseline: Path, *, seconds: float, rounds: int
) -> str:
    """Alternate baseline and this tree `rounds` times; rows per run and the ratio of totals."""
    title = f"fairness ({backend}, 4 x 4 tasks, one element), baseline {baseline.name}:"
    sides = {"baseline": (baseline, options), "this": (None, options)}
    return _alternate(backend, title, sides, seconds=seconds, rounds=rounds)


def compare_options(
    backend: str,
    options: dict[str, Any],
    baseline_options: dict[str, Any],
    *,
    label: str,
    seconds: float,
    rounds: int,
    shape: str = "4 x 4 tasks",
) -> str:
    """`compare_rows` within this tree: `baseline_options` (described by `label`) against
    `options`, alternating `rounds` times; `shape` names the contenders in the title."""
    title = f"fairness ({backend}, {shape}, one element), baseline {label}:"
    sides = {"baseline": (None, baseline_options), "this": (None, options)}
    return _alternate(backend, title, sides, seconds=seconds, rounds=rounds)


def _alternate(
    backend: str,
    title: str,
    sides: dict[str, tuple[Path | None, dict[str, Any]]],
    *,
    seconds: float,
    rounds: int,
) -> str:
    lines = [title]
    totals = {"baseline": 0.0, "this": 0.0}
    for r in range(rounds):
        order = ("baseline", "this") if r % 2 == 0 else ("this", "baseline")
        for side in order:
            src, side_options = sides[side]
            m = _measure_in(src, backend, side_options, seconds)
            totals[side] += m["per_second"]
            lines.append(_row(f"round {r + 1} {side:8}", m))
    ratio = totals["this"] / totals["baseline"] if totals["baseline"] else float("inf")
    verdict = "pass" if ratio >= 0.8 else "FAIL"
    lines.append(
        f"  mean updates/s: baseline {totals['baseline'] / rounds:,.0f}, "
        f"this {totals['this'] / rounds:,.0f}; "
        f"this ÷ baseline {ratio:.2f} [{verdict}, target ≥ 0.8]"
    )
    return "\n".join(lines)
