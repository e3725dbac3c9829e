"""dref's Redis backend against hand-written redis-py code, side by side on one private server.

    python benchmarks/redis_bench.py [--seconds 2] [--json out.json] [--no-plot] [--check]
        [--exactly-once]

Rows (the baseline is named in the row): `set`, `update` and lock acquire+release with
exactly-once writes (the default) against the same with `exactly_once = false`, alternating, in
operations per CPU second of client and server (`--exactly-once`: only these rows);
`set` and `update` with revisions (the default
`history`) against the same with `history = 0` (the cost of revisions); `get` against redis-py
`GET` + msgpack with the same
number of connections; `update` (dref's native compare-and-set) against a hand-written
GET + EVALSHA compare-and-set loop, against upstream's `modify` command for command (redis-py:
lock `SET NX EX` + `PUBLISH`, `GET`, `SET` + `PUBLISH`, `DEL` + `PUBLISH`) and against dref's
own upstream-compatible lock strategy
(`modify_strategy="lock"`), uncontended and with 8 tasks over 2 processes on one key; lock
acquire+release against redis-py's `Lock`, uncontended (a target) and among 4 contending processes
(for information; the target there is fairness, the spread of acquisitions). The script starts its
own redis-server on a free port. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import redis
import redis.asyncio as aioredis
from _common import Row, Sample, Stats, Target, comparison_table, results_json, write_plot
from _redis_server import RedisProcess
from rich.console import Console

import dref
from dref import change_payload
from dref.changes import ChangeEvent

TITLE = "dref redis (dref) vs redis-py (base), one private redis-server; latencies in µs"
BASELINE = "base"
SUBJECT = "dref"
OUT_DIR = Path(__file__).resolve().parent / "out"
CONNECTIONS = 8
CHANNEL = "dref-change"
CAS_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


def at_least(ratio: float) -> Target:
    """dref reaches at least `ratio` times the baseline's ops/s."""
    return Target(f"≥{ratio:g}x base", lambda row: row.baseline.ops_per_s * ratio <= _ops(row))


def _ops(row: Row) -> float:
    return row.subject.ops_per_s


def _inc(n: int) -> int:
    return n + 1


# -- measuring ------------------------------------------------------------------------------------
Op = Callable[[], Awaitable[object]]


async def run_tasks(op: Op, tasks: int, seconds: float) -> Sample:
    """Run `op` in `tasks` concurrent loops for `seconds`; every call is timed."""
    clock = time.perf_counter_ns
    end = clock() + int(seconds * 1e9)
    latencies: list[int] = []

    async def loop() -> None:
        append = latencies.append
        while True:
            t0 = clock()
            await op()
            t1 = clock()
            append(t1 - t0)
            if t1 >= end:
                return

    begin = clock()
    await asyncio.gather(*(loop() for _ in range(tasks)))
    return Sample(len(latencies), clock() - begin, latencies)


async def warm(op: Op, n: int = 200) -> None:
    for _ in range(n):
        await op()


# -- the two sides --------------------------------------------------------------------------------
def raw_client(url: str) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=CONNECTIONS)
    return aioredis.Redis(connection_pool=pool)


def connect(url: str, **options: Any) -> dref.Connector:
    return dref.connect("redis", url=url, max_connections=CONNECTIONS, **options)


