"""`RevisionLog`: the recent change history a backend keeps to resume streams from a revision.

A backend whose store is in this process (in-memory, a Raft member) records every change event,
with its revision, in commit order. `replay(name, since)` returns the recorded changes of `name`
after `since`, or raises `ChangeStreamLaggedError` when the bounded history no longer reaches back
to `since` (never a silent gap). Recording and replaying are synchronous, so a backend subscribes
and replays in one step with nothing committed in between.
"""

from __future__ import annotations

from collections import deque

from dref.changes import ChangeEvent
from dref.errors import ChangeStreamLaggedError

__all__ = ["DEFAULT_HISTORY", "RevisionLog"]

DEFAULT_HISTORY = 4096
"""Change events kept for `changes(since=...)` unless configured otherwise."""


class RevisionLog:
    """The last `capacity` change events (of every element), oldest first."""

    __slots__ = ("_ring", "floor")

    def __init__(self, capacity: int = DEFAULT_HISTORY, floor: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"history capacity must be at least 1, got {capacity}")
        self._ring: deque[ChangeEvent] = deque(maxlen=capacity)
        self.floor = floor
        """Every change after this revision is recorded; changes at or before it may not be."""

    def record(self, event: ChangeEvent) -> None:
        """Append `event` (revisions never decrease); the oldest one falls out when full."""
        ring = self._ring
        if len(ring) == ring.maxlen:
            self.floor = ring[0].revision
        ring.append(event)

    def reset(self, revision: int) -> None:
        """Forget the history: the state was replaced as of `revision` (a snapshot install)."""
        self._ring.clear()
        self.floor = max(self.floor, revision)

    def replay(self, name: str, since: int) -> list[ChangeEvent]:
        """The recorded changes of `name` after revision `since`, oldest first.

        `ChangeStreamLaggedError` when changes after `since` may have fallen out of the history.
        """
        if since < self.floor:
            raise ChangeStreamLaggedError(name, len(self._ring), since=since)
        return [e for e in self._ring if e.revision > since and e.name == name]

    def __len__(self) -> int:
        return len(self._ring)
