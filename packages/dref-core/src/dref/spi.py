"""The backend SPI: what a storage backend implements so that dref's API works on top of it.

A backend stores opaque bytes under string names with optional TTLs (seconds, float) and reports
committed changes. Everything generic — `modify`/`update*`, the lock protocol, codecs — lives in
core and is written once over this interface.

Required: `get`, `set`, `set_if_not_exist`, `delete`, `expire`, `subscribe`, `aclose`.

Optional, for tools (`dref ls`, `dref status`): `names` (announced by the `names` capability)
lists the live elements; `status` describes the backend and its servers.

Optional read path: `get_session` (`session_reads`) serves `ref.get(consistency="session")`.

Optional native paths, announced by `capabilities`:
- `compare_and_set` / `compare_and_swap` (`native_cas`): core's `modify` uses them instead of the
  portable lock protocol.
- `try_lock` / `refresh_lock` / `release_lock`: the defaults here are built from the required
  methods and are NOT atomic; a backend that overrides them atomically sets `owner_checked_locks`,
  and one whose `try_lock` returns a strictly increasing fence sets `fencing`.
- `fenced_set` / `fenced_compare_and_swap` / `fenced_delete` (`fenced_writes`): a write applied
  only if the `WriteFence`'s lock has not been acquired again since, checked atomically with
  the write by the store; otherwise `dref.errors.StaleFenceError` and nothing changes.
- `get_with_revision` / `subscribe_since` (`revisions`): change events carry a revision, a read
  returns the revision it reflects, and a subscription can resume after a revision (replaying
  what it missed, or raising `ChangeStreamLaggedError` when the backend's history is too short).
- `fair_compare_and_swap` / `leave_line` / `wait_turn` (`fair_updates`): a compare-and-swap
  served in a server-side line per element, so that contended `modify` calls are served first
  come, first served across processes; the swap that leaves hands the value to the next.

A third-party backend is one module exposing a `dref_register_backends(registry)` hook
implementation (see `dref.hookspecs`) and a `dref.backends` entry point naming that module.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from dref.changes import ChangeEvent, Subscription
from dref.clock import Clock
from dref.errors import UnsupportedOperationError

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

    from dref.settings import DRefSettings

__all__ = [
    "Backend",
    "BackendSpec",
    "BackendStatus",
    "Capabilities",
    "ChangeEvent",
    "LockGrant",
    "ReadConsistency",
    "Subscription",
    "WriteFence",
]


ReadConsistency = Literal["linearizable", "session"]
"""What `DRef.get(consistency=...)` asks for (docs/concepts.md#read-consistency)."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend guarantees; the conformance suite asserts exactly what is claimed."""

    linearizable: bool = False
    """Every read reflects every write acknowledged before it started, from any context."""
    durable: bool = False
    """Acknowledged writes survive a crash of the process or server that stores them."""
    distributed: bool = False
    """Contexts in different processes (or hosts) share the same state."""
    fencing: bool = False
    """`try_lock` returns a fence that grows strictly with every acquisition of a lock."""
    native_cas: bool = False
    """`compare_and_set` is implemented atomically."""
    owner_checked_locks: bool = False
    """`refresh_lock` and `release_lock` compare the token atomically with their effect."""
    exact_events: bool = False
    """No change event is ever lost; without it core adds a bounded poll to lock waits."""
    expiry_events: bool = False
    """An element that expires is reported as a delete event."""
    lock_queue: bool = False
    """A failed `try_lock` puts its token in line: the lock goes to waiters first come, first
    served. `release_lock` of a token that does not hold the lock takes it out of the line."""
    names: bool = False
    """`names(prefix)` lists the live elements: every name that exists, never an expired one."""
    fenced_writes: bool = False
    """`fenced_set`, `fenced_compare_and_swap` and `fenced_delete` check the lock's fence (or
    token) atomically with the write and raise `StaleFenceError` instead of writing."""
    session_reads: bool = False
    """`get_session(name)` reads at least what this backend instance (one context) wrote or read
    before, and never goes back in time, but may miss other contexts' latest writes (session
    consistency: read your writes, monotonic reads); typically served without a network round
    trip (a Raft member's own state)."""
    fair_updates: bool = False
    """`fair_compare_and_swap` serves contended swaps of one element first come, first served:
    a failed swap takes a place in the element's line, and while anyone waits only the head of
    the line may swap; `wait_turn` returns when a waiter's turn has come."""
    revisions: bool = False
    """Change events carry a `revision` that grows with every change of an element;
    `get_with_revision` returns a value with the revision it reflects, and
    `subscribe_since(name, rev)` delivers every change after `rev` (replayed from the backend's
    bounded history) or raises `ChangeStreamLaggedError`. A stream that reconnects resumes from
    its last revision the same way."""
    exactly_once: bool = False
    """Every write of a context carries (session, request number) and the store records its
    result: a write whose answer was lost (connection dropped or timed out after sending) is
    sent again with the same number until its outcome is known or the operation times out,
    and the store answers the duplicate with the recorded result instead of applying it twice
    (docs/guarantees.md)."""


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """What `Backend.status()` reports (`dref status`): one line, and a row per server or member.

    Every row has the same keys (the columns of `dref status`'s table); values are JSON-able.
    """

    summary: str
    rows: tuple[Mapping[str, object], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class WriteFence:
    """The lock hold a fenced write is bound to: what `fence=guard` passes to the backend.

    A backend checks `fence` against the lock's latest acquisition (Redis, in-memory) or
    `token` against the lock's current value (Raft); `lock` is the lock's name.
    """

    lock: str
    token: bytes
    fence: int


@dataclass(frozen=True, slots=True)
class LockGrant:
    """A successful lock acquisition; `fence` is None when the backend has no fencing."""

    fence: int | None = None


class Backend(abc.ABC):
    """Base class of backends. Names are str, values are bytes, TTLs are seconds (float)."""

    capabilities: Capabilities = Capabilities()
    default_ttl: float = 20.0
    """TTL used for locks when neither the call nor the settings give one."""
    poll_interval: float = 1.0
    """Fallback poll period for lock waiters when `exact_events` is False."""

    # -- required ---------------------------------------------------------------------------------
    @abc.abstractmethod
    async def get(self, name: str) -> bytes | None:
        """The current value, or None if the element is missing or expired."""

    @abc.abstractmethod
    async def set(self, name: str, value: bytes, ttl: float | None = None) -> None:
        """Write unconditionally (`ttl=None`: no expiry) and publish a change event."""

    @abc.abstractmethod
    async def set_if_not_exist(self, name: str, value: bytes, ttl: float | None = None) -> bool:
        """Create atomically if absent (expired counts as absent); True iff written."""

    @abc.abstractmethod
    async def delete(self, name: str) -> None:
        """Remove the element and publish a delete event."""

    @abc.abstractmethod
    async def expire(self, name: str, ttl: float) -> bool:
        """Re-arm the expiry to now + ttl; False if the element does not exist."""

    @abc.abstractmethod
    async def subscribe(self, name: str) -> Subscription:
        """Subscribe to change events of `name`; events committed after this returns are seen."""

    async def aclose(self) -> None:
        """Release connections and tasks; idempotent."""
        return

    # -- optional read path -----------------------------------------------------------------------
    async def get_session(self, name: str) -> bytes | None:
        """`get` with session consistency (see `Capabilities.session_reads`)."""
        raise UnsupportedOperationError(
            f"{type(self).__name__} has no session reads (no `session_reads` capability)",
            capability="session_reads",
        )

    # -- optional, for tools ----------------------------------------------------------------------
    def names(self, prefix: str = "") -> AsyncIterator[str]:
        """Names of the live elements that start with `prefix`, each once, in no particular order;
        never an expired element nor a backend's internal key. Requires the `names` capability.

        An element created or deleted while the listing runs may or may not be listed.
        """
        raise UnsupportedOperationError(
            f"{type(self).__name__} cannot list element names (no `names` capability)"
        )

    async def status(self) -> BackendStatus:
        """A description of the backend for `dref status`: override to add servers or members
        (their reachability, role, latency, …)."""
        return BackendStatus(type(self).__name__)

    # -- optional: revisions -----------------------------------------------------------------------
    async def get_with_revision(self, name: str) -> tuple[bytes | None, int]:
        """The current value (None: missing) and a revision R such that the value reflects
        every change up to R and `subscribe_since(name, R)` delivers every later change.
        Linearizable like `get` where the backend is; requires `revisions`."""
        raise UnsupportedOperationError(
            f"{type(self).__name__} keeps no change revisions (no `revisions` capability)",
            capability="revisions",
        )

    async def subscribe_since(self, name: str, since: int) -> Subscription:
        """`subscribe`, first replaying every change of `name` after revision `since`; the
        subscription ends with `ChangeStreamLaggedError` when the backend's history no longer
        holds them. Requires `revisions`."""
        raise UnsupportedOperationError(
            f"{type(self).__name__} keeps no change revisions (no `revisions` capability)",
            capability="revisions",
        )

    # -- optional native paths --------------------------------------------------------------------
    async def compare_and_set(
        self, name: str, expected: bytes, value: bytes, ttl: float | None = None
    ) -> bool:
        """Set `value` iff the current value equals `expected`; requires `native_cas`."""
        raise NotImplementedError(f"{type(self).__name__} has no native compare-and-set")

    async def compare_and_swap(
        self, name: str, expected: bytes, value: bytes
    ) -> tuple[bool, bytes | None]:
        """`compare_and_set`, returning also the current value when it did not match.

        `(True, value)` when written, `(False, current)` otherwise (`current` None: missing).
        Backends override it to answer in one round trip; requires `native_cas`.
        """
        if await self.compare_and_set(name, expected, value):
            return True, value
        return False, await self.get(name)

    async def fenced_set(
        self,
        name: str,
        value: bytes,
        ttl: float | None,
        fence: WriteFence,
        *,
        if_absent: bool = False,
    ) -> bool:
        """`set` (or, with `if_absent`, `set_if_not_exist`) iff `fence` is not stale; True iff
        written. Raises `StaleFenceError` (nothing written) otherwise; requires `fenced_writes`.
        """
        raise NotImplementedError(f"{type(self).__name__} has no fenced writes")

    async def fenced_compare_and_swap(
        self, name: str, expected: bytes, value: bytes, fence: WriteFence
    ) -> tuple[bool, bytes | None]:
        """`compare_and_swap` iff `fence` is not stale, else `StaleFenceError`."""
        raise NotImplementedError(f"{type(self).__name__} has no fenced writes")

    async def fenced_delete(self, name: str, fence: WriteFence) -> None:
        """`delete` iff `fence` is not stale, else `StaleFenceError`."""
        raise NotImplementedError(f"{type(self).__name__} has no fenced writes")

    async def fair_compare_and_swap(
        self, name: str, expected: bytes, value: bytes, ticket: bytes, *, rejoin: bool = False
    ) -> tuple[bool, bytes | None, int]:
        """A `compare_and_swap` served in the element's line; requires `fair_updates`.

        Swaps iff the value is `expected` and nobody waits, or `ticket` is first in line (then
        `ticket` leaves the line; with `rejoin`, when others still wait, it takes a new place
        at the end of the line in the same step and the reply is `(True, value, ahead)`, else
        `(True, value, 0)`: core's runner, which expects more calls, saves a failed swap to
        queue again). Otherwise `ticket` joins the line (or keeps its place and
        stays alive there) and the reply is `(False, current, ahead)`: the current value and how
        many live waiters are in front of it. A caller that stops trying calls `leave_line`; one
        that neither swaps nor retries within the backend's waiter life loses its place.
        """
        raise NotImplementedError(f"{type(self).__name__} has no fair compare-and-swap")

    async def leave_line(self, name: str, ticket: bytes) -> None:
        """Take `ticket` out of `name`'s line (harmless when it is not there)."""
        raise NotImplementedError(f"{type(self).__name__} has no fair compare-and-swap")

    async def wait_turn(self, name: str, ticket: bytes) -> bytes | None:
        """Wait until `ticket`, in `name`'s line, becomes its head; requires `fair_updates`.

        Returns the element's value as the swap (or leave) that made `ticket` the head left it,
        so that the head swaps next without a stale first guess; None when the backend's
        bounded fallback wait (well within the waiter life) passed first; the caller then tries
        again, which keeps its place. A swap or `leave_line` of `ticket` drops a value handed
        to it and not yet taken.
        """
        raise NotImplementedError(f"{type(self).__name__} has no fair compare-and-swap")

    async def try_lock(self, name: str, token: bytes, ttl: float) -> LockGrant | None:
        """Take the lock if free; None when someone holds it."""
        if await self.set_if_not_exist(name, token, ttl):
            return LockGrant()
        return None

    async def refresh_lock(self, name: str, token: bytes, ttl: float) -> bool:
        """Extend our lock to now + ttl; False if it is no longer ours (not atomic by default)."""
        if await self.get(name) != token:
            return False
        return await self.expire(name, ttl)

    async def release_lock(self, name: str, token: bytes) -> bool:
        """Delete the lock iff it is still ours; False otherwise (not atomic by default)."""
        if await self.get(name) != token:
            return False
        await self.delete(name)
        return True


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """How to configure and open one backend; added to the registry by a backend plugin."""

    name: str
    settings: type[BaseSettings]
    """The backend's own settings model (its own env prefix, e.g. `DREF_REDIS_`)."""
    open: Callable[[Any, DRefSettings, Clock], Awaitable[Backend]]
    """Called as `await open(backend_settings, core_settings, clock)`."""
    description: str = ""
