"""dref's Raft (3 member processes, gRPC, fsync'ed storage) against PySyncObj, side by side.

    python benchmarks/raft_bench.py [--seconds 3] [--json out.json] [--inflight 64,1024]

Each side is a 3-node cluster on 127.0.0.1, one process per node, and the load runs inside the
node processes, spread evenly over the three (22 + 21 + 21 of 64 writers): a writer on a follower
goes through its node to the leader, as an application embedding the node would. Rows:

- `1 writer (leader)`, `1 writer (follower)`: one write in flight, on the leader or on a
  follower; dref `ref.set(i)`, PySyncObj `counter.incr(sync=True)`; both acknowledge once
  committed and applied on the writer's node;
- `64 writers`, `1024 writers` (`--inflight`): that many writes in flight, spread; dref one
  task per write in flight (one key each), PySyncObj one thread each up to 64 per process and
  above that callbacks (`incr(callback=…)`, each completion issues the next);
- `64 readers`: linearizable reads/s; dref `ref.get()` (ReadIndex on the leader), PySyncObj a
  no-op command through the log (it has no ReadIndex; its local reads may be stale);
- failover: the leader process is killed with SIGKILL while every other node writes in a loop;
  the time from the kill to the first write acknowledged after it;
- the cost of exactly-once writes: the `1 writer` rows measured again, alternating a context
  with sessions (the default) and one with `exactly_once = false`, best of 3 windows each, side
  by side in a table of their own (these replace the `1 writer` rows above).

The `dref÷base` column is PySyncObj's ops/s over dref's (below 1: dref is faster); the target
column holds issue 11's goals (p50 of one writer, writes at least PySyncObj's).

dref stores every node's files in a temporary directory and fsyncs each batch
(`--dref-storage ram` keeps them in memory); PySyncObj uses its journal file (mmap'ed, never
fsync'ed: it has no such option). PySyncObj is optional (`pip install pysyncobj`): without it the
dref side runs alone. Nothing here is a test; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import multiprocessing
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from _common import (
    Row,
    Sample,
    Stats,
    Target,
    comparison_table,
    max_overhead,
    ops_text,
    results_json,
)
from rich import box
from rich.console import Console
from rich.table import Table

import dref
from dref.errors import ClosedError, DRefError

TITLE = "dref raft (dref) vs PySyncObj (base), 3 processes on 127.0.0.1; latencies in µs"
BASELINE = "base"
SUBJECT = "dref"
NODES = 3
WARMUP = 0.5
"""Seconds of load before each measuring window."""
CALL_TIMEOUT = 60.0
"""How long the driver waits for one answer from a node process."""
FAILOVER_WAIT = 5.0
"""Seconds the survivors keep probing after the kill (a failover taking longer is reported so)."""


def _p50_at_most(ms: float) -> Target:
    return Target(f"p50≤{ms:g} ms", lambda row: row.subject.p50_ns <= ms * 1e6)


def _writes_at_least_base() -> Target:
    return Target("≥base/s", lambda row: row.subject.ops_per_s >= row.baseline.ops_per_s)


#: Issue 11's targets, printed with pass/fail beside the numbers (never a test).
TARGETS: dict[str, Target] = {
    "1 writer (leader)": _p50_at_most(1.5),
    "1 writer (follower)": _p50_at_most(3.0),
    "64 writers": _writes_at_least_base(),
    "1024 writers": _writes_at_least_base(),
}


# -- the dref node process -------------------------------------------------------------------------
def dref_worker(conn: Connection, spec: dict[str, Any]) -> None:
    """A dref member (this process runs the node) serving the driver's commands."""
    # A member stopping while its peers still send logs each refused request with a traceback
    # (ClosedError); the benchmark stops all three at once, so keep that noise out of its output.
    logging.getLogger("dref_raft.transport").addFilter(_not_closed)
    from dref_raft.cli.event_loop import run

    with contextlib.suppress(EOFError, KeyboardInterrupt):
        run(_dref_main(conn, spec), spec["event_loop"])


def _not_closed(record: logging.LogRecord) -> bool:
    return not (record.exc_info and isinstance(record.exc_info[1], ClosedError))


