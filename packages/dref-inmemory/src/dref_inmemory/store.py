"""The shared store behind in-memory contexts: one per namespace per process."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

from dref.changes import ChangeEvent, ChangeHub, Subscription
from dref.clock import Clock
from dref.errors import StaleFenceError
from dref.revisions import DEFAULT_HISTORY, RevisionLog
from dref.spi import WriteFence

__all__ = ["Store"]


class Store:
    """Values with optional expiry, fences and change fan-out; every method is atomic.

    Expired entries are removed (with a delete event) before every operation, so they are never
    visible and never block `set_if_not_exist`; open backends also run a reaper so that expiry is
    reported on time even when nobody calls in.
    """

    def __init__(self, namespace: str, clock: Clock, history: int = DEFAULT_HISTORY) -> None:
        self.namespace = namespace
        self.clock = clock
        self.hub = ChangeHub()
        self.revision = 0
        """The revision of the last change (of any element): one counter for the store."""
        self.history = RevisionLog(history)
        self._record = self.history.append
        self._data: dict[str, tuple[bytes, float | None]] = {}
        self._fences: dict[str, int] = {}
        # Each element's line of contended swaps (`fair_compare_and_swap`), oldest first.
        self._lines: dict[str, dict[bytes, None]] = {}
        # A waiter's turn (`wait_turn`): the value handed to a new head not waiting yet, and
        # the futures of waiting ones; both only for tickets in a line.
        self._handed: dict[tuple[str, bytes], bytes | None] = {}
        self._turns: dict[tuple[str, bytes], asyncio.Future[bytes | None]] = {}
        self._expiries: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._on_new_expiry: set[Callable[[], None]] = set()

    # -- expiry ------------------------------------------------------------------------------------
    def purge(self) -> None:
        """Remove every entry whose expiry has passed, publishing a delete for each."""
        heap = self._expiries
        if not heap:
            return  # the common case costs no clock read
        now = self.clock.now()
        while heap and heap[0][0] <= now:
            expire_at, _, name = heapq.heappop(heap)
            entry = self._data.get(name)
            if entry is not None and entry[1] == expire_at:
                del self._data[name]
                self._publish(name, None)

    def next_expiry(self) -> float | None:
        return self._expiries[0][0] if self._expiries else None

    def watch_expiries(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` whenever an expiry is scheduled; returns the function that unwatches."""
        self._on_new_expiry.add(callback)
        return lambda: self._on_new_expiry.discard(callback)

    def _schedule(self, name: str, ttl: float | None) -> float | None:
        """The absolute expiry for `ttl` (None: never), queued for the reaper."""
        if ttl is None:
            return None
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        expire_at = self.clock.now() + ttl
        heapq.heappush(self._expiries, (expire_at, next(self._seq), name))
        for callback in tuple(self._on_new_expiry):
            callback()
        return expire_at

    def _put(self, name: str, value: bytes, ttl: float | None) -> None:
        self._data[name] = (value, self._schedule(name, ttl))
        revision = self.revision = self.revision + 1  # `_publish` inlined: the hot path
        self._record((revision, name, value))
        if self.hub.wants(name):
            self.hub.publish(ChangeEvent(name, value, revision))

    def _publish(self, name: str, value: bytes | None) -> None:
        """Number the change, keep it in the history and deliver it."""
        revision = self.revision = self.revision + 1
        self._record((revision, name, value))
        if self.hub.wants(name):
            self.hub.publish(ChangeEvent(name, value, revision))

    def get_with_revision(self, name: str) -> tuple[bytes | None, int]:
        return self.get(name), self.revision

    def subscribe_since(self, name: str, since: int, capacity: int) -> Subscription:
        """A subscription that first replays the changes of `name` after `since` (raises
        `ChangeStreamLaggedError` when the history no longer holds them)."""
        self.purge()
        replay = self.history.replay(name, since)
        sub = self.hub.subscribe(name, capacity)
        sub.preload(replay, max(since, self.revision))
        return sub

    # -- operations --------------------------------------------------------------------------------
    def get(self, name: str) -> bytes | None:
        if self._expiries:
            self.purge()
        entry = self._data.get(name)
        return None if entry is None else entry[0]

    def set(self, name: str, value: bytes, ttl: float | None) -> None:
        if self._expiries:
            self.purge()
        self._put(name, value, ttl)

    def set_if_not_exist(self, name: str, value: bytes, ttl: float | None) -> bool:
        self.purge()
        if name in self._data:
            return False
        self._put(name, value, ttl)
        return True

    def compare_and_set(self, name: str, expected: bytes, value: bytes, ttl: float | None) -> bool:
        self.purge()
        entry = self._data.get(name)
        if entry is None or entry[0] != expected:
            return False
        self._put(name, value, ttl)
        return True

    def delete(self, name: str) -> None:
        self.purge()
        self._data.pop(name, None)
        self._publish(name, None)  # emitted even when absent, as upstream

    def compare_and_delete(self, name: str, expected: bytes) -> bool:
        self.purge()
        entry = self._data.get(name)
        if entry is None or entry[0] != expected:
            return False
        self.delete(name)
        return True

    def expire(self, name: str, ttl: float, expected: bytes | None = None) -> bool:
        """Re-arm the expiry (only if the value is `expected`, when given)."""
        self.purge()
        entry = self._data.get(name)
        if entry is None or (expected is not None and entry[0] != expected):
            return False
        self._data[name] = (entry[0], self._schedule(name, ttl))
        return True

    def try_lock(self, name: str, token: bytes, ttl: float) -> int | None:
        """Acquire if absent; the new fence, or None if held."""
        if not self.set_if_not_exist(name, token, ttl):
            return None
        fence = self._fences.get(name, 0) + 1
        self._fences[name] = fence
        return fence

    def names(self, prefix: str = "") -> list[str]:
        """Names of the live elements starting with `prefix`, sorted (expired ones are purged)."""
        self.purge()
        return sorted(name for name in self._data if name.startswith(prefix))

    # -- fenced writes ----------------------------------------------------------------------------
    def check_fence(self, name: str, fence: WriteFence) -> None:
        """`StaleFenceError` if `fence.lock` was acquired again after `fence.fence`."""
        current = self._fences.get(fence.lock, 0)
        if current != fence.fence:
            raise StaleFenceError(fence.lock, name, fence.fence, current)

    def fenced_set(
        self, name: str, value: bytes, ttl: float | None, fence: WriteFence, if_absent: bool
    ) -> bool:
        self.purge()
        self.check_fence(name, fence)
        if if_absent and name in self._data:
            return False
        self._put(name, value, ttl)
        return True

    def fenced_compare_and_set(
        self, name: str, expected: bytes, value: bytes, fence: WriteFence
    ) -> bool:
        self.purge()
        self.check_fence(name, fence)
        return self.compare_and_set(name, expected, value, None)

    def fenced_delete(self, name: str, fence: WriteFence) -> None:
        self.purge()
        self.check_fence(name, fence)
        self.delete(name)

    # -- the line of contended swaps --------------------------------------------------------------
    def fair_compare_and_set(
        self, name: str, expected: bytes, value: bytes, ticket: bytes, rejoin: bool = False
    ) -> tuple[bool, int]:
        """Swap iff the value is `expected` and the line is empty or led by `ticket`; else
        `ticket` joins the line. `(swapped, waiters ahead of ticket)`. The head's swap hands
        the new value to the next in line (`wait_turn`) and, with `rejoin`, puts `ticket` back
        at the end of the line when anyone still waits."""
        line = self._lines.get(name)
        if line is None:
            if self.compare_and_set(name, expected, value, None):
                return True, 0
            line = self._lines[name] = {ticket: None}
            return False, 0
        if next(iter(line)) == ticket and self.compare_and_set(name, expected, value, None):
            self.leave_line(name, ticket)
            line = self._lines.get(name)
            if rejoin and line:
                line[ticket] = None
                return True, len(line) - 1
            return True, 0
        line.setdefault(ticket, None)
        return False, list(line).index(ticket)

    def leave_line(self, name: str, ticket: bytes) -> None:
        """Take `ticket` out of the line; if it was the head, the next one's turn comes."""
        self._handed.pop((name, ticket), None)
        line = self._lines.get(name)
        if line is None or ticket not in line:
            return
        head = next(iter(line)) == ticket
        del line[ticket]
        if not line:
            del self._lines[name]
        elif head:
            self._hand_to(name, next(iter(line)))

    def _hand_to(self, name: str, ticket: bytes) -> None:
        value = self._data.get(name, (None, None))[0]
        waiter = self._turns.pop((name, ticket), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(value)
        else:
            self._handed[(name, ticket)] = value

    async def wait_turn(self, name: str, ticket: bytes, timeout: float) -> bytes | None:
        """The value handed to `ticket` when it became the head of `name`'s line; None after
        `timeout` s (or when it is no longer in line)."""
        key = (name, ticket)
        if key in self._handed:
            return self._handed.pop(key)
        line = self._lines.get(name)
        if line is None or ticket not in line:
            return None
        waiter = self._turns[key] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            if self._turns.get(key) is waiter:
                del self._turns[key]

    def __len__(self) -> int:
        self.purge()
        return len(self._data)
