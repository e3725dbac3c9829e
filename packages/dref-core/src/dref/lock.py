"""The distributed lock protocol, written once over the backend SPI.

Acquire: `try_lock`; while it is held elsewhere, subscribe to the lock's changes and try again at
once, then wait for a delete event (no wake-up can be lost: we subscribed before checking) or a
bounded poll, up to `timeout`. Giving up after a cut-short attempt, or after any failed attempt
on a backend that keeps a line of waiters (`lock_queue`), releases the token in the background.
Hold: after a short grace period, a watchdog renews the lease every `lock_refresh_fraction`·TTL
with an owner-checked `refresh_lock`, and treats as lost any change event that replaces our
token, any renewal that finds the lock no longer ours, and a lease that runs out because renewals
failed. A lost lock cancels the body and `LockStolenError` leaves the `async with`. Release: the
watchdog is stopped first, then an owner-checked `release_lock`, which never deletes a
successor's lock; a release cut short by the caller's cancellation is sent again in the
background and runs to completion there.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from types import TracebackType

from dref import lock_value, metrics
from dref._aio import cancel_and_wait, in_background, within
from dref.changes import Subscription
from dref.clock import Clock, SystemClock
from dref.errors import (
    ChangeStreamLaggedError,
    DRefError,
    LockStolenError,
    LockTimeoutError,
)
from dref.plugins import PluginManager
from dref.spi import Backend, LockGrant

__all__ = ["Lock", "LockGuard"]

log = logging.getLogger("dref.lock")

WATCH_GRACE = 0.02
"""Seconds after acquisition before the watchdog subscribes to the lock's changes."""


@dataclass(eq=False)
class LockGuard:
    """What `async with ctx.lock(...) as guard` gives: the token and the fence of this hold."""

    name: str
    token: bytes
    """The 8-byte lock value stored under the lock's key (upstream's `LockValue`)."""
    fence: int | None
    """Grows with every acquisition of this lock (None if the backend has no fencing)."""
    ttl: float
    lost_reason: str | None = field(default=None, init=False)
    released: bool = field(default=False, init=False)

    @property
    def token_int(self) -> int:
        """The token as the signed 64-bit integer upstream prints."""
        return lock_value.from_bytes(self.token)

    @property
    def held(self) -> bool:
        """False once the lock is known to be lost or released."""
        return self.lost_reason is None and not self.released


