"""dref's in-memory `get`, `set`, `update` against a plain dict + msgpack baseline, side by side.

    python benchmarks/inmemory_bench.py [--seconds 3] [--rounds 3] [--json out.json] [--profile]

Both sides are `async def` calls awaited from one task, so the await overhead is the same; the
difference is what dref adds (handle, codec, backend SPI, store, change hub, CAS loop). Rounds
alternate baseline and dref so that a noisy machine hurts both alike. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import platform
import pstats
import secrets
import sys
from pathlib import Path
from typing import Any

import msgpack
from _common import (
    Op,
    Row,
    Sample,
    Stats,
    Target,
    comparison_table,
    max_overhead,
    measure,
    min_throughput,
    ops_text,
    results_json,
    write_plot,
)
from rich.console import Console

import dref

TITLE = "dref inmemory (dref) vs dict + msgpack (base); one task; latencies in µs"
BASELINE = "base"
SUBJECT = "dref"
OUT_DIR = Path(__file__).resolve().parent / "out"
TARGETS: dict[str, Target] = {
    "get": max_overhead(5),
    "set": max_overhead(5),
    "update": min_throughput(30_000),
}
KEY = "bench:value"


def _inc(n: int) -> int:
    return n + 1


def baseline_ops() -> dict[str, Op]:
    """The same work without dref: a dict of msgpack bytes, behind `async def` functions."""
    store = {KEY: msgpack.packb(0)}
    packb, unpackb = msgpack.packb, msgpack.unpackb

    async def get() -> int:
        return unpackb(store[KEY])  # type: ignore[no-any-return]

    async def set_(value: int) -> None:
        store[KEY] = packb(value)

    async def update() -> None:
        store[KEY] = packb(unpackb(store[KEY]) + 1)

    return {
        "get": lambda i: get(),
        "set": lambda i: set_(i),
        "update": lambda i: update(),
    }


def dref_ops(ref: dref.DRef[int]) -> dict[str, Op]:
    return {
        "get": lambda i: ref.get(),
        "set": lambda i: ref.set(i),
        "update": lambda i: ref.update(_inc),
    }


async def run(seconds: float, rounds: int, gc_enabled: bool) -> list[Row]:
    """Measure every operation on both sides, `rounds` times, alternating which side goes first."""
    namespace = f"bench-{secrets.token_hex(4)}"
    async with dref.connect("inmemory", namespace=namespace) as ctx:
        ref = await ctx.make(0, KEY)
        sides = {BASELINE: baseline_ops(), SUBJECT: dref_ops(ref)}
        for ops in sides.values():  # warm-up: caches, converters, allocator
            for op in ops.values():
                await measure(op, min(0.3, seconds / 4))
        samples: dict[tuple[str, str], list[Sample]] = {}
        per_round = seconds / rounds
        for r in range(rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in TARGETS:
                for side in order:
                    sample = await measure(sides[side][name], per_round, gc_enabled=gc_enabled)
                    samples.setdefault((side, name), []).append(sample)
    return [
        Row(
            name,
            baseline=Stats.of(samples[(BASELINE, name)]),
            subject=Stats.of(samples[(SUBJECT, name)]),
            target=TARGETS[name],
        )
        for name in TARGETS
    ]


async def profile(seconds: float, console: Console, top: int) -> None:
    """cProfile each dref operation for `seconds` and print the functions with most own time."""
    async with dref.connect("inmemory", namespace=f"bench-{secrets.token_hex(4)}") as ctx:
        ref = await ctx.make(0, KEY)
        for name, op in dref_ops(ref).items():
            profiler = cProfile.Profile()
            profiler.enable()
            sample = await measure(op, seconds)
            profiler.disable()
            calls = sample.ops + len(sample.latencies_ns)
            console.rule(f"profile: dref {name} ({calls:,} calls, top {top} by own time)")
            _print_profile(pstats.Stats(profiler), calls, console, top)


def _print_profile(stats: pstats.Stats, calls: int, console: Console, top: int) -> None:
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:top]
    total = sum(v[2] for v in entries.values())
    console.print(f"{'own %':>6} {'ns/op':>7} {'calls/op':>8}  function")
    for (file, line, func), (_, ncalls, own, _, _) in rows:
        console.print(
            f"{100 * own / total:6.1f} {own * 1e9 / calls:7.0f} {ncalls / calls:8.2f}  "
            f"{_where(file, line, func)}",
            highlight=False,
            soft_wrap=True,
        )


def _where(file: str, line: int, func: str) -> str:
    """`packages/dref-core/src/dref/ref.py:66 get`: paths relative to the repository if inside."""
    root = Path(__file__).resolve().parent.parent
    try:
        file = str(Path(file).resolve().relative_to(root))
    except ValueError:
        file = Path(file).name if file.startswith("/") else file
    return f"{file}:{line} {func}" if line else f"{file} {func}"


def _spread(stats: Stats) -> str:
    return " ".join(ops_text(r) for r in stats.rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="measuring time per operation and side"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median taken)")
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="also write results here")
    parser.add_argument("--no-gc", action="store_true", help="disable the GC while measuring")
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    parser.add_argument("--profile", action="store_true", help="also cProfile the dref operations")
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
    args = parser.parse_args(argv)
    if args.fairness:
        from _fairness import compare_rows, fairness_row

        options = {"namespace": "fairness-bench"}
        if args.baseline is None:
            print(fairness_row("inmemory", options, seconds=args.seconds))
        else:
            print(
                compare_rows(
                    "inmemory", options, args.baseline, seconds=args.seconds, rounds=args.rounds
                )
            )
        return 0
    if args.seconds <= 0 or args.rounds < 1:
        parser.error("--seconds must be positive and --rounds at least 1")

    console = Console()
    gc_enabled = not args.no_gc
    meta: dict[str, Any] = {
        "benchmark": "inmemory",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "msgpack": ".".join(map(str, msgpack.version)),
        "dref": dref.__version__,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "gc": gc_enabled,
    }
    console.print(
        f"Python {meta['python']} ({meta['implementation']}), msgpack {meta['msgpack']}, "
        f"dref {meta['dref']}; {args.seconds:g} s per op and side in {args.rounds} rounds, "
        f"GC {'on' if gc_enabled else 'off'}",
        highlight=False,
    )
    rows = asyncio.run(run(args.seconds, args.rounds, gc_enabled))
    console.print(comparison_table(rows, title=TITLE, baseline=BASELINE, subject=SUBJECT))
    for row in rows:
        console.print(
            f"  {row.op:<6} ops/s per round: {BASELINE} {_spread(row.baseline)}; "
            f"{SUBJECT} {_spread(row.subject)}",
            highlight=False,
        )
    missed = [row.op for row in rows if row.passed is False]
    console.print(
        f"[bold red]targets missed: {', '.join(missed)}[/]" if missed else "[green]all targets met"
    )
    if args.json is not None:
        data = results_json(rows, baseline=BASELINE, subject=SUBJECT, **meta)
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        console.print(f"results written to {args.json}")
    if not args.no_plot:
        png = write_plot(
            rows,
            OUT_DIR / "inmemory_bench.png",
            title="dref inmemory vs dict + msgpack (one task; higher is better)",
            baseline=BASELINE,
            subject=SUBJECT,
        )
        if png is not None:
            console.print(f"plot written to {png}")
    if args.profile:
        asyncio.run(profile(min(args.seconds, 2.0), console, top=15))
    return 1 if missed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
