"""`InMemoryBackend`: the SPI over a process-wide `Store` per namespace."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from dref._aio import cancel_and_wait, within
from dref.changes import Subscription
from dref.clock import Clock, SystemClock
from dref.errors import ClosedError, ConfigurationError
from dref.revisions import DEFAULT_HISTORY
from dref.settings import DRefSettings
from dref.spi import Backend, BackendStatus, Capabilities, LockGrant, WriteFence
from dref_inmemory.store import Store

__all__ = ["InMemoryBackend", "InMemorySettings", "open_backend", "reset"]

_TURN_FALLBACK = 1.0
"""Longest `wait_turn` (s) before the waiter tries again anyway."""

_stores: dict[str, Store] = {}


class InMemorySettings(BaseSettings):
    """Settings of the `inmemory` backend (env prefix `DREF_INMEMORY_`)."""

    model_config = SettingsConfigDict(env_prefix="DREF_INMEMORY_", extra="forbid")

    namespace: str = Field("default", min_length=1, description="Contexts sharing a store.")
    default_ttl: float = Field(5.0, gt=0, description="Lock TTL in seconds (upstream: 5 s).")
    history: int = Field(
        DEFAULT_HISTORY,
        ge=1,
        description="Change events the store keeps for `changes(since=...)` (all elements).",
    )


def store_for(namespace: str, clock: Clock, history: int = DEFAULT_HISTORY) -> Store:
    """The store of `namespace`, created on first use with `clock` (and `history`)."""
    store = _stores.get(namespace)
    if store is None:
        store = _stores[namespace] = Store(namespace, clock, history)
    elif store.clock is not clock and not (
        isinstance(store.clock, SystemClock) and isinstance(clock, SystemClock)
    ):
        raise ConfigurationError(
            f"inmemory namespace {namespace!r} already runs on {store.clock!r}; "
            "all contexts of one namespace must share one clock"
        )
    return store


def reset(namespace: str | None = None) -> None:
    """Forget the store of `namespace` (all stores if None); for tests."""
    if namespace is None:
        _stores.clear()
    else:
        _stores.pop(namespace, None)


class InMemoryBackend(Backend):
    """In-process backend: contexts of one namespace behave like clients of one server."""

    capabilities = Capabilities(
        linearizable=True,
        durable=False,
        distributed=False,
        fencing=True,
        native_cas=True,
        owner_checked_locks=True,
        exact_events=True,
        expiry_events=True,
        names=True,
        fenced_writes=True,
        fair_updates=True,
        revisions=True,
        # A write is applied and answered in the same call: its answer cannot be lost.
        exactly_once=True,
    )

    def __init__(self, store: Store, *, default_ttl: float, change_buffer: int) -> None:
        self.store = store
        self.default_ttl = default_ttl
        self._change_buffer = change_buffer
        self._closed = False
        self._wake = asyncio.Event()
        self._unwatch = store.watch_expiries(self._wake.set)
        self._reaper = asyncio.create_task(
            self._reap(), name=f"dref-inmemory-reaper:{store.namespace}"
        )

    def _live(self) -> Store:
        if self._closed:
            raise ClosedError("the in-memory backend is closed")
        return self.store

    async def get(self, name: str) -> bytes | None:
        if self._closed:
            self._live()
        return self.store.get(name)

    async def set(self, name: str, value: bytes, ttl: float | None = None) -> None:
        if self._closed:
            self._live()
        self.store.set(name, value, ttl)

    async def set_if_not_exist(self, name: str, value: bytes, ttl: float | None = None) -> bool:
        return self._live().set_if_not_exist(name, value, ttl)

    async def delete(self, name: str) -> None:
        self._live().delete(name)

    async def expire(self, name: str, ttl: float) -> bool:
        return self._live().expire(name, ttl)

    async def subscribe(self, name: str) -> Subscription:
        return self._live().hub.subscribe(name, self._change_buffer)

    async def get_with_revision(self, name: str) -> tuple[bytes | None, int]:
        return self._live().get_with_revision(name)

    async def subscribe_since(self, name: str, since: int) -> Subscription:
        return self._live().subscribe_since(name, since, self._change_buffer)

    async def names(self, prefix: str = "") -> AsyncIterator[str]:
        for name in self._live().names(prefix):
            yield name

    async def status(self) -> BackendStatus:
        store = self._live()
        return BackendStatus(
            f"in-memory store {store.namespace!r} of this process (pid {os.getpid()}): "
            f"{len(store)} elements; other processes, the dref command included, have their own"
        )

    async def compare_and_set(
        self, name: str, expected: bytes, value: bytes, ttl: float | None = None
    ) -> bool:
        return self._live().compare_and_set(name, expected, value, ttl)

    async def compare_and_swap(
        self, name: str, expected: bytes, value: bytes
    ) -> tuple[bool, bytes | None]:
        store = self._live()
        if store.compare_and_set(name, expected, value, None):
            return True, value
        return False, store.get(name)

    async def fenced_set(
        self,
        name: str,
        value: bytes,
        ttl: float | None,
        fence: WriteFence,
        *,
        if_absent: bool = False,
    ) -> bool:
        return self._live().fenced_set(name, value, ttl, fence, if_absent)

    async def fenced_compare_and_swap(
        self, name: str, expected: bytes, value: bytes, fence: WriteFence
    ) -> tuple[bool, bytes | None]:
        store = self._live()
        if store.fenced_compare_and_set(name, expected, value, fence):
            return True, value
        return False, store.get(name)

    async def fenced_delete(self, name: str, fence: WriteFence) -> None:
        self._live().fenced_delete(name, fence)

    async def fair_compare_and_swap(
        self, name: str, expected: bytes, value: bytes, ticket: bytes, *, rejoin: bool = False
    ) -> tuple[bool, bytes | None, int]:
        store = self._live()
        # Answered without suspending, like every in-memory call: core lets other tasks run
        # between uncontended swaps (dref._combine.SWAPS_PER_YIELD) and the line does between
        # contended ones.
        swapped, ahead = store.fair_compare_and_set(name, expected, value, ticket, rejoin)
        return (True, value, ahead) if swapped else (False, store.get(name), ahead)

    async def leave_line(self, name: str, ticket: bytes) -> None:
        self._live().leave_line(name, ticket)

    async def wait_turn(self, name: str, ticket: bytes) -> bytes | None:
        return await self._live().wait_turn(name, ticket, _TURN_FALLBACK)

    async def try_lock(self, name: str, token: bytes, ttl: float) -> LockGrant | None:
        fence = self._live().try_lock(name, token, ttl)
        return None if fence is None else LockGrant(fence)

    async def refresh_lock(self, name: str, token: bytes, ttl: float) -> bool:
        return self._live().expire(name, ttl, expected=token)

    async def release_lock(self, name: str, token: bytes) -> bool:
        return self._live().compare_and_delete(name, token)

    async def _reap(self) -> None:
        """Purge at every expiry so that deletes are published on time."""
        store = self.store
        while True:
            self._wake.clear()
            store.purge()
            nxt = store.next_expiry()
            wait = None if nxt is None else nxt - store.clock.now()
            with contextlib.suppress(TimeoutError):
                await within(store.clock, wait, self._wake.wait())

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._unwatch()
        await cancel_and_wait(self._reaper)


async def open_backend(settings: InMemorySettings, core: DRefSettings, clock: Clock) -> Backend:
    """Open an in-memory backend on the namespace's shared store."""
    store = store_for(settings.namespace, clock, settings.history)
    return InMemoryBackend(
        store, default_ttl=settings.default_ttl, change_buffer=core.change_buffer
    )