async def _dref_main(conn: Connection, spec: dict[str, Any]) -> None:
    plain_options = {**spec["options"], "exactly_once": False}
    async with (
        dref.connect("raft", **spec["options"]) as ctx,
        dref.connect("raft", **plain_options) as plain,  # joins the same member
    ):
        node: Any = getattr(ctx.backend, "node")  # noqa: B009 (the member's RaftNode)
        probe: asyncio.Task[None] | None = None
        acks: list[tuple[float, float]] = []
        conn.send(("ready", None))
        while True:
            cmd, args = await asyncio.to_thread(conn.recv)
            if cmd == "stop":
                break
            if cmd == "leader?":
                result: Any = bool(node.is_leader)
            elif cmd == "run":
                sessions = args.pop("sessions", True)
                result = await _dref_run(ctx if sessions else plain, spec["index"], **args)
            elif cmd == "probe_start":
                probe = asyncio.create_task(_dref_probe(ctx, spec["index"], acks))
                result = None
            elif cmd == "probe_report":
                assert probe is not None
                probe.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probe
                result = first_ack_after(acks, args["kill_at"])
            else:
                raise ValueError(cmd)
            # In a thread: a large result fills the pipe until the driver reads it, and the driver
            # reads the nodes one by one; a blocking send here would stop this member's event
            # loop meanwhile (a leader frozen for the other nodes' last calls).
            await asyncio.to_thread(conn.send, ("ok", result))


async def _dref_run(
    ctx: dref.DRefContext,
    index: int,
    kind: str,
    tasks: int,
    go_at: float,
    warmup: float,
    seconds: float,
) -> tuple[int, list[int]]:
    start, end = go_at + warmup, go_at + warmup + seconds
    counts = [0] * tasks
    latencies: list[list[int]] = [[] for _ in range(tasks)]
    reader = ctx.ref("bench:read", type=int)
    if kind != "write":
        await reader.set_if_not_exist(0)
    consistency = "session" if kind == "session_read" else None

    async def loop(i: int) -> None:
        ref = ctx.ref(f"bench:w{index}:{i}", type=int) if kind == "write" else reader
        await asyncio.sleep(max(0.0, go_at - time.time()))
        clock = time.perf_counter_ns
        n = 0
        while (now := time.time()) < end:
            t0 = clock()
            if kind == "write":
                await ref.set(n)
            else:
                await ref.get(consistency=consistency)
            t1 = clock()
            n += 1
            if now >= start:
                counts[i] += 1
                latencies[i].append(t1 - t0)

    await asyncio.gather(*(loop(i) for i in range(tasks)))
    return sum(counts), [x for lat in latencies for x in lat]


PROBE_PERIOD = 0.005
"""During the failover, each surviving node starts a write this often (each its own task)."""


async def _dref_probe(ctx: dref.DRefContext, index: int, acks: list[tuple[float, float]]) -> None:
    """Start a write every `PROBE_PERIOD`; record (issued, acknowledged) wall times of each."""
    ref = ctx.ref(f"bench:probe{index}", type=int)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    pending: set[asyncio.Task[None]] = set()

    async def one(n: int) -> None:
        issued = time.time()
        with contextlib.suppress(DRefError):
            await ref.set(n)
            acks.append((issued, time.time()))

    try:
        n = 0
        while loop.time() < deadline:
            task = asyncio.create_task(one(n))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
            await asyncio.sleep(PROBE_PERIOD)
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def first_ack_after(acks: list[tuple[float, float]], kill_at: float) -> float | None:
    """Wall time of the first acknowledgement of a write issued after `kill_at` (None: none)."""
    after = [acked for issued, acked in acks if issued > kill_at]
    return min(after) if after else None


# -- the driver ------------------------------------------------------------------------------------
@dataclass
class NodeProc:
    process: BaseProcess
    conn: Connection

    def call(self, cmd: str, timeout: float = CALL_TIMEOUT, **args: Any) -> Any:
        self.conn.send((cmd, args))
        return self.answer(timeout)

    def answer(self, timeout: float = CALL_TIMEOUT) -> Any:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"node process {self.process.pid} did not answer in {timeout:g} s")
        status, result = self.conn.recv()
        assert status in ("ok", "ready"), status
        return result


