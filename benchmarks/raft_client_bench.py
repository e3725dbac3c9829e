"""dref-raft client mode against etcd 3.4, side by side: one client process, 3 members each.

    python benchmarks/raft_client_bench.py [--seconds 3] [--json out.json] [--no-etcd]
                                           [--no-stream] [--dref-storage fsync|ram]

Each side is a 3-member cluster on 127.0.0.1, one process per member, fsync on: dref members are
`python -m dref_raft --storage-dir ...`, etcd members are Debian's `etcd` 3.4 (`apt-get install
-y etcd-server`; without it the etcd side is skipped with a message). The load runs in this
process, which is a member of neither: dref through `dref.connect("raft", mode="client")`,
etcd through its gRPC API (`etcdserverpb.KV`, one channel to the leader, like dref's client;
message classes built here from a minimal descriptor, no generated code committed). Rows:

- `write xN`: N tasks each writing its own key in a loop (dref `ref.set(n)`, etcd `Put`),
  acknowledged once committed;
- `read xN`: N tasks reading one key in a loop, linearizable, through the leader (dref
  `ref.get()`: ReadIndex on the leader; etcd `Range` with `serializable=false`, its default:
  ReadIndex too);
- `any-read xN`: the same linearizable reads served by a follower (dref `read_from="any"`: the
  context reads from one follower, which asks the leader for its read index, one request per
  batch, and serves from its own state; etcd: a channel to a follower, which runs ReadIndex with
  its leader the same way);
- `session-read xN`: reads served by a follower from its own state with no leader round (dref
  `ref.get(consistency="session")` with `read_from="any"`: read your writes and monotonic reads;
  etcd `serializable=true` on a follower: its local state, no such promise).

Rows alternate the sides (etcd first), each after `WARMUP` seconds of the same load. The ratio
column is etcd's ops/s ÷ dref's. Each dref row also prints the CPU µs per operation of this
process, the leader and the followers (from /proc, over the measuring window). `--no-stream`
runs the dref client with `stream=false` (unary `DRefRaft` calls, as before `DRefStream`).
Nothing here is a test; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from _common import Row, Sample, Stats, Target, comparison_table, max_overhead, results_json
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from rich.console import Console

import dref

NODES = 3
WARMUP = 0.5
"""Seconds of the same load before each measuring window."""
START_TIMEOUT = 30.0
ROWS = (
    ("write", 1),
    ("write", 64),
    ("write", 1024),
    ("read", 1),
    ("read", 64),
    ("any-read", 64),
    ("session-read", 64),
)
TITLE = "dref-raft client mode (dref) vs etcd 3.4 (etcd): 3 members, fsync, 1 client process; µs"

Op = Callable[[int, int], Awaitable[object]]
"""One operation of task `i`, iteration `n`."""


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


# -- load ------------------------------------------------------------------------------------------
async def run_row(
    op: Op, tasks: int, seconds: float, cpu: Callable[[], dict[str, float]] | None = None
) -> tuple[Sample, dict[str, float]]:
    """`tasks` loops of `op` for `WARMUP` + `seconds`; the ops and latencies of the window, and
    the CPU seconds `cpu()` reports spent in the window (by process)."""
    loop = asyncio.get_running_loop()
    start = loop.time() + WARMUP
    end = start + seconds
    readings: list[dict[str, float]] = []
    if cpu is not None:
        loop.call_at(start, lambda: readings.append(cpu()))
        loop.call_at(end, lambda: readings.append(cpu()))
    counts = [0] * tasks
    latencies: list[list[int]] = [[] for _ in range(tasks)]
    clock = time.perf_counter_ns

    async def one(i: int) -> None:
        n = 0
        mine = latencies[i]
        while (now := loop.time()) < end:
            t0 = clock()
            await op(i, n)
            t1 = clock()
            n += 1
            if now >= start:
                counts[i] += 1
                mine.append(t1 - t0)

    began = clock()
    await asyncio.gather(*(one(i) for i in range(tasks)))
    elapsed = clock() - began - int(WARMUP * 1e9)
    spent = {}
    if len(readings) == 2:
        spent = {who: readings[1][who] - readings[0][who] for who in readings[0]}
    return Sample(sum(counts), elapsed, [x for lat in latencies for x in lat]), spent


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- dref ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def dref_cluster(
    tmp: Path, storage: str, channel: bool = True
) -> Iterator[tuple[str, dict[str, int]]]:
    """3 `python -m dref_raft` members; yields the client's `endpoints` and their pids by id."""
    ports = free_ports(NODES)
    endpoints = ",".join(f"d{i}=127.0.0.1:{p}" for i, p in enumerate(ports))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DREF_")}
    procs: list[subprocess.Popen[str]] = []
    try:
        for i, port in enumerate(ports):
            args = ["--node-id", f"d{i}", "--port", str(port), "--endpoints", endpoints]
            if storage == "fsync":
                args += ["--storage-dir", str(tmp / f"d{i}")]
            if not channel:
                args.append("--no-channel")
            proc = subprocess.Popen(
                [sys.executable, "-m", "dref_raft", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
            )
            procs.append(proc)
        for proc in procs:
            assert proc.stdout is not None
            if "serving" not in proc.stdout.readline():
                raise RuntimeError("a dref member did not start")
        yield endpoints, {f"d{i}": proc.pid for i, proc in enumerate(procs)}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class DrefSide:
    def __init__(self, ctx: dref.DRefContext, any_ctx: dref.DRefContext) -> None:
        self.ctx = ctx
        self.reader = ctx.ref("bench:read", type=int)
        self.any_reader = any_ctx.ref("bench:read", type=int)
        """The same key through a context with `read_from="any"`."""

    async def prepare(self) -> None:
        await self.reader.set(0)
        await self.any_reader.set(0)  # its session has seen a write: session reads wait for it

    def op(self, kind: str, tasks: int) -> Op:
        if kind in ("read", "any-read"):
            reader = self.reader if kind == "read" else self.any_reader

            async def read(i: int, n: int) -> object:
                return await reader.get()

            return read
        if kind == "session-read":
            any_reader = self.any_reader

            async def session_read(i: int, n: int) -> object:
                return await any_reader.get(consistency="session")

            return session_read
        refs = [self.ctx.ref(f"bench:w{i}", type=int) for i in range(tasks)]

        async def write(i: int, n: int) -> object:
            await refs[i].set(n)
            return None

        return write


# -- etcd ------------------------------------------------------------------------------------------
def etcd_classes() -> dict[str, Any]:
    """The few `etcdserverpb` messages used here, from a minimal descriptor (field numbers as in
    etcd's rpc.proto / kv.proto)."""
    t = descriptor_pb2.FieldDescriptorProto
    u64, i64, byts, boolean, text, msg = (
        t.TYPE_UINT64,
        t.TYPE_INT64,
        t.TYPE_BYTES,
        t.TYPE_BOOL,
        t.TYPE_STRING,
        t.TYPE_MESSAGE,
    )
    spec: dict[str, list[tuple[str, int, int, str | None, bool]]] = {
        "ResponseHeader": [
            ("cluster_id", 1, u64, None, False),
            ("member_id", 2, u64, None, False),
            ("revision", 3, i64, None, False),
            ("raft_term", 4, u64, None, False),
        ],
        "PutRequest": [("key", 1, byts, None, False), ("value", 2, byts, None, False)],
        "PutResponse": [("header", 1, msg, "ResponseHeader", False)],
        "RangeRequest": [("key", 1, byts, None, False), ("serializable", 7, boolean, None, False)],
        "KeyValue": [
            ("key", 1, byts, None, False),
            ("create_revision", 2, i64, None, False),
            ("mod_revision", 3, i64, None, False),
            ("version", 4, i64, None, False),
            ("value", 5, byts, None, False),
            ("lease", 6, i64, None, False),
        ],
        "RangeResponse": [
            ("header", 1, msg, "ResponseHeader", False),
            ("kvs", 2, msg, "KeyValue", True),
            ("more", 3, boolean, None, False),
            ("count", 4, i64, None, False),
        ],
        "StatusRequest": [],
        "StatusResponse": [
            ("header", 1, msg, "ResponseHeader", False),
            ("version", 2, text, None, False),
            ("dbSize", 3, i64, None, False),
            ("leader", 4, u64, None, False),
            ("raftIndex", 5, u64, None, False),
            ("raftTerm", 6, u64, None, False),
        ],
    }
    proto = descriptor_pb2.FileDescriptorProto(
        name="dref_bench_etcd.proto", package="etcdserverpb", syntax="proto3"
    )
    for name, fields in spec.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind, type_name, repeated in fields:
            field = message.field.add(name=field_name, number=number, type=kind)
            field.label = t.LABEL_REPEATED if repeated else t.LABEL_OPTIONAL
            if type_name is not None:
                field.type_name = f".etcdserverpb.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"etcdserverpb.{name}"))
        for name in spec
    }


