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
    BackendTimeoutError,
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


class _Retries:
    """What one `with_leader` call has left: retry budgets, the last error, a leader hint."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.last: BackendError | None = None
        self.hint: str | None = None
        self.transport_left = policy.transport_retries
        self.unknown_left = policy.unknown_retries

    def pause_after(self, exc: BackendError) -> float:
        """The pause before retrying after `exc` (a retryable error); raises `exc` when its
        budget is spent."""
        self.last = exc
        if isinstance(exc, NotLeaderError):
            self.hint = exc.leader_id
            return self.policy.not_leader_pause
        if isinstance(exc, NoLeaderError):
            return self.policy.not_leader_pause
        if self.transport_left <= 0:
            raise exc
        self.transport_left -= 1
        return self.policy.transport_pause

    def pause_without_leader(self) -> float:
        """The pause before asking again when no leader is known; raises the last error (or
        `NoLeaderError`) when that budget is spent."""
        if self.unknown_left <= 0:
            raise self.last or NoLeaderError("no leader known")
        self.unknown_left -= 1
        return self.policy.unknown_pause


_RETRYABLE = (NotLeaderError, NoLeaderError, QuorumLostError, BackendUnavailableError)


async def with_leader(
    op: Callable[[str], Awaitable[T]],
    find_leader: Callable[[], Awaitable[str | None]],
    deadline: float,
    policy: RetryPolicy = RetryPolicy(),
    *,
    bounded: bool = False,
) -> T:
    """Run `op(leader_id)` against the current leader, retrying per `policy` until `deadline`.

    `deadline` is an absolute `loop.time()`. `find_leader()` returns the leader's id as this
    node sees it, or None. A `NotLeaderError` with a hint retries with that id first. On
    giving up, the last error is raised (`NoLeaderError` if no leader was ever found), or
    `BackendTimeoutError` when the deadline cut an attempt short (its outcome is unknown, unlike
    a refusal or an unreachable leader); any other exception (a fatal one) propagates at once.

    `bounded`: `op` itself never outlasts `deadline` (it hands the time left to a call with
    its own timeout), so the first attempt runs without a deadline timer (one loop timer less
    per operation: client mode's hot path); retries run under one as always.
    """
    loop = asyncio.get_running_loop()
    retries = _Retries(policy)
    pause: float | None = None
    if bounded:  # the first attempt, without the timer
        target = await find_leader()
        if target is None:
            pause = retries.pause_without_leader()
        else:
            try:
                return await op(target)
            except _RETRYABLE as exc:
                pause = retries.pause_after(exc)
    timeout = asyncio.timeout_at(deadline)
    asked: str | None = None
    try:
        async with timeout:
            while True:
                if pause is not None:
                    await _pause(loop, pause, deadline)
                target = retries.hint if retries.hint is not None else await find_leader()
                retries.hint = None
                if target is None:
                    pause = retries.pause_without_leader()
                    continue
                try:
                    asked = target
                    return await op(target)
                except _RETRYABLE as exc:
                    asked = None
                    pause = retries.pause_after(exc)
    except TimeoutError:
        if not timeout.expired():
            raise
        if asked is not None:
            raise BackendTimeoutError(
                f"{asked} did not answer before the deadline (the outcome is unknown)"
            ) from None
        raise retries.last or NoLeaderError("no leader found before the deadline") from None


async def _pause(loop: asyncio.AbstractEventLoop, seconds: float, deadline: float) -> None:
    await asyncio.sleep(max(0.0, min(seconds, deadline - loop.time())))
