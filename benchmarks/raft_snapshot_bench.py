"""Large state in dref's Raft: how fast a new or restarted member catches up through a streamed
snapshot, how much memory the members use, and how long their event loops stall meanwhile.

    python benchmarks/raft_snapshot_bench.py [--elements 200000] [--value-size 100] [--json f]

(the issue's target is `--elements 1000000`: catch-up within 10 s, peak RSS within 3x the data,
no event-loop stall above 50 ms).

A 3-member cluster on 127.0.0.1 (one process per member, files in a temporary directory):

1. seed: a backup holding `--elements` elements of `--value-size` random bytes is written and
   restored into n1 and n2 (`dref raft snapshot restore`); n1 and n2 start and elect a leader;
2. new member: n3 starts with an empty directory; the leader streams it the whole state
   (docs/raft-wire.md#snapshot-streaming); timed from the start of the process to n3 applying
   the leader's last entry;
3. compaction: `--writes` sets go to the leader with `--snapshot-every` equal to them, so every
   member takes (and saves) a snapshot of the whole state while it keeps serving; the phase
   lasts until every member has saved it (its snapshot file replaced), else a snapshot taken
   after the last write would count in the next phase;
4. restarted member: n3 is stopped, 3 x `--writes` more sets compact the others' logs past it
   (a compaction keeps the last `snapshot_every` entries: the second one after n3 stopped
   drops what n3 lacks), and n3 is restarted: it boots from its own files and gets a fresh
   snapshot streamed;
5. memory: each member's peak RSS (VmHWM, and VmRSS sampled every 20 ms: the highest per
   phase says which phase set the peak) against the data size (elements x (key + value)).

Stalls are measured inside each member (`dref raft node --log-loop-stalls 20`: a task that
asks to wake every 5 ms logs how late it ran whenever that exceeds 20 ms); the longest per
member and phase is reported; each line also says how much CPU the member used meanwhile, and
the part of a stall spent on a CPU ("busy": the member's own work, not waiting for a core of
this loaded machine) is reported too, with the count of busy stalls above 50 ms. From outside,
a probe also calls `DRefExt/Status` on every member every 10 ms and keeps the slowest answer
per phase (that
includes this process's own scheduling; an idle phase first gives the noise floor). The old
path — one `InstallSnapshot` message capped at 16 MiB — cannot carry this
state at all (above ~150,000 elements of 100 bytes); there is nothing to run side by side with
it at these sizes. Nothing here is a test; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dref.errors import DRefError
from dref_raft.cli.local_cluster import LocalCluster, MemberProcess
from dref_raft.fsm import ClusterSnapshot, SnapshotEntry
from dref_raft.storage.layout import SNAPSHOT_FILE
from dref_raft.storage.snapshot import encode_snapshot_file
from dref_raft.storage.snapshot_files import restore_backup, write_backup_trailer
from dref_raft.transport.grpc_client import LeaderClient


@dataclass
class Probe:
    """The slowest `Status` answer of each member while `phase` runs, and when each phase
    started (wall clock, to place the members' stall lines)."""

    members: list[MemberProcess]
    phase: str = "boot"
    worst: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The highest VmRSS sampled of each member per phase, bytes.
    rss: dict[str, dict[str, int]] = field(default_factory=dict)
    stopped: bool = False
    started: list[tuple[float, str]] = field(default_factory=lambda: [(0.0, "boot")])

    def enter(self, phase: str) -> None:
        self.phase = phase
        self.started.append((time.time(), phase))

    def phase_at(self, wall: float) -> str:
        return [name for at, name in self.started if at <= wall][-1]

    async def run(self) -> None:
        clients = {m.node_id: LeaderClient(m.address, timeout=30.0) for m in self.members}
        try:
            await asyncio.gather(
                self._sample_rss(), *(self._probe(n, c) for n, c in clients.items())
            )
        finally:
            for client in clients.values():
                await client.aclose()

    async def _sample_rss(self) -> None:
        """VmRSS of every running member every 20 ms, the highest kept per phase (VmHWM is
        only the run's peak; this says which phase set it)."""
        while not self.stopped:
            for member in self.members:
                if member.proc is None or member.proc.poll() is not None:
                    continue
                with contextlib.suppress(OSError, KeyError):
                    rss = peak_rss(member)[1]
                    per = self.rss.setdefault(self.phase, {})
                    per[member.node_id] = max(per.get(member.node_id, 0), rss)
            await asyncio.sleep(0.02)

    async def _probe(self, node_id: str, client: LeaderClient) -> None:
        while not self.stopped:
            started = time.perf_counter()
            phase = self.phase
            try:
                await client.status(timeout=30.0)
            except Exception:  # not serving (stopped or starting)
                await asyncio.sleep(0.05)
                continue
            took = time.perf_counter() - started
            per = self.worst.setdefault(phase, {})
            per[node_id] = max(per.get(node_id, 0.0), took)
            await asyncio.sleep(0.01)


STALL_LINE = re.compile(
    r"event loop stalled ([0-9.]+) ms: ([0-9.]+) ms on the loop's thread, ([0-9.]+) ms in other "
    r"threads \(ended at ([0-9.]+)\)"
)


def loop_stalls(
    members: list[MemberProcess], probe: Probe
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]], dict[str, int]]:
    """From the members' log lines, per phase: each member's longest event-loop stall, its
    longest "busy" stall (the part of a stall the process spent on a CPU, loop thread and
    others: what this process did, not the machine's other load), and how many busy stalls (all
    members) were above 50 ms. Seconds."""
    longest: dict[str, dict[str, float]] = {}
    busy: dict[str, dict[str, float]] = {}
    over: dict[str, int] = {}
    for member in members:
        if not member.log_file.exists():
            continue
        for match in STALL_LINE.finditer(member.log_file.read_text(errors="replace")):
            stall = float(match[1]) / 1000
            own = min(stall, (float(match[2]) + float(match[3])) / 1000)
            phase = probe.phase_at(float(match[4]))
            per = longest.setdefault(phase, {})
            per[member.node_id] = max(per.get(member.node_id, 0.0), stall)
            per_busy = busy.setdefault(phase, {})
            per_busy[member.node_id] = max(per_busy.get(member.node_id, 0.0), own)
            over[phase] = over.get(phase, 0) + (own > 0.05)
    return longest, busy, over