@dataclass
class Cluster:
    """Three node processes of one side."""

    name: str
    nodes: list[NodeProc] = field(default_factory=list)

    def start(self, target: Callable[[Connection, dict[str, Any]], None], specs: list[Any]) -> None:
        context = multiprocessing.get_context("spawn")
        for spec in specs:
            parent, child = context.Pipe()
            process = context.Process(target=target, args=(child, spec), daemon=True)
            process.start()
            self.nodes.append(NodeProc(process, parent))
        for node in self.nodes:
            node.answer()  # "ready"

    def leader(self, timeout: float = 20.0) -> int:
        """Index of the node that leads (polled until `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, node in enumerate(self.nodes):
                if node.process.is_alive() and node.call("leader?"):
                    return i
            time.sleep(0.05)
        raise TimeoutError(f"{self.name}: no leader within {timeout:g} s")

    def run(
        self, kind: str, placement: list[int], seconds: float, *, sessions: bool = True
    ) -> Sample:
        """`placement[i]` tasks on node i; one measuring window; the pooled sample."""
        go_at = time.time() + 0.3
        busy = [(node, n) for node, n in zip(self.nodes, placement, strict=True) if n > 0]
        for node, n in busy:
            args: dict[str, Any] = {
                "kind": kind,
                "tasks": n,
                "go_at": go_at,
                "warmup": WARMUP,
                "seconds": seconds,
            }
            if not sessions:
                args["sessions"] = False
            node.conn.send(("run", args))
        ops, latencies = 0, []
        for node, _ in busy:
            count, lats = node.answer(WARMUP + seconds + CALL_TIMEOUT)
            ops += count
            latencies += lats
        return Sample(ops, int(seconds * 1e9), sorted(latencies))

    def failover(self) -> float:
        """SIGKILL the leader while the others write; seconds until the first acked write."""
        leader = self.leader()
        survivors = [n for i, n in enumerate(self.nodes) if i != leader]
        for node in survivors:
            node.call("probe_start")
        time.sleep(0.5)  # the probes are writing through the current leader
        victim = self.nodes[leader].process
        assert victim.pid is not None
        kill_at = time.time()
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=10)
        time.sleep(FAILOVER_WAIT)  # the probes keep writing meanwhile
        firsts = [node.call("probe_report", kill_at=kill_at) for node in survivors]
        acked = [t for t in firsts if t is not None]
        if not acked:
            raise TimeoutError(f"{self.name}: no write acknowledged after the leader was killed")
        return float(min(acked)) - kill_at

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(OSError, BrokenPipeError):
                if node.process.is_alive():
                    node.conn.send(("stop", {}))
        for node in self.nodes:
            node.process.join(timeout=10)
            if node.process.is_alive():
                node.process.kill()
                node.process.join(timeout=5)


def _free_ports(count: int) -> list[int]:
    from dref_raft.cli.local_cluster import free_ports

    return free_ports(count)


def dref_specs(
    tmp: Path, storage: str, event_loop: str, channel: bool = True
) -> list[dict[str, Any]]:
    ports = _free_ports(NODES)
    endpoints = ",".join(f"n{i}=127.0.0.1:{p}" for i, p in enumerate(ports))
    specs = []
    for i, port in enumerate(ports):
        options: dict[str, Any] = {
            "node_id": f"n{i}",
            "port": port,
            "endpoints": endpoints,
            "leader_wait": 20.0,
            "channel": channel,
        }
        if storage == "fsync":
            options["storage_dir"] = str(tmp / f"dref-n{i}")
        specs.append({"index": i, "options": options, "event_loop": event_loop})
    return specs


def pysyncobj_specs(tmp: Path) -> list[dict[str, Any]]:
    addresses = [f"127.0.0.1:{p}" for p in _free_ports(NODES)]
    return [
        {
            "self": address,
            "partners": [a for a in addresses if a != address],
            "journal": str(tmp / f"pso-n{i}.journal"),
        }
        for i, address in enumerate(addresses)
    ]


@dataclass
class SideResult:
    stats: dict[str, Stats]
    failover_s: float
    plain: dict[str, Stats] = field(default_factory=dict)
    """dref only: the `1 writer` rows from a context without sessions."""


def spread(count: int) -> list[int]:
    """`count` tasks spread evenly over the nodes (22 + 21 + 21 of 64)."""
    return [count // NODES + (1 if i < count % NODES else 0) for i in range(NODES)]


SESSION_ROW = "session readers"
"""dref only: `ref.get(consistency="session")`, served by each member from its own state."""


def measure_side(
    cluster: Cluster,
    inflight: list[int],
    readers: int,
    seconds: float,
    console: Console,
    session: bool = False,
) -> SideResult:
    stats: dict[str, Stats] = {}
    leader = cluster.leader()
    follower = (leader + 1) % NODES
    one_on = {"1 writer (leader)": leader, "1 writer (follower)": follower}
    phases: list[tuple[str, str, list[int]]] = [
        *(
            (name, "write", [1 if i == node else 0 for i in range(NODES)])
            for name, node in one_on.items()
        ),
        *((f"{n} writers", "write", spread(n)) for n in inflight),
        (f"{readers} readers", "read", spread(readers)),
    ]
    if session:
        phases.append((f"{readers} {SESSION_ROW}", "session_read", spread(readers)))
    for name, kind, placement in phases:
        sample = cluster.run(kind, placement, seconds)
        stats[name] = Stats.of([sample])
        console.print(
            f"  {cluster.name:<9} {name:<20} {ops_text(sample.ops_per_s):>6}/s", highlight=False
        )
    plain: dict[str, Stats] = {}
    if cluster.name == "dref":  # the cost of sessions: with and without, alternated, best of 3
        for name, node in one_on.items():
            placement = [1 if i == node else 0 for i in range(NODES)]
            best: dict[bool, Sample] = {}
            for _ in range(3):
                for sessions in (True, False):
                    sample = cluster.run("write", placement, seconds, sessions=sessions)
                    if sessions not in best or sample.ops_per_s > best[sessions].ops_per_s:
                        best[sessions] = sample
            stats[name] = Stats.of([best[True]])
            plain[name] = Stats.of([best[False]])
            console.print(
                f"  {cluster.name:<9} {name:<20} sessions {ops_text(best[True].ops_per_s)}/s, "
                f"without {ops_text(best[False].ops_per_s)}/s (best of 3, alternated)",
                highlight=False,
            )
    failover = cluster.failover()
    console.print(f"  {cluster.name:<9} failover {failover * 1000:.0f} ms", highlight=False)
    return SideResult(stats, failover, plain)


def run_side(
    name: str,
    target: Callable[[Connection, dict[str, Any]], None],
    specs: list[Any],
    inflight: list[int],
    readers: int,
    seconds: float,
    console: Console,
    session: bool = False,
) -> SideResult:
    cluster = Cluster(name)
    try:
        cluster.start(target, specs)
        return measure_side(cluster, inflight, readers, seconds, console, session)
    finally:
        cluster.stop()


def failover_text(dref_s: float, base_s: float | None) -> str:
    base = "—" if base_s is None else f"{base_s * 1000:.0f} ms"
    return (
        f"failover (leader kill -9 → first acknowledged write issued after it): "
        f"{SUBJECT} {dref_s * 1000:.0f} ms, {BASELINE} {base}"
    )


def session_text(stats: dict[str, Stats], readers: int) -> str:
    """dref's session reads against its own linearizable reads (target: at least 3x)."""
    session, linear = stats[f"{readers} {SESSION_ROW}"], stats[f"{readers} readers"]
    ratio = session.ops_per_s / linear.ops_per_s
    verdict = "pass" if ratio >= 3 else "FAIL"
    return (
        f"dref session reads (each member's own state): {ops_text(session.ops_per_s)}/s, p50 "
        f"{session.p50_ns / 1e3:.0f} µs = {ratio:.1f}x its linearizable reads "
        f"({verdict} ≥3x)"
    )