async def side_op(kind: str, url: str, key: str, stack: Any) -> Op:
    """The operation `kind` on one side, opened inside `stack` (an AsyncExitStack)."""
    if kind == "base-get":
        r = raw_client(url)
        stack.push_async_callback(r.aclose)
        unpackb = msgpack.unpackb
        return lambda: _base_get(r, key, unpackb)
    if kind == "base-cas":
        r = raw_client(url)
        stack.push_async_callback(r.aclose)
        script = r.register_script(CAS_LUA)
        return lambda: _base_cas(r, script, key)
    if kind == "base-upstream-modify":
        r = raw_client(url)
        stack.push_async_callback(r.aclose)
        return lambda: _base_upstream_modify(r, key)
    if kind == "base-lock":
        r = raw_client(url)
        stack.push_async_callback(r.aclose)
        return lambda: _base_lock(r, key)
    options: dict[str, Any] = {"modify_strategy": "lock"} if kind == "dref-update-lock" else {}
    if kind.endswith("-no-history"):  # revisions off: writes exactly as upstream
        options["history"] = 0
        kind = kind.removesuffix("-no-history")
    if kind.endswith("-no-session"):  # exactly-once writes off: no session record
        options["exactly_once"] = False
        kind = kind.removesuffix("-no-session")
    ctx: dref.DRefContext = await stack.enter_async_context(connect(url, **options))
    ref: dref.DRef[int] = ctx.ref(key, type=int)
    if kind == "dref-get":
        return ref.get
    if kind in ("dref-update", "dref-update-lock"):
        return lambda: ref.update(_inc)
    if kind == "dref-set":
        return lambda: ref.set(1)
    if kind == "dref-lock":
        return lambda: _dref_lock(ctx, key)
    raise ValueError(kind)


async def _base_get(r: aioredis.Redis, key: str, unpackb: Any) -> object:
    return unpackb(await r.get(key))


async def _base_cas(r: aioredis.Redis, script: Any, key: str) -> None:
    while True:
        old = await r.get(key)
        new = msgpack.packb(msgpack.unpackb(old) + 1)
        if await script(keys=[key], args=[old, new]):
            return


async def _base_upstream_modify(r: aioredis.Redis, key: str) -> None:
    """Upstream's `modify` command for command (docs/protocol.md#api-modify, #redis-commands): 7
    round trips uncontended."""
    lock = f"lock:{key}"
    token = os.urandom(8)
    while not await r.set(lock, token, nx=True, ex=20):  # noqa: ASYNC110 (upstream's polling)
        await asyncio.sleep(0.05)  # upstream's Rust probe; Scala waits for the delete event
    await r.publish(CHANNEL, _payload(lock, token))
    new = msgpack.packb(msgpack.unpackb(await r.get(key)) + 1)
    await r.set(key, new)
    await r.publish(CHANNEL, _payload(key, new))
    await r.delete(lock)
    await r.publish(CHANNEL, _payload(lock, None))


def _payload(name: str, value: bytes | None) -> bytes:
    return change_payload.encode(ChangeEvent(name, value))


async def _base_lock(r: aioredis.Redis, key: str) -> None:
    async with r.lock(key, timeout=20, sleep=0.1):
        pass


async def _dref_lock(ctx: dref.DRefContext, key: str) -> None:
    async with ctx.lock(key, ttl=20):
        pass


async def measure_side(
    kind: str, url: str, key: str, tasks: int, seconds: float, barrier: Any = None
) -> Sample:
    """`kind` alone; with a `barrier`, start measuring once every process has warmed up."""
    async with AsyncExitStack() as stack:
        op = await side_op(kind, url, key, stack)
        await warm(op)
        if barrier is not None:
            await asyncio.to_thread(barrier.wait)
        return await run_tasks(op, tasks, seconds)


async def measure_pair(
    base_kind: str, dref_kind: str, url: str, key: str, seconds: float, rounds: int = 10
) -> tuple[Stats, Stats]:
    """Both sides opened together, one task each, in alternating rounds of `seconds / rounds`:
    a machine whose load changes slows both alike (see `pooled`)."""
    async with AsyncExitStack() as stack:
        ops = [await side_op(kind, url, key, stack) for kind in (base_kind, dref_kind)]
        for op in ops:
            await warm(op)
        samples: list[list[Sample]] = [[], []]
        for i in range(rounds):
            for side in (0, 1) if i % 2 == 0 else (1, 0):
                samples[side].append(await run_tasks(ops[side], 1, seconds / rounds))
    return pooled(samples[0]), pooled(samples[1])


