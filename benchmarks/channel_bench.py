"""The dref-only TCP channel against the gRPC `Session` stream it replaces, side by side.

    python benchmarks/channel_bench.py [--calls 3000] [--rounds 3] [--event-loop auto]

A member-side `GrpcServer` (serving the channel too) runs in a child process with a handler that
answers at once (`GetEndpoints`); this process calls it with `LeaderClient` over `DRefStream`,
once with `channel=True` (the session moves to the channel) and once with `channel=False` (the
gRPC stream), alternating, `--rounds` times each. Rows: one call in flight (round-trip p50 and
the CPU both processes spent per call), and 64 in flight (calls/s and CPU per call). Only the
transport is measured: no Raft, no disk. Nothing here is a test; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from dref_raft.cli.event_loop import EVENT_LOOPS, run
from dref_raft.transport import GrpcServer, LeaderClient


class _Consensus:
    async def handle(self, request: Any) -> Any:
        raise AssertionError("not used")


class _Client:
    """Answers `GetEndpoints` at once; nothing else is called."""

    def endpoint_ids(self) -> list[str]:
        return ["n2", "n3", "n1"]

    def applied_seq(self) -> int:
        return 0


def _serve(conn: Connection, event_loop: Any) -> None:
    async def main() -> None:
        server = GrpcServer(
            "n1", _Consensus(), _Client(), port=0, stream_window=1024, channel_port=0
        )  # type: ignore[arg-type]
        async with server:
            conn.send(server.address)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    run(main(), event_loop)


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _round(address: str, pid: int, channel: bool, calls: int) -> dict[str, float]:
    async with LeaderClient(address, stream_window=1024, channel=channel) as client:
        for _ in range(200):  # warm up: the session, the channel
            await client.get_endpoints()
        assert client.dialer is None or client.dialer.opened == 1
        cpu0, own0 = _cpu(pid), time.process_time()
        latencies = []
        for _ in range(calls):
            start = time.perf_counter_ns()
            await client.get_endpoints()
            latencies.append(time.perf_counter_ns() - start)
        cpu1, own1 = _cpu(pid), time.process_time()
        one_cpu = ((cpu1 - cpu0) + (own1 - own0)) / calls * 1e6

        async def worker() -> None:
            for _ in range(calls // 64):
                await client.get_endpoints()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(64)))
        elapsed = time.perf_counter() - started
        cpu2, own2 = _cpu(pid), time.process_time()
        done = calls // 64 * 64
        return {
            "p50_us": statistics.median(latencies) / 1000,
            "cpu_us_1": one_cpu,
            "calls_s_64": done / elapsed,
            "cpu_us_64": ((cpu2 - cpu1) + (own2 - own1)) / done * 1e6,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per row and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds per side")
    parser.add_argument("--event-loop", choices=EVENT_LOOPS, default="auto")
    args = parser.parse_args(argv)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, args.event_loop), daemon=True)
    proc.start()
    try:
        address = parent.recv()
        assert proc.pid is not None
        results: dict[str, list[dict[str, float]]] = {"channel": [], "grpc": []}

        async def measure() -> None:
            for _ in range(args.rounds):
                for name, channel in (("grpc", False), ("channel", True)):
                    results[name].append(await _round(address, proc.pid, channel, args.calls))

        run(measure(), args.event_loop)
    finally:
        parent.send("stop")
        proc.join(10)
    print(
        f"event loop {args.event_loop}, {args.calls} calls x {args.rounds} rounds, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'':10} {'p50 µs (x1)':>12} {'CPU µs (x1)':>12} {'calls/s (x64)':>14} "
        f"{'CPU µs (x64)':>13}"
    )
    medians = {}
    for name, rows in results.items():
        med = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        medians[name] = med
        print(
            f"{name:10} {med['p50_us']:12.0f} {med['cpu_us_1']:12.0f} "
            f"{med['calls_s_64']:14.0f} {med['cpu_us_64']:13.1f}"
        )
    g, c = medians["grpc"], medians["channel"]
    print(
        f"channel ÷ grpc: p50 {c['p50_us'] / g['p50_us']:.2f}x, CPU/call (x1) "
        f"{c['cpu_us_1'] / g['cpu_us_1']:.2f}x, calls/s (x64) "
        f"{c['calls_s_64'] / g['calls_s_64']:.2f}x, CPU/call (x64) "
        f"{c['cpu_us_64'] / g['cpu_us_64']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