@contextlib.contextmanager
def etcd_cluster(etcd: str, tmp: Path) -> Iterator[list[str]]:
    """3 etcd members (fsync is etcd's default); yields their client addresses."""
    client_ports, peer_ports = free_ports(NODES), free_ports(NODES)
    cluster = ",".join(f"e{i}=http://127.0.0.1:{p}" for i, p in enumerate(peer_ports))
    procs = []
    try:
        for i in range(NODES):
            client = f"http://127.0.0.1:{client_ports[i]}"
            peer = f"http://127.0.0.1:{peer_ports[i]}"
            args = [
                etcd,
                f"--name=e{i}",
                f"--data-dir={tmp / f'e{i}'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster={cluster}",
                "--initial-cluster-state=new",
                "--initial-cluster-token=dref-bench",
                "--logger=zap",
                "--log-level=error",
            ]
            procs.append(
                subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        yield [f"127.0.0.1:{p}" for p in client_ports]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class EtcdSide:
    def __init__(self, addresses: list[str]) -> None:
        import grpc

        self.grpc = grpc
        self.pb = etcd_classes()
        self.addresses = addresses
        self.channel: Any = None
        self.follower_channel: Any = None
        """A channel to one follower (the any-read and session-read rows)."""

    def _unary(self, channel: Any, path: str, request: str, response: str) -> Any:
        return channel.unary_unary(
            path,
            request_serializer=self.pb[request].SerializeToString,
            response_deserializer=self.pb[response].FromString,
        )

    async def prepare(self) -> None:
        """Wait for a leader and open the channel to it."""
        pb = self.pb
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            for address in self.addresses:
                channel = self.grpc.aio.insecure_channel(address)
                status = self._unary(
                    channel, "/etcdserverpb.Maintenance/Status", "StatusRequest", "StatusResponse"
                )
                try:
                    answer = await status(pb["StatusRequest"](), timeout=1.0)
                except self.grpc.aio.AioRpcError:
                    await channel.close()
                    continue
                if answer.leader and answer.leader == answer.header.member_id:
                    self.channel = channel
                    self.put = self._unary(
                        channel, "/etcdserverpb.KV/Put", "PutRequest", "PutResponse"
                    )
                    self.range = self._unary(
                        channel, "/etcdserverpb.KV/Range", "RangeRequest", "RangeResponse"
                    )
                    await self.put(pb["PutRequest"](key=b"bench:read", value=b"0"), timeout=5)
                    follower = next(a for a in self.addresses if a != address)
                    self.follower_channel = self.grpc.aio.insecure_channel(follower)
                    self.follower_range = self._unary(
                        self.follower_channel,
                        "/etcdserverpb.KV/Range",
                        "RangeRequest",
                        "RangeResponse",
                    )
                    return
                await channel.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd elected no leader within {START_TIMEOUT:g} s")
            await asyncio.sleep(0.1)

    def op(self, kind: str, tasks: int) -> Op:
        put_request, range_request = self.pb["PutRequest"], self.pb["RangeRequest"]
        if kind == "read":
            range_, request = self.range, range_request(key=b"bench:read")

            async def read(i: int, n: int) -> object:
                return (await range_(request, timeout=10)).kvs[0].value

            return read
        if kind in ("any-read", "session-read"):
            follower_range = self.follower_range
            local = kind == "session-read"
            on_follower = range_request(key=b"bench:read", serializable=local)

            async def read_follower(i: int, n: int) -> object:
                return (await follower_range(on_follower, timeout=10)).kvs[0].value

            return read_follower
        put = self.put
        keys = [b"bench:w%d" % i for i in range(tasks)]

        async def write(i: int, n: int) -> object:
            return await put(put_request(key=keys[i], value=b"%d" % n), timeout=10)

        return write

    async def aclose(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.follower_channel is not None:
            await self.follower_channel.close()


# -- report ----------------------------------------------------------------------------------------
def p50_within(factor: float) -> Target:
    """dref's p50 latency is at most `factor` times etcd's."""
    return Target(
        f"p50≤{factor:g}x", lambda row: row.subject.p50_ns <= factor * row.baseline.p50_ns
    )


TARGETS: dict[str, Target] = {
    "write x1": p50_within(2),
    "write x64": max_overhead(2),
    "read x64": max_overhead(2),
}
"""The issue's targets: 64 in flight at least half etcd's ops/s; 1 in flight p50 within 2x."""


RATIOS = (("read x64", "write x64", 3.0), ("session-read x64", "read x64", 3.0))
"""dref's own targets: (row, row it is compared to, at least this many times its ops/s)."""


def member_cpu(ctx: dref.DRefContext, pids: dict[str, int]) -> Callable[[], dict[str, float]]:
    """CPU seconds so far of this process, the leader and the followers (summed)."""
    leader = getattr(ctx.backend, "_leader", None)

    def read() -> dict[str, float]:
        followers = sum(cpu_seconds(pid) for node, pid in pids.items() if node != leader)
        own = time.process_time()
        if leader not in pids:
            return {"client": own, "members": followers}
        return {"client": own, "leader": cpu_seconds(pids[leader]), "followers": followers}

    return read


async def measure(
    args: argparse.Namespace, console: Console, tmp: Path
) -> tuple[dict[str, dict[str, Stats]], dict[str, dict[str, float]]]:
    """Every row on both sides; the dref rows' CPU µs per op by process too."""
    etcd = None if args.no_etcd else shutil.which("etcd")
    if etcd is None:
        why = "--no-etcd" if args.no_etcd else "no etcd binary on PATH"
        console.print(f"[yellow]etcd side skipped ({why}; apt-get install -y etcd-server)[/]")
    results: dict[str, dict[str, Stats]] = {"dref": {}, "etcd": {}}
    cpu_per_op: dict[str, dict[str, float]] = {}
    with contextlib.ExitStack() as stack:
        endpoints, pids = stack.enter_context(
            dref_cluster(tmp, args.dref_storage, not args.no_channel)
        )
        etcd_side = None
        if etcd is not None:
            etcd_side = EtcdSide(stack.enter_context(etcd_cluster(etcd, tmp)))
            await etcd_side.prepare()
        options: dict[str, Any] = {"mode": "client", "endpoints": endpoints}
        if args.no_stream:
            options["stream"] = False
        if args.no_channel:
            options["channel"] = False
        async with (
            dref.connect("raft", **options) as ctx,
            dref.connect("raft", **options, read_from="any") as any_ctx,
        ):
            dref_side = DrefSide(ctx, any_ctx)
            await dref_side.prepare()
            for kind, tasks in ROWS:
                name = f"{kind} x{tasks}"
                sides: list[tuple[str, Any]] = [("etcd", etcd_side), ("dref", dref_side)]
                for label, side in sides:
                    if side is None:
                        continue
                    cpu = None
                    if label == "dref":
                        cpu = member_cpu(ctx, pids)
                    sample, spent = await run_row(side.op(kind, tasks), tasks, args.seconds, cpu)
                    results[label][name] = Stats.of([sample])
                    per_op = "".join(
                        f"  {who} {1e6 * s / max(1, sample.ops):5.0f}" for who, s in spent.items()
                    )
                    if per_op:
                        per_op = "   CPU µs/op:" + per_op
                        cpu_per_op[name] = {
                            who: 1e6 * s / max(1, sample.ops) for who, s in spent.items()
                        }
                    console.print(
                        f"  {name:<16} {label}: {sample.ops_per_s:9.0f} ops/s{per_op}",
                        highlight=False,
                    )
        if etcd_side is not None:
            await etcd_side.aclose()
    return results, cpu_per_op


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring window per row")
    parser.add_argument("--dref-storage", choices=("fsync", "ram"), default="fsync")
    parser.add_argument("--no-etcd", action="store_true", help="run the dref side only")
    parser.add_argument("--no-stream", action="store_true", help="dref client with stream=false")
    parser.add_argument(
        "--no-channel", action="store_true", help="dref with channel=false (the gRPC stream)"
    )
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="also write results here")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    console = Console(width=max(Console().width, 130))
    meta: dict[str, Any] = {
        "benchmark": "raft_client",
        "python": platform.python_version(),
        "dref": dref.__version__,
        "seconds": args.seconds,
        "dref_storage": args.dref_storage,
        "dref_stream": not args.no_stream,
        "dref_channel": not args.no_channel,
        "cpus": os.cpu_count(),
    }
    console.print(
        f"Python {meta['python']}, dref {meta['dref']}, {meta['cpus']} CPUs; {NODES} members per "
        f"side; {args.seconds:g} s per row; dref storage {args.dref_storage}, "
        f"stream {'on' if meta['dref_stream'] else 'off'}, "
        f"channel {'on' if meta['dref_channel'] else 'off'}",
        highlight=False,
    )
    with tempfile.TemporaryDirectory(prefix="dref-client-bench-") as tmp:
        results, cpu_per_op = asyncio.run(measure(args, console, Path(tmp)))
    ours, base = results["dref"], results["etcd"]
    data: dict[str, Any]
    if base:
        rows = [Row(n, baseline=base[n], subject=s, target=TARGETS.get(n)) for n, s in ours.items()]
        console.print(comparison_table(rows, title=TITLE, baseline="etcd", subject="dref"))
        data = results_json(rows, baseline="etcd", subject="dref", **meta)
    else:
        data = {**meta, "results": {n: s.as_dict() for n, s in ours.items()}}
        for name, stats in ours.items():
            console.print(
                f"{name:<11} {stats.ops_per_s:9.0f} ops/s  p50 {stats.p50_ns / 1e3:9.0f} µs  "
                f"p99 {stats.p99_ns / 1e3:9.0f} µs",
                highlight=False,
            )
    for name, over, target in RATIOS:
        if name in ours and over in ours:
            ratio = ours[name].ops_per_s / ours[over].ops_per_s
            console.print(f"dref {name} ÷ dref {over}: {ratio:.2f}x (target ≥ {target:g}x)")
    data["dref_cpu_us_per_op"] = cpu_per_op
    if args.json is not None:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        console.print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
