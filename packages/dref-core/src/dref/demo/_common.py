"""What the demo's use cases share: the connector factory type, failures and small helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from dref.context import Connector

__all__ = ["Connect", "DemoFailure", "bullet", "intro", "ok", "together", "wait_until"]

T = TypeVar("T")

Connect = Callable[[], Connector]
"""Opens a new client of the demo's store on every call (`async with connect() as ctx`).

Every simulated node or worker calls it once, so that they behave like separate processes. For a
cluster, a factory may hand out connections to different members in turn.
"""

CHANGE_TIMEOUT = 10.0
"""How long a use case waits for a change to reach a subscriber before it reports a failure."""


class DemoFailure(Exception):
    """A use case observed something its guarantees rule out (or an expected event never came)."""


def intro(out: Console, text: str) -> None:
    """What a use case is about to show."""
    out.print(Padding(Text.from_markup(text, style="dim"), (0, 0, 0, 2), expand=False))


def bullet(out: Console, who: str, text: str) -> None:
    """One line of a use case's story: `who` in a fixed-width column, then what happened."""
    _row(out, Text(who, style="bold cyan"), text, 9)


def ok(out: Console, text: str) -> None:
    """The fact a use case demonstrates, once it has been checked."""
    _row(out, Text("✓", style="bold green"), text, 1)


def _row(out: Console, label: Text, text: str, width: int) -> None:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=width, no_wrap=True)
    grid.add_column()
    grid.add_row(label, Text.from_markup(text))
    out.print(Padding(grid, (0, 0, 0, 2), expand=False))


async def wait_until(
    cond: asyncio.Condition, predicate: Callable[[], bool], what: str, timeout: float
) -> None:
    """Wait (notified through `cond`) until `predicate()` holds; `DemoFailure` after `timeout`."""
    try:
        async with asyncio.timeout(timeout), cond:
            await cond.wait_for(predicate)
    except TimeoutError:
        raise DemoFailure(f"{what} did not happen within {timeout:g} s") from None


async def together(*coros: Coroutine[Any, Any, T]) -> list[T]:
    """Run `coros` concurrently; if one fails, cancel the others and raise its exception."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coro) for coro in coros]
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None
    return [task.result() for task in tasks]
