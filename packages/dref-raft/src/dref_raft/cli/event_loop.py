"""The member process's event loop: uvloop when installed (`dref-raft[uvloop]`), else asyncio's.

`dref raft node --event-loop` picks it: `auto` (default) uses uvloop if it can be imported,
`uvloop` requires it, `asyncio` never uses it. See docs/raft.md#event-loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["EVENT_LOOPS", "EventLoopName", "loop_factory", "run"]

_T = TypeVar("_T")
EventLoopName = Literal["auto", "asyncio", "uvloop"]
EVENT_LOOPS: tuple[EventLoopName, ...] = ("auto", "asyncio", "uvloop")


def loop_factory(name: EventLoopName) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop `name` asks for (None: asyncio's default).

    `uvloop` without uvloop installed raises `RuntimeError` naming the extra to install.
    """
    if name not in EVENT_LOOPS:
        raise ValueError(f"event loop must be one of {', '.join(EVENT_LOOPS)}, not {name!r}")
    if name == "asyncio":
        return None
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        if name == "uvloop":
            raise RuntimeError(
                "--event-loop uvloop needs uvloop: pip install 'dref-raft[uvloop]'"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, _T], name: EventLoopName = "auto") -> _T:
    """`asyncio.run(main)` on the loop `name` asks for."""
    try:
        factory = loop_factory(name)
    except BaseException:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
