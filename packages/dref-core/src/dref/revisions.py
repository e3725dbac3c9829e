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

    __slots__ = ("_floor", "_ring", "append")

    def __init__(self, capacity: int = DEFAULT_HISTORY, floor: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"history capacity must be at least 1, got {capacity}")
        self._ring: deque[tuple[int, str, bytes | None]] = deque(maxlen=capacity)
        self._floor = floor
        self.append = self._ring.append
        """`append((revision, name, value))`: record a change (revisions never decrease); the
        oldest one falls out when full. The bound `deque.append`: the hot path of writes."""

    @property
    def floor(self) -> int:
        """Every change after this revision is recorded; changes at or before it may not be."""
        ring = self._ring
        if len(ring) == ring.maxlen:  # something may have fallen out: at most the oldest kept
            return max(self._floor, ring[0][0])
        return self._floor

    def record(self, revision: int, name: str, value: bytes | None) -> None:
        """`append`, spelled out."""
        self.append((revision, name, value))

    def reset(self, revision: int) -> None:
        """Forget the history: the state was replaced as of `revision` (a snapshot install)."""
        self._floor = max(self.floor, revision)
        self._ring.clear()

    def replay(self, name: str, since: int) -> list[ChangeEvent]:
        """The recorded changes of `name` after revision `since`, oldest first.

        `ChangeStreamLaggedError` when changes after `since` may have fallen out of the history.
        """
        if since < self.floor:
            raise ChangeStreamLaggedError(name, len(self._ring), since=since)
        return [ChangeEvent(n, v, r) for r, n, v in self._ring if r > since and n == name]

    def __len__(self) -> int:
        return len(self._ring)
