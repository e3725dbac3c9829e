"""`WatchService`: a member's `DRefWatch` handler, streaming its committed change events.

The node reports every change in commit order (`RaftNode.on_applied_batch`); the service keeps the
last `history` of them with their log seq in a ring. `watch(names, from_seq)`:

* `from_seq` > 0 and still covered by the ring: replay every event after it for `names` (all
  when empty), then stream live ones;
* otherwise (0: a new watch, or too old): send the current value of each name (`resync=True`,
  with the member's applied seq; for all names, every stored element: the names and values are
  copied when the watch starts and sorted in a worker thread), then stream live ones.

Every live watcher has a bounded buffer; one that falls behind ends with `WatchLaggedError`
(`UNAVAILABLE` on the wire) so its client resumes — never a silent gap.

A seq may carry several events (a snapshot install reports every changed element at the
snapshot's seq): a resume from exactly such a seq, or from before a dropped event, is answered
with a resync, since the client may hold only part of that batch.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from dref.changes import ChangeEvent
from dref.errors import BackendUnavailableError, ChangeStreamLaggedError, ClosedError
from dref_raft.commands import WatchEvent
from dref_raft.errors import WatchLaggedError
from dref_raft.fsm import Changed, sorted_pairs
from dref_raft.member.node import RaftNode

__all__ = ["DEFAULT_HISTORY", "WatchService"]

DEFAULT_HISTORY = 4096
"""Committed change events a member keeps to replay resumed watches."""


@dataclass(eq=False)
class _Watcher:
    names: frozenset[str]
    after: int
    capacity: int
    buffer: deque[WatchEvent] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None

    def push(self, event: WatchEvent) -> bool:
        """Buffer a live event; False (and ended) when the buffer is full."""
        if self.error is not None:
            return False
        if len(self.buffer) >= self.capacity:
            self.end(WatchLaggedError(f"watcher fell {self.capacity} events behind"))
            return False
        self.buffer.append(event)
        self.wake.set()
        return True

    def end(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.wake.set()


@dataclass(frozen=True, slots=True)
class _Everything:
    """A resync of every name: the names and values held at `seq` (unsorted copies)."""

    names: list[str]
    values: list[bytes]
    seq: int


class WatchService:
    """`WatchHandler` over a member node; see the module docstring."""

    def __init__(self, node: RaftNode, *, history: int = DEFAULT_HISTORY, buffer: int = 1024):
        if history < 1 or buffer < 1:
            raise ValueError("history and buffer must be at least 1")
        self.node = node
        self.buffer = buffer
        self._ring: deque[WatchEvent] = deque(maxlen=history)
        self._floor = node.applied
        """Smallest `from_seq` the ring can replay from (every later event is in it)."""
        self._watchers: set[_Watcher] = set()
        self._closed = False
        node.on_applied_batch.append(self._applied)

    def _applied(self, seq: int, changes: Sequence[Changed]) -> None:
        """Node hook: the changes at `seq`, called in commit order; never raises.

        A snapshot install reports every changed element at once: only the last `history` of
        them are kept, and a watcher takes at most what its buffer holds before it lags, so
        the cost stays bounded by those, not by the size of the state."""
        if not changes:
            return
        ring = self._ring
        if len(changes) > 1 or (ring and ring[-1].seq == seq):
            self._floor = max(self._floor, seq + 1)  # a batch: no resume from inside it
        elif len(ring) == ring.maxlen:
            self._floor = max(self._floor, ring[0].seq + 1)
        limit = ring.maxlen or len(changes)
        ring.extend(WatchEvent(c.name, c.value, seq) for c in changes[-limit:])
        by_name: dict[str, Changed] | None = None
        for watcher in tuple(self._watchers):
            if seq <= watcher.after:
                continue
            if watcher.names and len(changes) > max(16, len(watcher.names)):
                # A snapshot's changes (one per name): look the few wanted names up.
                if by_name is None:
                    by_name = {c.name: c for c in changes}
                wanted = [by_name[n] for n in sorted(watcher.names) if n in by_name]
            elif watcher.names:
                wanted = [c for c in changes if c.name in watcher.names]
            else:
                wanted = list(changes[: watcher.capacity + 1])  # more only makes it lag
            for change in wanted:
                if not watcher.push(WatchEvent(change.name, change.value, seq)):
                    self._watchers.discard(watcher)
                    break

    def _start(
        self, names: list[str], from_seq: int
    ) -> tuple[list[WatchEvent] | _Everything, _Watcher]:
        """The first events (or, for a resync of every name, a copy of the state to send) and
        the registered live watcher (synchronous: nothing between)."""
        if self._closed or self.node.closed:
            raise ClosedError(f"node {self.node.id} does not serve watches any more")
        wanted = frozenset(names)
        first: list[WatchEvent] | _Everything
        if from_seq > 0 and from_seq >= self._floor:
            first = [e for e in self._ring if e.seq > from_seq and (not wanted or e.name in wanted)]
            after = from_seq
        else:
            after = self.node.applied
            held = self.node.machine.values()
            if wanted:
                first = [WatchEvent(n, held.get(n), after, resync=True) for n in sorted(wanted)]
            else:  # two C-call copies here; sorted in a worker thread by `watch`
                first = _Everything(list(held), list(held.values()), after)
        watcher = _Watcher(wanted, after, self.buffer)
        self._watchers.add(watcher)
        return first, watcher

    def replay(self, name: str, since: int) -> list[ChangeEvent]:
        """The events of `name` after seq `since` in the ring, for an in-process stream that
        resumes (`subscribe_since`); `ChangeStreamLaggedError` when the ring no longer reaches
        back to `since`."""
        if since < self._floor:
            raise ChangeStreamLaggedError(name, len(self._ring), since=since)
        return [
            ChangeEvent(e.name, e.value, e.seq)
            for e in self._ring
            if e.seq > since and e.name == name
        ]

    async def watch(self, names: list[str], from_seq: int) -> AsyncIterator[WatchEvent]:
        """Committed changes of `names` (all when empty) after `from_seq`; see the module."""
        first, watcher = self._start(names, from_seq)
        try:
            if isinstance(first, _Everything):
                seq = first.seq
                order, values = await asyncio.to_thread(sorted_pairs, first.names, first.values)
                for name, value in zip(order, values, strict=True):
                    yield WatchEvent(name, value, seq, resync=True)
            else:
                for event in first:
                    yield event
            while True:
                while watcher.buffer:
                    yield watcher.buffer.popleft()
                if watcher.error is not None:
                    raise watcher.error
                watcher.wake.clear()
                await watcher.wake.wait()
        finally:
            self._watchers.discard(watcher)

    def close(self) -> None:
        """End every watch (clients resume on another member); idempotent."""
        self._closed = True
        error = BackendUnavailableError(f"node {self.node.id} stopped serving watches")
        for watcher in self._watchers:
            watcher.end(error)
        self._watchers.clear()
        if self._applied in self.node.on_applied_batch:
            self.node.on_applied_batch.remove(self._applied)
