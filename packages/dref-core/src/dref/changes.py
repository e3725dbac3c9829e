"""Change fan-out shared by every backend: bounded, ordered, broadcast, never silently lossy.

A backend owns one `ChangeHub` and calls `publish()` for every committed change, in commit order.
Each `Subscription` has its own bounded buffer; every subscriber sees every event. A subscriber that
falls more than `capacity` events behind gets `ChangeStreamLaggedError` after the events it already
has, instead of a gap.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from dref import metrics
from dref.errors import ChangeStreamLaggedError
from dref.resources import AsyncResource

__all__ = ["DEFAULT_CAPACITY", "ChangeEvent", "ChangeHub", "Subscription"]

DEFAULT_CAPACITY = 1024


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One committed change of an element: `value` is the new bytes, or None for a delete.

    `revision` (backends with the `revisions` capability; 0 otherwise) orders the changes of
    an element: it grows with every change, and `changes(since=revision)` resumes after it.
    """

    name: str
    value: bytes | None
    revision: int = 0

    @property
    def deleted(self) -> bool:
        return self.value is None


class Subscription(AsyncResource):
    """An ordered stream of `ChangeEvent`s for one name; use `async with` or call `aclose()`."""

    def __init__(self, hub: ChangeHub, name: str, capacity: int) -> None:
        self.name = name
        self._hub = hub
        self._capacity = capacity
        self._buffer: deque[ChangeEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._after = 0
        """Live events at or below this revision are already replayed (`preload`): skipped."""

    # -- producer side (the hub) ------------------------------------------------------------------
    def _push(self, event: ChangeEvent) -> None:
        if self._closed or self._error is not None:
            return
        if 0 < event.revision <= self._after:
            return
        if len(self._buffer) >= self._capacity:
            metrics.state.lagged += 1
            self._end(ChangeStreamLaggedError(self.name, self._capacity))
            return
        self._buffer.append(event)
        self._wake()

    def preload(self, events: Iterable[ChangeEvent], after: int) -> None:
        """Queue replayed `events` ahead of live ones (a resumed stream:
        `Backend.subscribe_since`); live events they already cover, and later ones at or below
        revision `after`, are dropped."""
        replay = list(events)
        top = max(after, replay[-1].revision if replay else 0)
        live = [e for e in self._buffer if not 0 < e.revision <= top]
        self._buffer.clear()
        self._buffer.extend(replay)
        self._buffer.extend(live)
        self._after = top
        if self._buffer:
            self._wake()

    def _end(self, error: BaseException | None) -> None:
        """Stop receiving; the consumer drains what it has, then sees `error` or the end."""
        if error is not None and self._error is None:
            self._error = error
        self._hub._detach(self)
        if error is None:
            self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- consumer side ----------------------------------------------------------------------------
    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> ChangeEvent:
        while not self._buffer:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._buffer.popleft()

    def pending(self) -> int:
        """Events buffered and not yet consumed."""
        return len(self._buffer)

    def drain(self) -> list[ChangeEvent]:
        """Take every buffered event without waiting."""
        events = list(self._buffer)
        self._buffer.clear()
        return events

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        self._closed = True
        self._buffer.clear()
        self._hub._detach(self)
        self._wake()


class ChangeHub:
    """Per-name broadcast of change events to bounded subscriptions."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        # Insertion-ordered, so subscribers (and lock waiters) are served first come, first served.
        self._subs: dict[str, dict[Subscription, None]] = {}
        metrics.state.hubs.add(self)  # read when scraped (dref.metrics)

    def subscribe(self, name: str, capacity: int | None = None) -> Subscription:
        """A new subscription that receives every event for `name` published from now on."""
        sub = Subscription(self, name, capacity or self.capacity)
        self._subs.setdefault(name, {})[sub] = None
        return sub

    def publish(self, event: ChangeEvent) -> None:
        """Deliver `event` to every current subscriber of its name (never blocks)."""
        for sub in tuple(self._subs.get(event.name, ())):
            sub._push(event)

    def publish_all(self, events: Iterable[ChangeEvent]) -> None:
        for event in events:
            self.publish(event)

    def wants(self, name: str) -> bool:
        """Whether `name` has a subscriber (lets publishers skip building unseen events)."""
        return name in self._subs

    def names(self) -> set[str]:
        """Names that currently have at least one subscriber."""
        return set(self._subs)

    def subscribers(self, name: str) -> int:
        return len(self._subs.get(name, ()))

    def subscriber_count(self) -> int:
        """Subscriptions of every name."""
        return sum(len(subs) for subs in tuple(self._subs.values()))

    def end(self, name: str, error: BaseException) -> None:
        """End the subscriptions of `name` with `error`, after the events they already have."""
        for sub in tuple(self._subs.get(name, ())):
            sub._end(error)

    def close(self, error: BaseException | None = None) -> None:
        """End every subscription: with `error` raised to consumers, or as a normal end."""
        for subs in tuple(self._subs.values()):
            for sub in tuple(subs):
                sub._end(error)
        self._subs.clear()

    def _detach(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.name)
        if subs is not None:
            subs.pop(sub, None)
            if not subs:
                del self._subs[sub.name]
