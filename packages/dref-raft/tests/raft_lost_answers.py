"""Fault injection for exactly-once writes: a compare command commits, its answer is lost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dref
from dref_compat.lost_answers import Meanwhile
from dref_raft.errors import TransportError


def lose_next_answer(backend: Any, meanwhile: Meanwhile | None = None) -> Callable[[], int]:
    """The next compare command the context sends (a session write) commits on the leader, then
    (after `meanwhile`, when given) its answer is lost as over a dropped connection. Returns the
    count of answers lost."""
    real = backend._compare
    lost: list[object] = []

    async def lossy(command: Any) -> Any:
        result = await real(command)
        if not lost:
            lost.append(result)
            if meanwhile is not None:
                await meanwhile()
            raise TransportError("test: the answer was lost")
        return result

    backend._compare = lossy
    return lambda: len(lost)


class LosesAnswers:
    """Conformance mixin: `lose_next_answer` for Raft contexts (member and client mode)."""

    def lose_next_answer(
        self, ctx: dref.DRefContext, meanwhile: Meanwhile | None = None
    ) -> Callable[[], int] | None:
        return lose_next_answer(ctx.backend, meanwhile)
