"""Exactly-once writes: the state machine's table of client sessions (docs/raft-wire.md#sessions).

Every context has a session (16 random bytes) and numbers its writes 1, 2, …; a write whose
outcome it does not know (leader lost, timeout, dropped connection) is sent again with the same
number. `SessionTable.apply` runs a request's write once and records its result; a repeat of the
request gets the recorded result and changes nothing. A request tells the oldest request of its
session still waiting for an answer (`first_incomplete`): results below it are dropped, so a
session keeps only the results of requests in flight.

Nothing here reads a clock: a session is forgotten when a later command's `now` (the leader's
clock, carried in the log) is `idle_ms` past its last command, so every member forgets the same
sessions at the same log position. The table is part of snapshots.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dref_raft.commands import Command, SessionCommand

__all__ = [
    "IDLE_MS",
    "MAX_RESULTS",
    "RecordedResult",
    "SessionState",
    "SessionTable",
    "WriteSession",
]

IDLE_MS = 300_000
"""A session not seen for this long (by log time) is forgotten: far longer than any retry."""

MAX_RESULTS = 4096
"""Results kept per session at most (requests in flight); the oldest go first beyond it."""


@dataclass(frozen=True, slots=True)
class RecordedResult:
    """What a request's write returned (an `ApplyResult` without its events)."""

    created: bool | None = None
    current: bytes | None = None
    stale: bool = False
    ahead: int = 0


@dataclass(slots=True)
class SessionState:
    """One live session: when it was last seen (log time, epoch ms), the oldest request it
    still waits for, and the recorded results from there on."""

    last_seen: int
    first_incomplete: int = 0
    results: dict[int, RecordedResult] = field(default_factory=dict)

    def forget_before(self, first_incomplete: int) -> None:
        if first_incomplete > self.first_incomplete:
            self.first_incomplete = first_incomplete
            for request in [r for r in self.results if r < first_incomplete]:
                del self.results[request]


class SessionTable:
    """Session id → `SessionState`, least recently seen first."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[bytes, SessionState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def apply(
        self, command: SessionCommand, run: Callable[[Command], RecordedResult]
    ) -> tuple[RecordedResult, bool]:
        """Run `command.command` with `run` unless this request already ran: `(result,
        applied)`, `applied` False for a repeat (its recorded result, nothing changed)."""
        self._expire(command.now, command.idle_ms)
        session = self._sessions.get(command.session)
        if session is None:
            session = self._sessions[command.session] = SessionState(command.now)
        else:
            self._sessions.move_to_end(command.session)
            session.last_seen = max(session.last_seen, command.now)
        session.forget_before(command.first_incomplete)
        recorded = session.results.get(command.request)
        if recorded is not None:
            return recorded, False
        if command.request < session.first_incomplete:
            # Answered already and forgotten: the client no longer waits for it.
            return RecordedResult(), False
        result = run(command.command)
        session.results[command.request] = result
        if len(session.results) > MAX_RESULTS:
            del session.results[next(iter(session.results))]
        return result, True

    def _expire(self, now: int, idle_ms: int) -> None:
        if idle_ms <= 0:
            return
        sessions = self._sessions
        while sessions:
            sid, oldest = next(iter(sessions.items()))
            if oldest.last_seen + idle_ms > now:
                return
            del sessions[sid]

    def states(self) -> tuple[tuple[bytes, SessionState], ...]:
        """A copy of every session, least recently seen first (what a snapshot stores)."""
        return tuple(
            (sid, SessionState(s.last_seen, s.first_incomplete, dict(s.results)))
            for sid, s in self._sessions.items()
        )

    def restore(self, states: Iterable[tuple[bytes, SessionState]]) -> None:
        """Replace the table (a snapshot install), keeping the given order."""
        self._sessions = OrderedDict(
            (sid, SessionState(s.last_seen, s.first_incomplete, dict(s.results)))
            for sid, s in states
        )


class WriteSession:
    """A context's side of a session: its id, the next request number and the requests in
    flight (the smallest of them is `first_incomplete`)."""

    __slots__ = ("_flight", "_next", "id")

    def __init__(self, session_id: bytes | None = None) -> None:
        self.id = session_id if session_id is not None else os.urandom(16)
        self._next = 1
        self._flight: set[int] = set()

    def start(self) -> int:
        """Number a new request (in flight until `finish`)."""
        request = self._next
        self._next += 1
        self._flight.add(request)
        return request

    def finish(self, request: int) -> None:
        """The request's outcome is known (or no longer awaited)."""
        self._flight.discard(request)

    def wrap(self, command: Command, request: int) -> SessionCommand:
        """`command` as `request` of this session; the leader stamps `now` and `idle_ms`."""
        first = min(self._flight) if self._flight else self._next
        return SessionCommand(self.id, request, command, first)
