"""Fault injection for exactly-once writes: a compare command commits, its answer is lost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dref
from dref_raft.errors import TransportError


def lose_next_answer(backend: Any) -> Callable[[], int]:
    """The next compare command the context sends (a session write) commits on the leader, then
    its answer is lost as over a dropped connection. Returns the count of answers lost."""
    real = backend._compare
    lost: list[object] = []

    async def lossy(command: Any) -> Any:
        result = await real(command)
        if not lost:
            lost.append(result)
            raise TransportError("test: the answer was lost")
        return result

    backend._compare = lossy
    return lambda: len(lost)


class LosesAnswers:
    """Conformance mixin: `lose_next_answer` for Raft contexts (member and client mode)."""

    def lose_next_answer(self, ctx: dref.DRefContext) -> Callable[[], int] | None:
        return lose_next_answer(ctx.backend)