def peak_rss(member: MemberProcess) -> tuple[int, int]:
    """(VmHWM, VmRSS) of the member's process, in bytes."""
    assert member.proc is not None
    fields = {}
    for line in Path(f"/proc/{member.proc.pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) * 1024
    return fields["VmHWM"], fields["VmRSS"]


async def applied(member: MemberProcess) -> int:
    async with LeaderClient(member.address, timeout=5.0) as client:
        return (await client.status()).applied


async def wait_applied(
    member: MemberProcess, target: int, timeout: float, answered: Callable[[], None] | None = None
) -> float:
    """Seconds until `member` applied `target` (polled every 20 ms); `answered`: called when
    it first answers (it booted)."""
    started = time.perf_counter()
    while True:
        try:
            if await applied(member) >= target:
                return time.perf_counter() - started
            if answered is not None:
                answered()
                answered = None
        except Exception:  # still starting
            pass
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"{member.node_id} did not apply {target} within {timeout} s")
        await asyncio.sleep(0.02)


async def leader_of(members: list[MemberProcess], timeout: float = 60.0) -> MemberProcess:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        for member in members:
            try:
                async with LeaderClient(member.address, timeout=2.0) as client:
                    if (await client.status()).role == "leader":
                        return member
            except Exception:  # still starting
                pass
        await asyncio.sleep(0.05)
    raise TimeoutError("no leader")


async def write(members: list[MemberProcess], count: int, prefix: str) -> int:
    """`count` sets on the leader, 32 at a time (following a new leader); the highest applied
    seq answered."""
    queue = list(range(count))
    applied_seq = 0
    while queue:
        leader = await leader_of(members)
        async with LeaderClient(leader.address, timeout=30.0) as client:

            async def worker(client: LeaderClient = client) -> None:
                while queue:
                    i = queue.pop()
                    try:
                        await client.set_element(f"{prefix}{i}", b"w")
                    except DRefError:
                        queue.append(i)  # to the next leader (a set is idempotent)
                        raise

            with contextlib.suppress(DRefError):
                await asyncio.gather(*(worker() for _ in range(32)))
            applied_seq = max(applied_seq, client.applied_seq)
    return applied_seq


