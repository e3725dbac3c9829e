"""The client-side retry policy of upstream's Raft `DRefContext` (docs/protocol.md#retry-policy),
bounded.

Upstream retries NotLeader forever; here every retry stops at an overall deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from dref.errors import (
    BackendError,
    BackendUnavailableError,
    NoLeaderError,
    NotLeaderError,
    QuorumLostError,
)

__all__ = ["RetryPolicy", "with_leader"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Pauses and retry budgets (upstream's values, docs/protocol.md#retry-policy)."""

    not_leader_pause: float = 0.030
    """After NotLeader/NoLeader: retried until the deadline."""
    transport_pause: float = 0.050
    transport_retries: int = 20
    """After TransportError/QuorumLost (an unreachable leader): at most this many retries."""
    unknown_pause: float = 0.100
    unknown_retries: int = 20
    """When `find_leader` knows no leader: at most this many retries."""


async def with_leader(
    op: Callable[[str], Awaitable[T]],
    find_leader: Callable[[], Awaitable[str | None]],
    deadline: float,
    policy: RetryPolicy = RetryPolicy(),
) -> T:
    """Run `op(leader_id)` against the current leader, retrying per `policy` until `deadline`.

    `deadline` is an absolute `loop.time()`. `find_leader()` returns the leader's id as this
    node sees it, or None. A `NotLeaderError` with a hint retries with that id first. On
    giving up, the last error is raised (`NoLeaderError` if no leader was ever found); any
    other exception (a fatal one) propagates at once.
    """
    loop = asyncio.get_running_loop()
    last: BackendError | None = None
    hint: str | None = None
    transport_left, unknown_left = policy.transport_retries, policy.unknown_retries
    timeout = asyncio.timeout_at(deadline)
    try:
        async with timeout:
            while True:
                target = hint if hint is not None else await find_leader()
                hint = None
                if target is None:
                    if unknown_left <= 0:
                        raise last or NoLeaderError("no leader known")
                    unknown_left -= 1
                    await _pause(loop, policy.unknown_pause, deadline)
                    continue
                try:
                    return await op(target)
                except NotLeaderError as exc:
                    last, hint = exc, exc.leader_id
                    pause = policy.not_leader_pause
                except NoLeaderError as exc:
                    last, pause = exc, policy.not_leader_pause
                except (QuorumLostError, BackendUnavailableError) as exc:
                    last = exc
                    if transport_left <= 0:
                        raise
                    transport_left -= 1
                    pause = policy.transport_pause
                await _pause(loop, pause, deadline)
    except TimeoutError:
        if not timeout.expired():
            raise
        raise last or NoLeaderError("no leader found before the deadline") from None


async def _pause(loop: asyncio.AbstractEventLoop, seconds: float, deadline: float) -> None:
    await asyncio.sleep(max(0.0, min(seconds, deadline - loop.time())))