def single_side_table(stats: dict[str, Stats]) -> Table:
    table = Table(title=TITLE, title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("op", "ops/s", "p50", "p99"):
        table.add_column(column, justify="left" if column == "op" else "right")
    for name, s in stats.items():
        table.add_row(name, ops_text(s.ops_per_s), f"{s.p50_ns / 1e3:.0f}", f"{s.p99_ns / 1e3:.0f}")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring window per row")
    parser.add_argument(
        "--inflight",
        default="64,1024",
        help="comma-separated counts of writes in flight spread over the nodes (besides the "
        "one-writer rows)",
    )
    parser.add_argument("--readers", type=int, default=64, help="concurrent readers")
    parser.add_argument("--dref-storage", choices=("fsync", "ram"), default="fsync")
    parser.add_argument(
        "--event-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="dref nodes' loop (auto: uvloop when installed, as `dref raft node`)",
    )
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="also write results here")
    parser.add_argument("--no-pysyncobj", action="store_true", help="run the dref side only")
    parser.add_argument(
        "--no-channel", action="store_true", help="dref with channel=false (the gRPC stream)"
    )
    parser.add_argument(
        "--fairness", action="store_true", help="only the fairness row (benchmarks/_fairness.py)"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="SRC",
        help="with --fairness: also run a checkout of another commit (its members too)",
    )
    parser.add_argument(
        "--cas",
        action="store_true",
        help="with --fairness: the baseline is this tree with fair_updates = false (today's "
        "compare-and-set with backoff), in alternating rounds",
    )
    parser.add_argument(
        "--members",
        action="store_true",
        help="with --fairness: the contenders are the cluster's member processes (4 tasks "
        "each), not client processes",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="with --baseline or --cas: rounds per side"
    )
    args = parser.parse_args(argv)
    if args.fairness:
        from _fairness import compare_options, compare_rows, fairness_row

        options: dict[str, Any] = {"members": NODES} if args.members else {"local_cluster": NODES}
        seconds = max(args.seconds, 3.0)
        shape = f"{NODES} member processes x 4 tasks" if args.members else "4 x 4 tasks"
        if args.cas:
            cas = {**options, "fair_updates": False}
            label = "fair_updates=false (compare-and-set with backoff)"
            rows = compare_options(
                "raft", options, cas, label=label, seconds=seconds, rounds=args.rounds, shape=shape
            )
            print(rows)
        elif args.baseline is None:
            print(fairness_row("raft", options, seconds=seconds, shape=shape))
        else:
            print(compare_rows("raft", options, args.baseline, seconds=seconds, rounds=args.rounds))
        return 0
    try:
        inflight = [int(n) for n in args.inflight.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--inflight: comma-separated integers, not {args.inflight!r}")
    if args.seconds <= 0 or args.readers < NODES or any(n < NODES for n in inflight):
        parser.error(f"--seconds must be positive, --readers and --inflight at least {NODES}")
    console = Console(width=max(Console().width, 130))
    have_pso = importlib.util.find_spec("pysyncobj") is not None and not args.no_pysyncobj
    meta: dict[str, Any] = {
        "benchmark": "raft",
        "python": platform.python_version(),
        "dref": dref.__version__,
        "seconds": args.seconds,
        "inflight": inflight,
        "readers": args.readers,
        "dref_storage": args.dref_storage,
        "event_loop": _loop_name(args.event_loop),
        "channel": not args.no_channel,
        "cpus": os.cpu_count(),
    }
    console.print(
        f"Python {meta['python']}, dref {meta['dref']}, {meta['cpus']} CPUs; {NODES} processes "
        f"per side; {inflight} writes in flight; {args.readers} readers; {args.seconds:g} s per "
        "row; dref storage "
        f"{args.dref_storage}; dref event loop {meta['event_loop']}; "
        f"channel {'on' if meta['channel'] else 'off'}",
        highlight=False,
    )
    if not have_pso:
        why = "--no-pysyncobj" if args.no_pysyncobj else "pysyncobj is not installed"
        console.print(f"[yellow]PySyncObj side skipped ({why}; pip install pysyncobj)[/]")
    with tempfile.TemporaryDirectory(prefix="dref-raft-bench-") as tmp_name:
        tmp = Path(tmp_name)
        ours = run_side(
            "dref",
            dref_worker,
            dref_specs(tmp, args.dref_storage, args.event_loop, not args.no_channel),
            inflight,
            args.readers,
            args.seconds,
            console,
            session=True,
        )
        base: SideResult | None = None
        if have_pso:
            from _pysyncobj_node import worker

            meta["pysyncobj"] = _version("pysyncobj")
            base = run_side(
                "PySyncObj",
                worker,
                pysyncobj_specs(tmp),
                inflight,
                args.readers,
                args.seconds,
                console,
            )
    if base is not None:
        rows = [
            Row(name, baseline=base.stats[name], subject=s, target=TARGETS.get(name))
            for name, s in ours.stats.items()
            if name in base.stats
        ]
        console.print(comparison_table(rows, title=TITLE, baseline=BASELINE, subject=SUBJECT))
    else:
        rows = []
        console.print(single_side_table(ours.stats))
    console.print(failover_text(ours.failover_s, base.failover_s if base else None))
    session_rows = [
        Row(name, baseline=stats, subject=ours.stats[name], target=max_overhead(1.1))
        for name, stats in ours.plain.items()
    ]
    console.print(
        comparison_table(
            session_rows,
            title="exactly-once writes: with sessions (with) vs exactly_once=false (without)",
            baseline="without",
            subject="with",
        )
    )
    session_ratio = session_text(ours.stats, args.readers)
    console.print(session_ratio, highlight=False)
    meta["session_reads"] = session_ratio
    if args.json is not None:
        meta["failover_ms"] = {
            SUBJECT: round(ours.failover_s * 1000, 1),
            BASELINE: None if base is None else round(base.failover_s * 1000, 1),
        }
        if rows:
            data = results_json(rows, baseline=BASELINE, subject=SUBJECT, **meta)
        else:
            data = {**meta, "results": {k: v.as_dict() for k, v in ours.stats.items()}}
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        console.print(f"results written to {args.json}")
    return 0


def _loop_name(choice: str) -> str:
    """The loop the dref nodes really run (`auto` resolved)."""
    from dref_raft.cli.event_loop import loop_factory

    return "asyncio" if loop_factory(choice) is None else "uvloop"  # type: ignore[arg-type]


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
