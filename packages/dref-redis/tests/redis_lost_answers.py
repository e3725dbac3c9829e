"""Fault injection for exactly-once writes: the answer of a script that ran is lost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

import dref
from dref_compat.lost_answers import Meanwhile
from dref_redis import RedisBackend


def lose_next_answer(
    backend: RedisBackend, meanwhile: Meanwhile | None = None
) -> Callable[[], int]:
    """The next write script the backend sends in its session runs on the server, then (after
    `meanwhile`, when given) its reply is lost as when the connection drops (redis-py's
    `ConnectionError`). Returns the count of answers lost."""
    real = backend._send
    lost: list[object] = []

    async def lossy(script: Any, keys: list[bytes], args: list[bytes]) -> Any:
        reply = await real(script, keys, args)
        if script.session and not lost:
            lost.append(reply)
            if meanwhile is not None:
                await meanwhile()
            raise RedisConnectionError("test: the answer was lost")
        return reply

    backend._send = lossy  # type: ignore[method-assign]
    return lambda: len(lost)


class LosesAnswers:
    """Conformance mixin: `lose_next_answer` for Redis contexts."""

    def lose_next_answer(
        self, ctx: dref.DRefContext, meanwhile: Meanwhile | None = None
    ) -> Callable[[], int] | None:
        assert isinstance(ctx.backend, RedisBackend)
        return lose_next_answer(ctx.backend, meanwhile)