def saved_snapshot(root: Path, member: MemberProcess) -> int:
    """When `member` last saved a snapshot (its snapshot file's mtime, ns; 0: none)."""
    try:
        return (root / "storage" / member.node_id / SNAPSHOT_FILE).stat().st_mtime_ns
    except FileNotFoundError:
        return 0


async def wait_snapshots_saved(
    root: Path, members: list[MemberProcess], before: dict[str, int], timeout: float
) -> None:
    """Until each of `members` saved a snapshot after `before` (`saved_snapshot` values)."""
    deadline = time.perf_counter() + timeout
    while any(saved_snapshot(root, m) == before[m.node_id] for m in members):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"not every member saved a snapshot within {timeout} s")
        await asyncio.sleep(0.05)


async def term_of(members: list[MemberProcess]) -> int:
    terms = []
    for member in members:
        with contextlib.suppress(Exception):
            async with LeaderClient(member.address, timeout=5.0) as client:
                terms.append((await client.status()).term)
    return max(terms, default=0)


def seed(directory: Path, elements: int, value_size: int) -> tuple[Path, int, float]:
    """A backup of `elements` random values; its path, data bytes and seconds to write it."""
    started = time.perf_counter()
    rng = random.Random(7)
    entries = tuple(
        SnapshotEntry(f"key{i:08d}", rng.randbytes(value_size)) for i in range(elements)
    )
    data_bytes = sum(len(e.key) + len(e.value) for e in entries)
    body = encode_snapshot_file(ClusterSnapshot(entries, elements, 1))
    del entries
    path = directory / "seed.backup"
    path.write_bytes(body)
    write_backup_trailer(path, hashlib.sha256(body).digest())
    return path, data_bytes, time.perf_counter() - started


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    results: dict[str, object] = {"elements": args.elements, "value_size": args.value_size}
    with tempfile.TemporaryDirectory(prefix="dref-snapshot-bench-") as tmp:
        root = Path(tmp) if args.keep is None else args.keep
        root.mkdir(parents=True, exist_ok=True)
        backup, data_bytes, seeded = seed(root, args.elements, args.value_size)
        results["data_bytes"] = data_bytes
        results["backup_bytes"] = backup.stat().st_size
        results["seed_seconds"] = seeded
        started = time.perf_counter()
        for node_id in ("n1", "n2"):
            restore_backup(backup, root / "storage" / node_id)
        results["restore_seconds_per_member"] = (time.perf_counter() - started) / 2
        cluster = LocalCluster(
            3,
            storage_dir=root / "storage",
            node_args=[
                "--snapshot-every",
                str(args.writes),
                "--log-level",
                "INFO",
                "--log-loop-stalls",
                "20",
            ],
        )
        n1, n2, n3 = cluster.members
        probe = Probe([n1, n2, n3])
        probe_task: asyncio.Task[None] | None = None
        try:
            started = time.perf_counter()
            n1.spawn()
            n2.spawn()
            leader = await leader_of([n1, n2], timeout=args.timeout)
            results["boot_from_snapshot_seconds"] = time.perf_counter() - started
            target = await applied(leader)
            first_term = await term_of([n1, n2])
            probe.enter("idle")
            probe_task = asyncio.create_task(probe.run())
            await asyncio.sleep(2.0)  # the idle phase: this machine's noise floor

            probe.enter("new member catch-up")
            started = time.perf_counter()
            n3.spawn()
            await wait_applied(n3, target, args.timeout)
            results["new_member_catch_up_seconds"] = time.perf_counter() - started

            probe.enter("compaction")
            started = time.perf_counter()
            saved = {m.node_id: saved_snapshot(root, m) for m in (n1, n2, n3)}
            target = await write([n1, n2, n3], args.writes, "a")
            await wait_applied(n3, target, args.timeout)
            await wait_snapshots_saved(root, [n1, n2, n3], saved, args.timeout)
            results["compaction_phase_seconds"] = time.perf_counter() - started

            probe.enter("n3 stopped, more compactions")
            n3.terminate()
            assert n3.proc is not None
            await asyncio.to_thread(n3.proc.wait, 30)
            # Three times `--writes`, and a snapshot saved by both after the first two: a
            # compaction keeps the last `snapshot_every` entries its snapshot covers, so only
            # the second one after n3 stopped moves their logs' base past it, and n3 gets a
            # snapshot (not just the log).
            await write([n1, n2], 2 * args.writes, "b")
            saved = {m.node_id: saved_snapshot(root, m) for m in (n1, n2)}
            target = await write([n1, n2], args.writes, "c")
            await wait_snapshots_saved(root, [n1, n2], saved, args.timeout)
            started = time.perf_counter()
            probe.enter("restarted member boots")
            n3.spawn()
            await wait_applied(
                n3, target, args.timeout, lambda: probe.enter("restarted member installs")
            )
            results["restarted_member_catch_up_seconds"] = time.perf_counter() - started
            probe.enter("end")
            results["elections_during_the_run"] = await term_of([n1, n2, n3]) - first_term

            # VmHWM of each member's last process, or the highest VmRSS sampled of an
            # earlier one (n3 restarted) when that was higher.
            peaks = {m.node_id: peak_rss(m)[0] for m in (n1, n2, n3)}
            for per in probe.rss.values():
                for node_id, sampled in per.items():
                    peaks[node_id] = max(peaks[node_id], sampled)
            results["peak_rss_bytes"] = peaks
            results["peak_rss_over_data"] = {k: v / data_bytes for k, v in peaks.items()}
        finally:
            probe.stopped = True
            if probe_task is not None:
                await asyncio.wait_for(probe_task, 60)
            stalls, busy, over = loop_stalls(cluster.members, probe)
            results["max_loop_stall_seconds"] = stalls
            results["max_busy_loop_stall_seconds"] = busy
            results["busy_loop_stalls_over_50_ms"] = over
            results["transfers"] = [  # the members' own timings (INFO lines), read before stop
                line.split(":", 2)[-1]
                for member in cluster.members
                if member.log_file.exists()
                for line in member.log_file.read_text(errors="replace").splitlines()
                if "snapshot seq" in line
            ]
            if args.keep is not None:
                for member in cluster.members:
                    if member.log_file.exists():
                        (root / member.log_file.name).write_bytes(member.log_file.read_bytes())
            cluster.stop()
        results["max_status_latency_seconds"] = probe.worst
        results["peak_rss_over_data_per_phase"] = {
            phase: {n: rss / data_bytes for n, rss in per.items()}
            for phase, per in probe.rss.items()
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=200_000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--writes", type=int, default=2000, help="sets per write phase")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--keep", type=Path, help="work in this directory and keep it (members' logs, files)"
    )
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    data = int(results["data_bytes"])  # type: ignore[call-overload]
    print(f"elements {args.elements} x {args.value_size} B: data {data / 1e6:.1f} MB")
    for key, value in results.items():
        if isinstance(value, float | int) and not isinstance(value, bool):
            print(f"  {key:36} {value:8.2f}" if isinstance(value, float) else f"  {key:36} {value}")
        elif isinstance(value, list):
            print(f"  {key}:")
            for line in value:
                print(f"    {line}")
        elif isinstance(value, dict):
            print(f"  {key}:")
            for sub, v in value.items():
                shown = (
                    " ".join(f"{n}={x:.2f}x" for n, x in v.items())
                    if isinstance(v, dict) and key == "peak_rss_over_data_per_phase"
                    else " ".join(f"{n}={x * 1000:.0f}ms" for n, x in v.items())
                    if isinstance(v, dict)
                    else f"{v:.2f}"
                    if isinstance(v, float)
                    else str(v)
                )
                print(f"    {sub:34} {shown}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
