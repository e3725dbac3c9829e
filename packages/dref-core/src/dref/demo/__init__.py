"""The four use cases of upstream's README, runnable against any backend (`dref demo`).

Each use case is `async def run(connect, out)`: `connect()` opens a new client of the store under
demonstration (every simulated node or worker opens its own), `out` is the rich console to tell
the story on. A use case raises `DemoFailure` if it observes something dref guarantees against.

```python
await run_demo(lambda: dref.connect("inmemory", namespace="demo"), Console())
```
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from rich.console import Console

from dref.demo import counter, flags, leader, report
from dref.demo._common import Connect, DemoFailure

__all__ = ["USE_CASES", "Connect", "DemoFailure", "UseCase", "run_demo"]


@dataclass(frozen=True)
class UseCase:
    """One runnable use case."""

    key: str
    title: str
    run: Callable[[Connect, Console], Awaitable[None]]


USE_CASES: tuple[UseCase, ...] = (
    UseCase("leader", "Leader election", leader.run),
    UseCase("flags", "Feature flags", flags.run),
    UseCase("report", "Throttled job with a lock", report.run),
    UseCase("counter", "Live counter", counter.run),
)


async def run_demo(connect: Connect, out: Console, keys: Iterable[str] = ()) -> None:
    """Run the use cases named by `keys` (all if empty), in the order of `USE_CASES`."""
    wanted = set(keys)
    unknown = wanted - {case.key for case in USE_CASES}
    if unknown:
        raise ValueError(f"unknown use cases: {', '.join(sorted(unknown))}")
    for number, case in enumerate(USE_CASES, 1):
        if wanted and case.key not in wanted:
            continue
        out.print()
        out.rule(f"[bold]{number}. {case.title}", align="left")
        await case.run(connect, out)