def _process_main(kind: str, url: str, key: str, tasks: int, seconds: float, barrier: Any) -> Any:
    sample = asyncio.run(measure_side(kind, url, key, tasks, seconds, barrier))
    return sample.ops, sample.elapsed_ns, sample.latencies_ns[::10]


def measure_processes(
    pool: Any, manager: Any, kind: str, url: str, key: str, procs: int, tasks: int, seconds: float
) -> list[Sample]:
    """`procs` processes of `tasks` tasks each; they start measuring together, once all of them
    have warmed up (a warm-up of contending processes can take a while). One Sample each."""
    barrier = manager.Barrier(procs)
    args = [(kind, url, key, tasks, seconds, barrier)] * procs
    return [Sample(ops, ns, lat) for ops, ns, lat in pool.starmap(_process_main, args)]


def combined(samples: list[Sample]) -> Stats:
    """Processes ran side by side: their ops/s add up."""
    return _stats(sum(s.ops_per_s for s in samples), samples)


def pooled(samples: list[Sample]) -> Stats:
    """Rounds ran one after the other, interleaved with the other side's: all operations over
    all the time (a per-side median would compare different moments of a changing load)."""
    return _stats(sum(s.ops for s in samples) * 1e9 / sum(s.elapsed_ns for s in samples), samples)


