"""Mutation check: the randomized simulation alone must catch deliberate Raft safety bugs.

Each mutant is a textual replacement in a temporary copy of the `dref_raft` source (the real
tree is never touched); a replacement whose `old` text does not occur exactly once fails the
whole check, so a refactor of the core cannot silently turn a mutant into a no-op. Every
mutant runs `dref_raft.simulation.run_seed` over the seeds in a subprocess whose PYTHONPATH
puts the mutated copy first, and stops at its first failing seed. The unmutated core must
pass every seed of the same budget.

    python packages/dref-raft/scripts/mutation_check.py --seeds 200 --jobs 2

Exit status 1 when a mutant survives its seed budget or the unmutated core fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dref_raft"


@dataclass(frozen=True, slots=True)
class Mutant:
    """Replace `old` (which must occur exactly once) by `new` in `file` (under dref_raft/)."""

    name: str
    breaks: str
    file: str
    old: str
    new: str


RAFT = "core/raft.py"

MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "commit-earlier-term",
        "commit rule: a leader commits an earlier term's entry by counting its replicas",
        RAFT,
        "if candidate > self.commit and self.log.term_at(candidate) == self.term:",
        "if candidate > self.commit:",
    ),
    Mutant(
        "vote-without-log-check",
        "vote rule: a Vote is granted without the up-to-date-log check",
        RAFT,
        "granted = can_vote and self._up_to_date(msg)",
        "granted = can_vote",
    ),
    Mutant(
        "vote-twice-in-a-term",
        "vote rule: a node votes for every candidate of a term, not only the first",
        RAFT,
        "can_vote = self.vote == msg.sender or (self.vote is None and self.leader_id is None)",
        "can_vote = True",
    ),
    Mutant(
        "append-without-prev-term-check",
        "log matching: AppendEntries accepted when the previous seq is held in any term",
        RAFT,
        "if self.log.term_at(prev_seq) != prev_term:",
        "if self.log.term_at(prev_seq) is None:",
    ),
    Mutant(
        "append-keeps-conflicting-entries",
        "log matching: a held entry of another term is kept instead of truncated",
        RAFT,
        "if held == entry.term:\n                continue",
        "if held is not None:\n                continue",
    ),
    Mutant(
        "heartbeat-commit-beyond-match",
        "log matching: heartbeats carry the leader's commit, not min(commit, peer's match)",
        RAFT,
        "commit = min(self.commit, pr.match_seq)\n        pr.commit_sent",
        "commit = self.commit\n        pr.commit_sent",
    ),
    Mutant(
        "read-without-quorum",
        "read index: a leader answers reads at its commit without a quorum round",
        RAFT,
        "if not self.peers:\n                self._reads_ready.extend(",
        "if True:\n                self._reads_ready.extend(",
    ),
    Mutant(
        "read-before-own-term-commit",
        "read index: a new leader serves reads before an entry of its term is committed",
        RAFT,
        "if self._committed_own_term():\n            self._reads_open.append(request_id)",
        "if True:\n            self._reads_open.append(request_id)",
    ),
    Mutant(
        "accept-stale-term",
        "term handling: messages of a lower term are processed instead of rejected",
        RAFT,
        "elif msg.term < self.term and not isinstance(msg, PreVoteResponse):",
        "elif False:",
    ),
    Mutant(
        "leader-keeps-role-on-higher-term",
        "term handling: a leader adopts a higher term it sees but does not step down",
        RAFT,
        "            else:\n                self._become_follower(msg.term, None)\n",
        "            elif self.role is Role.LEADER:\n                self.term = msg.term\n"
        "            else:\n                self._become_follower(msg.term, None)\n",
    ),
    Mutant(
        "install-snapshot-older-than-commit",
        "snapshot install: a snapshot at or below the commit is installed (state rolls back)",
        RAFT,
        "if msg.last_seq > self.commit:\n            term =",
        "if msg.last_seq > 0:\n            term =",
    ),
    Mutant(
        "two-config-changes-at-once",
        "membership: a change is proposed while the previous one is not committed",
        RAFT,
        "if self.config_seq > self.commit:\n            return ConfigRefused(",
        "if False:\n            return ConfigRefused(",
    ),
    Mutant(
        "count-learner-acks",
        "membership: a learner's replica counts toward the commit majority",
        RAFT,
        "*(pr.match_seq for p, pr in self._progress.items() if p in self.voters)",
        "*(pr.match_seq for pr in self._progress.values())",
    ),
    Mutant(
        "count-learner-votes",
        "membership: a learner's vote counts toward the election majority",
        RAFT,
        "granted = sum(v for p, v in self._votes.items() if p in self.voters)",
        "granted = sum(self._votes.values())",
    ),
    Mutant(
        "config-only-on-commit",
        "membership: a follower does not use a configuration entry when it appends it",
        RAFT,
        "            self.log.append(entries[i:])\n            self._note_appended(entries[i:])",
        "            self.log.append(entries[i:])",
    ),
    Mutant(
        "ack-before-persist",
        "durability: append and vote responses leave before the entries or the vote are durable",
        "apply.py",
        "SEND_BEFORE_PERSIST = (AppendEntries, Heartbeat, InstallSnapshot, ReadIndex)",
        "from dref_raft.core import AppendEntriesResponse, VoteResponse\n"
        "SEND_BEFORE_PERSIST = (AppendEntries, Heartbeat, InstallSnapshot, ReadIndex, "
        "AppendEntriesResponse, VoteResponse)",
    ),
    Mutant(
        "snapshot-keeps-mismatched-suffix",
        "snapshot install: entries after the snapshot are kept though the terms do not match",
        "core/log.py",
        "if keep_suffix and self.term_at(snapshot.seq) == snapshot.term:",
        "if keep_suffix and self.term_at(snapshot.seq) is not None:",
    ),
)


def mutate(root: Path, mutant: Mutant | None) -> Path:
    """Copy the package under `root` and apply `mutant`; return the PYTHONPATH entry."""
    target = root / "dref_raft"
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__"))
    if mutant is not None:
        path = target / mutant.file
        text = path.read_text()
        count = text.count(mutant.old)
        if count != 1:
            raise SystemExit(
                f"mutant {mutant.name}: its text occurs {count} times in {mutant.file} "
                "(expected exactly once): update the mutant to the current core"
            )
        path.write_text(text.replace(mutant.old, mutant.new))
    return root


def run_worker(first: int, last: int, steps: int, stop_at_failure: bool) -> int:
    """Run seeds `first..last-1` in this process; print one JSON line of the outcome."""
    import dref_raft
    from dref_raft.simulation import SimConfig, run_seed

    expected = os.environ.get("DREF_MUTATION_ROOT")
    if expected and not Path(dref_raft.__file__).resolve().is_relative_to(Path(expected)):
        raise SystemExit(f"imported {dref_raft.__file__}, not the copy under {expected}")
    config = SimConfig(steps=steps)
    ran, failures = 0, []
    for seed in range(first, last):
        ran += 1
        try:
            failure = run_seed(seed, config).failure
        except Exception as exc:  # a crash of the core is a caught mutant, too
            failure = f"exception {type(exc).__name__}: {exc}"
        if failure is not None:
            failures.append((seed, failure))
            if stop_at_failure:
                break
    print(json.dumps({"ran": ran, "failures": failures}))
    return 0


@dataclass(slots=True)
class Outcome:
    """What one mutant (or the unmutated core: `mutant` None) did over its seeds."""

    mutant: Mutant | None
    ran: int
    failures: list[tuple[int, str]]
    seconds: float


def run_subject(
    mutant: Mutant | None, seeds: range, steps: int, stop: bool = True, timeout: float = 900.0
) -> Outcome:
    """Run the simulation over `seeds` on a fresh (mutated) copy in a subprocess."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dref-mutant-") as tmp:
        root = mutate(Path(tmp), mutant)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        env["DREF_MUTATION_ROOT"] = str(root)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        args = [sys.executable, __file__, "--worker", f"{seeds.start}:{seeds.stop}"]
        args += ["--steps", str(steps)]
        if mutant is not None and stop:
            args.append("--stop-at-failure")
        name = mutant.name if mutant else "unmutated"
        try:
            proc = subprocess.run(
                args, env=env, capture_output=True, text=True, check=False, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise SystemExit(f"worker for {name}: no verdict within {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise SystemExit(f"worker for {name}:\n{proc.stderr}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    failures = [(int(s), str(f)) for s, f in data["failures"]]
    return Outcome(mutant, int(data["ran"]), failures, time.monotonic() - started)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    """Run every mutant (and the unmutated core) and report; 1 if any mutant survives."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=200, help="seed budget per mutant")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3000, help="simulation steps per seed")
    parser.add_argument("--jobs", type=int, default=2, help="subprocesses at once")
    parser.add_argument("--only", action="append", default=[], help="run only this mutant")
    parser.add_argument("--baseline-seeds", type=int, help="seeds of the unmutated run")
    parser.add_argument(
        "--rates",
        action="store_true",
        help="run every seed of each mutant (no stop at the first failure): catch rates",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds per subprocess before giving up"
    )
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--stop-at-failure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        first, _, last = args.worker.partition(":")
        return run_worker(int(first), int(last), args.steps, args.stop_at_failure)
    if args.list:
        for m in MUTANTS:
            print(f"{m.name}: {m.breaks}")
        return 0
    unknown = set(args.only) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutants: {sorted(unknown)}")
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    for m in chosen:  # fail before running anything if a mutant no longer applies
        with tempfile.TemporaryDirectory(prefix="dref-mutant-") as tmp:
            mutate(Path(tmp), m)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    base_count = args.baseline_seeds if args.baseline_seeds is not None else args.seeds
    # The unmutated run is split in `jobs` chunks so that it does not dominate the wall time.
    chunk = max(1, -(-base_count // max(1, args.jobs)))
    base_ranges = [
        range(s, min(s + chunk, seeds.start + base_count))
        for s in range(seeds.start, seeds.start + base_count, chunk)
    ]
    started = time.monotonic()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        base_futures = [
            pool.submit(run_subject, None, r, args.steps, True, args.timeout) for r in base_ranges
        ]
        futures = [
            pool.submit(run_subject, m, seeds, args.steps, not args.rates, args.timeout)
            for m in chosen
        ]
        survivors = 0
        for future in futures:
            out = future.result()
            assert out.mutant is not None
            if out.failures:
                seed, text = out.failures[0]
                rate = f" (fails {len(out.failures)} of {out.ran} seeds)" if args.rates else ""
                print(
                    f"CAUGHT   {out.mutant.name}: seed {seed} after {out.ran} seeds, "
                    f"{out.seconds:.1f} s{rate}: {_short(text)}"
                )
            else:
                survivors += 1
                print(
                    f"SURVIVED {out.mutant.name}: {out.ran} seeds, {out.seconds:.1f} s "
                    f"({out.mutant.breaks})"
                )
        base_ran, base_failures, base_seconds = 0, [], 0.0
        for future in base_futures:
            out = future.result()
            base_ran += out.ran
            base_failures += out.failures
            base_seconds += out.seconds
    for seed, text in base_failures:
        print(f"UNMUTATED FAILS seed {seed}: {_short(text)}")
    print(
        f"unmutated core: {base_ran} seeds, {len(base_failures)} failed, "
        f"{base_seconds:.1f} s of work"
    )
    elapsed = time.monotonic() - started
    print(
        f"{len(chosen) - survivors} of {len(chosen)} mutants caught, {survivors} survived; "
        f"unmutated {'ok' if not base_failures else 'FAILED'}; {elapsed:.1f} s"
    )
    return 1 if survivors or base_failures else 0


if __name__ == "__main__":
    sys.exit(main())
