"""Instructions per uncontended operation of dref's Redis backend, client and redis-server
together, with exactly-once writes off and on: a cost that does not depend on the machine's load.

    python benchmarks/redis_instructions.py [--ops set,update,lock] [--calls 1000]

Time on a machine shared with other work varies by tens of percent between rounds; the
instructions a process executes do not. Each side runs a private `redis-server` and a client
process, both under valgrind's callgrind (so it needs `valgrind` on PATH, and takes a few minutes),
twice: 200 operations, then 200 + `--calls`; the difference over `--calls` is the count per
operation, without start-up and warm-up. One task, loopback. redis-server runs with `hz 1`: its
timer work follows the clock, not the operations, and under valgrind an operation takes
milliseconds, so at the default `hz 10` the timer would add some 20k instructions to every one.
The counts leave out the kernel's share of each round trip (the same on both sides). See
docs/redis.md#exactly-once-writes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from rich.console import Console
from rich.table import Table

import dref

WARM = 200
OPS = ("set", "update", "lock")


# -- the client process ---------------------------------------------------------------------------
async def client(port: int, exactly_once: bool, op: str, calls: int) -> None:
    """`calls` operations `op` in one task of one context."""
    url = f"redis://127.0.0.1:{port}/0"
    async with dref.connect("redis", url=url, exactly_once=exactly_once) as ctx:
        ref: dref.DRef[int] = ctx.ref("bench:u1", type=int)
        await ref.set(0)
        for _ in range(calls):
            if op == "set":
                await ref.set(1)
            elif op == "update":
                await ref.update(lambda n: n + 1)
            else:
                async with ctx.lock("bench:lock1", ttl=20):
                    pass


# -- counting -------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _callgrind(out: Path) -> list[str]:
    return ["valgrind", "-q", "--tool=callgrind", f"--callgrind-out-file={out}"]


def _total(out: Path) -> int:
    """The instructions counted in one callgrind output file."""
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no instruction total in {out}")


def count(work: Path, exactly_once: bool, op: str, calls: int) -> tuple[int, int]:
    """(client, server) instructions of one run of `calls` operations."""
    port = _free_port()
    server_out, client_out = work / f"server.{port}", work / f"client.{port}"
    server = subprocess.Popen(
        [*_callgrind(server_out), "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(work), "--hz", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                r.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(
                        f"redis-server under valgrind did not start on {port}"
                    ) from None
                time.sleep(0.1)
        subprocess.run(
            [*_callgrind(client_out), sys.executable, __file__, "--client", str(port),
             "1" if exactly_once else "0", op, str(calls)],
            check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=600,
        )  # fmt: skip
        with contextlib.suppress(redis.ConnectionError):
            r.shutdown(nosave=True)  # callgrind writes its counts on a clean exit only
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return _total(client_out), _total(server_out)


def per_op(work: Path, exactly_once: bool, op: str, calls: int) -> tuple[float, float]:
    """(client, server) instructions per operation, start-up and warm-up subtracted."""
    c0, s0 = count(work, exactly_once, op, WARM)
    c1, s1 = count(work, exactly_once, op, WARM + calls)
    return (c1 - c0) / calls, (s1 - s0) / calls


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--client"]:
        port, on, op, calls = args[1:5]
        asyncio.run(client(int(port), on == "1", op, int(calls)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated, of {OPS}")
    parser.add_argument("--calls", type=int, default=1000, help="counted operations per side")
    options = parser.parse_args(args)
    ops = [op for op in options.ops.split(",") if op]
    if unknown := [op for op in ops if op not in OPS]:
        raise SystemExit(f"--ops: unknown {unknown}; choose from {OPS}")
    for tool in ("valgrind", "redis-server"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not on PATH")
    console = Console()
    table = Table(title="instructions per operation (client + redis-server), exactly_once off/on")
    for column in ("op", "off: client", "off: server", "on: client", "on: server", "on ÷ off"):
        table.add_column(column, justify="left" if column == "op" else "right")
    with tempfile.TemporaryDirectory(prefix="dref-instructions-") as tmp:
        for op in ops:
            console.print(f"  {op} …", highlight=False)
            off = per_op(Path(tmp), False, op, options.calls)
            on = per_op(Path(tmp), True, op, options.calls)
            speed = sum(off) / sum(on)  # operations per instruction, on relative to off
            table.add_row(
                op, *(f"{n / 1e3:.1f}k" for n in (*off, *on)), f"{speed:.3f}x (target ≥0.9x)"
            )
    console.print(table)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