def _stats(ops_per_s: float, samples: list[Sample]) -> Stats:
    latencies = sorted(x for s in samples for x in s.latencies_ns)
    return Stats(
        ops_per_s=ops_per_s,
        p50_ns=float(latencies[len(latencies) // 2]),
        p99_ns=float(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]),
        rounds=[s.ops_per_s for s in samples],
    )


# -- the benchmark --------------------------------------------------------------------------------
@dataclass
class Fairness:
    side: str
    counts: list[int]

    @property
    def ratio(self) -> float:
        return min(self.counts) / max(self.counts) if max(self.counts) else 0.0


async def seed(url: str, keys: list[str]) -> None:
    r = aioredis.Redis.from_url(url)
    for key in keys:
        await r.set(key, msgpack.packb(0))
    await r.aclose()


def exactly_once_rows(url: str, seconds: float, console: Console) -> list[Row]:
    """The cost of exactly-once writes: uncontended set, update and lock acquire+release with
    and without sessions, in operations per CPU second of client and server (`measure_cpu_pair`)."""
    asyncio.run(seed(url, ["bench:u1"]))
    rows = []
    for op, kind, key in (
        ("set", "dref-set", "bench:u1"),
        ("update", "dref-update", "bench:u1"),
        ("lock acquire+release", "dref-lock", "bench:lock1"),
    ):
        console.print(
            f"  {kind}-no-session and {kind} (1 task each, alternating) …", highlight=False
        )
        base, subject = asyncio.run(measure_cpu_pair(f"{kind}-no-session", kind, url, key, seconds))
        rows.append(
            Row(
                f"{op}, 1 task, ops per CPU-second (base: dref with exactly_once = false)",
                baseline=base,
                subject=subject,
                target=at_least(0.9),
            )
        )
    return rows


async def measure_cpu_pair(
    base_kind: str, dref_kind: str, url: str, key: str, seconds: float, rounds: int = 20
) -> tuple[Stats, Stats]:
    """As `measure_pair`, but a side's ops/s are its operations per second of CPU that this
    process and redis-server spent in its rounds (`time.process_time`, `INFO cpu`): what one
    operation costs, whatever else the machine runs (on a shared machine one task's wall-clock
    ops/s vary by ±50 % between rounds). p50 and p99 stay wall-clock latencies."""
    server = aioredis.Redis.from_url(url)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(server.aclose)
        ops = [await side_op(kind, url, key, stack) for kind in (base_kind, dref_kind)]
        for op in ops:
            await warm(op)
        samples: list[list[Sample]] = [[], []]
        cpu = [0.0, 0.0]
        for i in range(rounds):
            for side in (0, 1) if i % 2 == 0 else (1, 0):
                client, served = time.process_time(), await _server_cpu(server)
                samples[side].append(await run_tasks(ops[side], 1, seconds / rounds))
                cpu[side] += time.process_time() - client + await _server_cpu(server) - served
    base, subject = (
        dataclasses.replace(
            pooled(samples[side]), ops_per_s=sum(s.ops for s in samples[side]) / cpu[side]
        )
        for side in (0, 1)
    )
    return base, subject


async def _server_cpu(server: aioredis.Redis) -> float:
    """CPU seconds redis-server has used (user + system)."""
    info = await server.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run(url: str, seconds: float, console: Console) -> tuple[list[Row], list[Fairness]]:
    rows: list[Row] = []
    asyncio.run(seed(url, ["bench:get", "bench:u1", "bench:u8"]))

    def single(kind: str, key: str, tasks: int) -> Stats:
        console.print(f"  {kind} ({tasks} task{'s' * (tasks > 1)}) …", highlight=False)
        return Stats.of([asyncio.run(measure_side(kind, url, key, tasks, seconds))])

    console.print("measuring:")
    rows.extend(exactly_once_rows(url, seconds, console))
    for tasks in (1, CONNECTIONS):
        rows.append(
            Row(
                f"get, {tasks} task{'s' * (tasks > 1)} (base: GET+unpack)",
                baseline=single("base-get", "bench:get", tasks),
                subject=single("dref-get", "bench:get", tasks),
                target=at_least(0.8),
            )
        )
    cas = single("dref-update", "bench:u1", 1)
    rows.append(
        Row(
            "update, 1 task (base: GET+EVALSHA CAS loop)",
            baseline=single("base-cas", "bench:u1", 1),
            subject=cas,
            target=at_least(0.8),
        )
    )
    for op, kind in (("set", "dref-set"), ("update", "dref-update")):
        rows.append(
            Row(
                f"{op}, 1 task (base: dref with history = 0, no revisions)",
                baseline=single(f"{kind}-no-history", "bench:u1", 1),
                subject=cas if kind == "dref-update" else single(kind, "bench:u1", 1),
                target=at_least(0.9),
            )
        )
    rows.append(
        Row(
            "update, 1 task (base: upstream's modify, redis-py)",
            baseline=single("base-upstream-modify", "bench:u1", 1),
            subject=cas,
            target=at_least(4),
        )
    )
    rows.append(
        Row(
            'update, 1 task (base: dref modify_strategy="lock")',
            baseline=single("dref-update-lock", "bench:u1", 1),
            subject=cas,
        )
    )
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool, ctx.Manager() as manager:

        def procs(kind: str, key: str, n: int, tasks: int) -> list[Sample]:
            console.print(f"  {kind} ({n} processes x {tasks} tasks) …", highlight=False)
            return measure_processes(pool, manager, kind, url, key, n, tasks, seconds)

        cas8 = combined(procs("dref-update", "bench:u8", 2, 4))
        rows.append(
            Row(
                "update, 8 tasks/2 procs (base: CAS loop)",
                baseline=combined(procs("base-cas", "bench:u8", 2, 4)),
                subject=cas8,
                target=at_least(0.8),
            )
        )
        rows.append(
            Row(
                "update, 8 tasks/2 procs (base: upstream lock)",
                baseline=combined(procs("dref-update-lock", "bench:u8", 2, 4)),
                subject=cas8,
                target=at_least(4),
            )
        )
        console.print("  base-lock and dref-lock (1 task each, alternating) …", highlight=False)
        base1, dref1 = asyncio.run(
            measure_pair("base-lock", "dref-lock", url, "bench:lock1", seconds)
        )
        rows.append(
            Row(
                "lock acquire+release, 1 task (base: redis-py Lock)",
                baseline=base1,
                subject=dref1,
                target=at_least(1),
            )
        )
        base4 = procs("base-lock", "bench:lock4:base", 4, 1)
        dref4 = procs("dref-lock", "bench:lock4:dref", 4, 1)
        # Informational: redis-py's releaser takes the lock again while its waiters sleep (see
        # the fairness line); dref hands it to a waiter. Fairness is the target here.
        rows.append(
            Row(
                "lock, 4 contending procs, informational (base: redis-py Lock)",
                baseline=combined(base4),
                subject=combined(dref4),
            )
        )
    fairness = [
        Fairness(BASELINE, [s.ops for s in base4]),
        Fairness(SUBJECT, [s.ops for s in dref4]),
    ]
    return rows, fairness


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per row side")
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="also write results here")
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument(
        "--fairness", action="store_true", help="only the fairness row (benchmarks/_fairness.py)"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="SRC",
        help="with --fairness: also run a checkout of another commit, alternating rounds",
    )
    parser.add_argument("--rounds", type=int, default=3, help="with --baseline: rounds per side")
    parser.add_argument(
        "--exactly-once", action="store_true", help="only the rows of exactly-once writes' cost"
    )
    args = parser.parse_args(argv)
    if args.fairness:
        from _fairness import compare_rows, fairness_row

        seconds = max(args.seconds, 3.0)
        with RedisProcess() as server:
            options = {"url": server.url}
            if args.baseline is None:
                print(fairness_row("redis", options, seconds=seconds))
            else:
                print(
                    compare_rows(
                        "redis", options, args.baseline, seconds=seconds, rounds=args.rounds
                    )
                )
        return 0
    console = Console()
    meta: dict[str, Any] = {
        "benchmark": "redis",
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "dref": dref.__version__,
        "seconds": args.seconds,
        "connections": CONNECTIONS,
    }
    with RedisProcess() as server:
        info = redis.Redis(host="127.0.0.1", port=server.port).info("server")
        meta["redis_server"] = info["redis_version"]
        console.print(
            f"Python {meta['python']}, redis-py {meta['redis_py']}, redis-server "
            f"{meta['redis_server']}, dref {meta['dref']}; {args.seconds:g} s per side, "
            f"{CONNECTIONS} connections per client",
            highlight=False,
        )
        if args.exactly_once:
            rows, fairness = exactly_once_rows(server.url, args.seconds, console), []
        else:
            rows, fairness = run(server.url, args.seconds, console)
    console.print(comparison_table(rows, title=TITLE, baseline=BASELINE, subject=SUBJECT))
    missed = [row.op for row in rows if row.passed is False]
    for f in fairness:
        ok = f.ratio >= 0.5
        if f.side == SUBJECT and not ok:
            missed.append("lock fairness")
        verdict = ("[green]pass[/]" if ok else "[bold red]FAIL[/]") if f.side == SUBJECT else ""
        console.print(
            f"  lock fairness, 4 processes, {f.side}: acquisitions {f.counts}, "
            f"least/most = {f.ratio:.2f} {verdict} (target for dref ≥ 0.5)",
            highlight=False,
        )
    console.print(
        f"[bold red]targets missed: {', '.join(missed)}[/]" if missed else "[green]all targets met"
    )
    if args.json is not None:
        data = results_json(rows, baseline=BASELINE, subject=SUBJECT, **meta)
        data["fairness"] = {f.side: {"counts": f.counts, "ratio": f.ratio} for f in fairness}
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        console.print(f"results written to {args.json}")
    if not args.no_plot:
        png = write_plot(
            rows,
            OUT_DIR / "redis_bench.png",
            title="dref redis vs redis-py (higher is better)",
            baseline=BASELINE,
            subject=SUBJECT,
        )
        if png is not None:
            console.print(f"plot written to {png}")
    return 1 if missed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
