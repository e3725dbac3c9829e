"""Fair updates: the state machine's lines of contended writers (docs/raft.md#the-fair-line).

Each element with contended writers has a line of tickets, oldest first, each alive until a
log time (epoch ms). A `FairSwap` that cannot swap puts its ticket at the end of the line (or
renews its place); while anyone waits only the head may swap. Nothing here reads a clock: a
place whose `alive_until` has passed is dropped by the first command on that line whose `now`
(the leader's clock, carried in the log) is past it, so every member drops the same waiters at
the same log position. The lines are part of snapshots.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["LineState", "LineTable"]

LineState = tuple[tuple[bytes, int], ...]
"""One line in a snapshot: (ticket, alive_until) pairs, oldest first."""


class LineTable:
    """Element name → its line: ticket → alive_until (epoch ms, log time), oldest first."""

    def __init__(self) -> None:
        self._lines: dict[str, dict[bytes, int]] = {}

    def __len__(self) -> int:
        return len(self._lines)

    def live(self, name: str, now: int) -> dict[bytes, int] | None:
        """`name`'s line after dropping the places dead at `now` (None: nobody waits)."""
        line = self._lines.get(name)
        if line is None:
            return None
        dead = [ticket for ticket, alive_until in line.items() if alive_until <= now]
        for ticket in dead:
            del line[ticket]
        if not line:
            del self._lines[name]
            return None
        return line

    def waiting(self, name: str) -> int:
        """How many tickets `name`'s line holds as stored (dead ones included)."""
        return len(self._lines.get(name, ()))

    def head(self, name: str) -> bytes | None:
        """The first ticket of `name`'s line as stored (a dead one included), None if empty."""
        line = self._lines.get(name)
        return next(iter(line)) if line else None

    def position(self, name: str, ticket: bytes) -> int | None:
        """How many tickets are in front of `ticket` as stored; None when it is not in line."""
        line = self._lines.get(name)
        if line is None or ticket not in line:
            return None
        return list(line).index(ticket)

    def queue(self, name: str, ticket: bytes, alive_until: int) -> int:
        """Put `ticket` at the end of the line, or renew its place: how many are in front."""
        line = self._lines.setdefault(name, {})
        line[ticket] = max(alive_until, line.get(ticket, 0))  # an existing key keeps its place
        return list(line).index(ticket)

    def remove(self, name: str, ticket: bytes) -> bytes | None:
        """Take `ticket` out; the new head when `ticket` was the head and others wait."""
        line = self._lines.get(name)
        if line is None or ticket not in line:
            return None
        was_head = next(iter(line)) == ticket
        del line[ticket]
        if not line:
            del self._lines[name]
            return None
        return next(iter(line)) if was_head else None

    def states(self) -> tuple[tuple[str, LineState], ...]:
        """A copy of every line, sorted by element name (what a snapshot stores)."""
        return tuple((name, tuple(self._lines[name].items())) for name in sorted(self._lines))

    def restore(self, states: Iterable[tuple[str, LineState]]) -> None:
        """Replace the table (a snapshot install)."""
        self._lines = {name: dict(line) for name, line in states if line}
