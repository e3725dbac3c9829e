"""Leader election: nodes contend for one lock; the holder leads until it crashes, then fails over.

Every node is a separate client (its own context). The lock's fence grows with every acquisition,
so whatever a leader writes can be tagged with it and a stale leader's writes told apart.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from rich.console import Console
from rich.padding import Padding
from rich.table import Table

from dref.demo._common import Connect, DemoFailure, bullet, intro, ok, together

__all__ = ["run"]

LOCK = "demo:leader"
NODES = ("node-a", "node-b", "node-c")
TERM = 0.15
"""Seconds each leader leads before it crashes."""
TTL = 2.0
"""Lock TTL: how long a leader that vanished without releasing would block the others."""


class _Crash(Exception):
    """A simulated crash of a leader."""


@dataclass
class _Term:
    node: str
    fence: int | None
    ended: str = "leading"


async def run(connect: Connect, out: Console) -> None:
    """Three nodes elect a leader through the lock `demo:leader`; two leaders crash in turn."""
    intro(
        out,
        f"{len(NODES)} nodes, each its own client, campaign for the lock [bold]{LOCK}[/]; "
        "the holder is the leader.",
    )
    terms: list[_Term] = []
    leading: set[str] = set()

    async def node(name: str) -> None:
        async with connect() as ctx:
            try:
                async with ctx.lock(LOCK, ttl=TTL) as guard:
                    leading.add(name)
                    if len(leading) > 1:
                        raise DemoFailure(f"two leaders at once: {sorted(leading)}")
                    term = _Term(name, guard.fence)
                    terms.append(term)
                    verb = "wins the election" if len(terms) == 1 else "takes over"
                    bullet(out, name, f"{verb}: leader with fence {_fence(guard.fence)}")
                    await asyncio.sleep(TERM)
                    leading.discard(name)
                    if len(terms) < len(NODES):
                        term.ended = "crashed"
                        bullet(out, name, "[red]crashes[/]; its lock is released on the way down")
                        raise _Crash
                    term.ended = "stepped down"
                    bullet(out, name, "steps down: the last node standing shuts the cluster down")
            except _Crash:
                pass

    await together(*(node(name) for name in NODES))

    table = Table(box=None, padding=(0, 2, 0, 0))
    table.add_column("term", justify="right")
    table.add_column("leader")
    table.add_column("fence", justify="right")
    table.add_column("ended")
    for i, term in enumerate(terms, 1):
        table.add_row(str(i), term.node, _fence(term.fence), term.ended)
    out.print(Padding(table, (0, 0, 0, 2), expand=False))

    if len(terms) != len(NODES):
        raise DemoFailure(f"expected {len(NODES)} terms, saw {len(terms)}")
    fences = [t.fence for t in terms if t.fence is not None]
    if fences != sorted(set(fences)):
        raise DemoFailure(f"fences did not grow: {fences}")
    shown = " → ".join(_fence(t.fence) for t in terms)
    ok(out, f"one leader at a time; every failover raised the fence: {shown}")


def _fence(fence: int | None) -> str:
    return "—" if fence is None else str(fence)