class Lock:
    """An async context manager acquiring one distributed lock; see the module docstring."""

    def __init__(
        self,
        *,
        backend: Backend,
        clock: Clock,
        plugins: PluginManager,
        name: str,
        ttl: float,
        timeout: float | None,
        refresh_fraction: float,
        backend_name: str = "",
    ) -> None:
        if ttl <= 0:
            raise ValueError("lock ttl must be positive")
        if timeout is not None and timeout < 0:
            raise ValueError("lock timeout must not be negative")
        self.name = name
        self.ttl = ttl
        self.timeout = timeout
        self._backend = backend
        self._backend_name = backend_name  # the `backend` label of dref.metrics
        self._clock = clock
        self._plugins = plugins
        self._period = ttl * refresh_fraction
        self._guard: LockGuard | None = None
        self._sub: Subscription | None = None
        self._watch_timer: asyncio.TimerHandle | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._body: asyncio.Task[object] | None = None
        self._watching = False
        self._exiting = False
        self._cancelled_body = False

    # -- acquire -----------------------------------------------------------------------------------
    async def __aenter__(self) -> LockGuard:
        if self._guard is not None:
            raise RuntimeError(f"lock {self.name!r} is already held through this object")
        # A random signed 64-bit token (like upstream's `Random.nextLong`), as its 8 bytes.
        token = secrets.token_bytes(lock_value.SIZE)
        if metrics.ops is None:
            grant, lease_start = await self._acquire(token)
        else:
            grant, lease_start = await metrics.ops.measure_lock(
                self._backend_name, self._acquire(token)
            )
        guard = LockGuard(self.name, token, grant.fence, self.ttl)
        self._guard = guard
        self._watching = self._exiting = self._cancelled_body = False
        loop = asyncio.get_running_loop()
        self._body = asyncio.current_task(loop)
        # Short critical sections pay nothing for watching: no task, no subscription, only a
        # loop timer that starts the watchdog after a grace period. (On an injected clock that
        # is not the loop's, the watchdog starts at once and sleeps the grace on that clock.)
        watch_from = lease_start + min(WATCH_GRACE, self._period / 4)
        self._watch_timer = loop.call_at(
            watch_from if type(self._clock) is SystemClock else loop.time(),
            self._start_watchdog,
            guard,
            lease_start,
            watch_from,
        )
        log.debug(
            "Lock %s acquired (fence %s)", self.name, grant.fence, extra={"dref_element": self.name}
        )
        self._plugins.lock_acquired(self.name, guard.token_int, guard.fence)
        return guard

    async def _acquire(self, token: bytes) -> tuple[LockGrant, float]:
        """Try at once; when held, subscribe, re-check, and wait for deletes or the poll."""
        clock = self._clock
        deadline = None if self.timeout is None else clock.now() + self.timeout
        caps = self._backend.capabilities
        queued = caps.lock_queue
        # A queued waiter also tries again every poll interval: that keeps its place in line.
        exact = caps.exact_events and caps.expiry_events and not queued
        poll = None if exact else self._backend.poll_interval
        sub: Subscription | None = None
        # True while the backend may keep something under our token (the lock, when a request
        # was cut short; our place in line, after a failed attempt): given back if we give up.
        owing = False
        try:
            while True:
                started = clock.now()
                owing = True
                grant = await self._backend.try_lock(self.name, token, self.ttl)
                if grant is not None:
                    owing = False
                    return grant, started
                owing = queued
                if sub is None:
                    # Subscribe, then re-check at once: a release in between cannot be missed.
                    sub = await self._backend.subscribe(self.name)
                    continue
                wait = poll
                if deadline is not None:
                    remaining = deadline - clock.now()
                    if remaining <= 0:
                        raise LockTimeoutError(self.name, self.timeout or 0.0)
                    wait = remaining if wait is None else min(wait, remaining)
                try:
                    await within(clock, wait, _next_delete(sub))
                except TimeoutError:
                    pass  # poll tick or deadline: try again (the deadline is checked above)
                except ChangeStreamLaggedError:
                    await sub.aclose()
                    sub = None
        except BaseException:
            if owing:
                self._release_later(token)
            raise
        finally:
            if sub is not None:
                await sub.aclose()

    def _release_later(self, token: bytes) -> None:
        """Release in the background, to completion (a failure is logged; the TTL remains)."""
        in_background(self._backend.release_lock(self.name, token), f"release of lock {self.name}")

    # -- hold -------------------------------------------------------------------------------------
    def _start_watchdog(self, guard: LockGuard, lease_start: float, watch_from: float) -> None:
        self._watch_timer = None
        self._watchdog = asyncio.create_task(
            self._watch(guard, lease_start, watch_from), name=f"dref-lock-watchdog:{self.name}"
        )

    async def _watch(self, guard: LockGuard, lease_start: float, watch_from: float) -> None:
        """Renew the lease and watch for theft until cancelled; on loss cancel the body."""
        clock = self._clock
        backend = self._backend
        lease_end = lease_start + self.ttl
        # Give up a little before the store would expire the key, to stop the body in time.
        margin = self._period / 2
        next_refresh = lease_start + self._period
        # Where events can be lost, ownership is also checked every poll interval.
        poll = None if backend.capabilities.exact_events else backend.poll_interval
        # The subscription (and an ownership check covering the events before it) starts after
        # the grace period, on `clock` too (the loop's timer started this task); a loss before
        # then is still caught by the owner-checked release.
        await clock.sleep(watch_from - clock.now())
        self._watching = True  # from here on the release waits for the watchdog to finish
        next_check = clock.now()
        while True:
            now = clock.now()
            if now >= lease_end - margin:
                self._lose(guard, "the lease ran out before it could be renewed")
                return
            if self._sub is None:
                try:
                    self._sub = await backend.subscribe(self.name)
                except DRefError as exc:
                    log.warning(
                        "Lock %s: cannot watch for theft, renewals only: %s",
                        self.name,
                        exc,
                        extra={"dref_element": self.name},
                    )
            if now >= next_check:
                try:
                    current = await within(clock, lease_end - margin - now, backend.get(self.name))
                except (TimeoutError, DRefError) as exc:
                    log.warning(
                        "Lock %s: ownership check failed: %s",
                        self.name,
                        exc,
                        extra={"dref_element": self.name},
                    )
                else:
                    if current != guard.token:
                        self._lose(guard, "the lock key was deleted or overwritten")
                        return
                next_check = now + poll if poll is not None else float("inf")
            wake = min(next_refresh, next_check, lease_end - margin)
            try:
                await within(clock, wake - clock.now(), self._next_foreign(guard))
                self._lose(guard, "the lock key was deleted or overwritten by another holder")
                return
            except TimeoutError:
                pass
            except ChangeStreamLaggedError:
                self._sub = None
                next_check = clock.now()  # events were missed: confirm ownership now
            now = clock.now()
            if now < next_refresh:
                continue
            try:
                ours = await within(
                    clock,
                    lease_end - margin - now,
                    backend.refresh_lock(self.name, guard.token, self.ttl),
                )
            except (TimeoutError, DRefError) as exc:
                log.warning(
                    "Lock %s: renewal failed, retrying: %s",
                    self.name,
                    exc,
                    extra={"dref_element": self.name},
                )
                next_refresh = clock.now() + self._period / 4
                continue
            if not ours:
                self._lose(guard, "the lock is no longer held by this owner")
                return
            lease_end = now + self.ttl
            next_refresh = now + self._period

    async def _next_foreign(self, guard: LockGuard) -> None:
        """Return at the first event that is not our own token (a delete or another value)."""
        if self._sub is not None:
            async for event in self._sub:
                if event.value != guard.token:
                    return
        await asyncio.Future()  # no (more) events: rely on renewals and ownership checks

    def _lose(self, guard: LockGuard, reason: str) -> None:
        if guard.lost_reason is not None:
            return
        guard.lost_reason = reason
        log.warning("Lock %s lost: %s", self.name, reason, extra={"dref_element": self.name})
        self._plugins.lock_lost(self.name, guard.token_int, reason)
        if not self._exiting and self._body is not None and not self._body.done():
            self._cancelled_body = True
            self._body.cancel(f"dref lock {self.name!r} lost: {reason}")

    # -- release -----------------------------------------------------------------------------------
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        guard = self._guard
        assert guard is not None
        self._exiting = True  # from here on the watchdog never cancels the body
        try:
            try:
                await self._stop_watchdog()
                if self._sub is not None:
                    await self._sub.aclose()
            except asyncio.CancelledError:
                if guard.lost_reason is None:  # cancelled before the release: still release
                    guard.released = True
                    self._release_later(guard.token)
                raise
            if guard.lost_reason is None:
                await self._release(guard)
        finally:
            self._guard = self._watch_timer = self._watchdog = self._sub = None
        if guard.lost_reason is None:
            return False
        body = self._body
        if self._cancelled_body and body is not None:
            body.uncancel()
        if exc_type is asyncio.CancelledError and body is not None and body.cancelling():
            return False  # cancelled from outside as well: that cancellation wins
        raise LockStolenError(self.name, guard.token_int, guard.lost_reason)

    async def _stop_watchdog(self) -> None:
        """Stop the watchdog; no renewal or loss report can follow."""
        if self._watch_timer is not None:
            self._watch_timer.cancel()  # the watchdog never started
        watchdog = self._watchdog
        if watchdog is None or watchdog.done():
            return
        if self._watching:
            await cancel_and_wait(watchdog)  # it may be renewing or checking: let it unwind
        else:
            # Not started or still in its grace sleep, where a cancellation stops it before it
            # does anything: no need to wait (short critical sections pay nothing).
            watchdog.cancel()

    async def _release(self, guard: LockGuard) -> None:
        guard.released = True
        try:
            released = await self._backend.release_lock(self.name, guard.token)
        except asyncio.CancelledError:
            # The request may be lost with the cancelled call: send it again in the background
            # (owner-checked, so a repeat never deletes a successor's lock).
            self._release_later(guard.token)
            raise
        except DRefError as exc:
            # The critical section is over; the key expires by its TTL.
            log.warning(
                "Lock %s: release failed, it will expire by TTL: %s",
                self.name,
                exc,
                extra={"dref_element": self.name},
            )
            return
        if not released:
            guard.lost_reason = "the lock was no longer held when it was released"
            log.warning(
                "Lock %s: %s", self.name, guard.lost_reason, extra={"dref_element": self.name}
            )
            self._plugins.lock_lost(self.name, guard.token_int, guard.lost_reason)
            return
        self._plugins.lock_released(self.name, guard.token_int)


async def _next_delete(sub: Subscription) -> None:
    async for event in sub:
        if event.deleted:
            return
