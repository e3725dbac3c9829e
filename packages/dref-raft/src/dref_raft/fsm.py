"""The deterministic DRef state machine: commands in, change events out
(docs/protocol.md#raft-state-machine).

It never reads a clock: expiry is decided by times carried in commands and, for reads, by
the `now_ms` the caller passes in. Two machines that apply the same commands hold the same
elements, which is what lets every node of a cluster agree.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from dref_raft.bulk import paused_gc
from dref_raft.commands import (
    FENCE_IF_ABSENT,
    FENCE_SET,
    Command,
    CompareAndDelete,
    CompareAndExpire,
    CompareAndSet,
    ConfigChange,
    DeleteElement,
    DeleteIfExpired,
    ExpireElement,
    FairSwap,
    FencedWrite,
    LeaveLine,
    Membership,
    NoOp,
    SessionCommand,
    SetElement,
    SetIfNotExist,
    StartNewTerm,
)
from dref_raft.lines import LineState, LineTable
from dref_raft.sessions import RecordedResult, SessionState, SessionTable

__all__ = [
    "ApplyResult",
    "Changed",
    "ClusterSnapshot",
    "Element",
    "PreparedInstall",
    "SnapshotEntry",
    "StateCopy",
    "StateMachine",
    "snapshot_of_state",
    "sorted_in_slices",
]


@dataclass(frozen=True, slots=True)
class Element:
    """A stored value and its absolute expiry in epoch milliseconds (None: no TTL)."""

    value: bytes
    expire_at: int | None = None

    def expired(self, now_ms: int) -> bool:
        """True when the element has a TTL and `expire_at <= now_ms`."""
        return self.expire_at is not None and self.expire_at <= now_ms


@dataclass(frozen=True, slots=True)
class Changed:
    """A change of one element: its new value, or None when it was deleted."""

    name: str
    value: bytes | None


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What applying one command did: its change events and, for `SetIfNotExist`, `created`
    (for `ExpireElement`: whether the element existed, expired or not, and was re-armed).

    For the compare commands `created` says whether the comparison matched (and the effect
    happened) and, when it did not, `current` is the value found (None: absent or expired).
    """

    events: tuple[Changed, ...] = ()
    created: bool | None = None
    current: bytes | None = None
    stale: bool = False
    """`FencedWrite`: refused, the lock no longer holds the token (nothing changed)."""
    ahead: int = 0
    """`FairSwap`: live waiters in front of the ticket (0: the head, or not in line)."""
    turns: tuple[tuple[str, bytes], ...] = ()
    """(name, ticket) of each waiter this command made the head of a line (`wait_turn`)."""


@dataclass(frozen=True, slots=True)
class SnapshotEntry:
    """One element of a snapshot (upstream `KVEntry`)."""

    key: str
    value: bytes
    expire_at: int | None = None


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """The whole state (upstream `ClusterSnapshot`): entries and the last seq they include."""

    entries: tuple[SnapshotEntry, ...] = ()
    last_seq: int = 0
    #: dref extension: the Raft term of the entry at `last_seq` (0: unknown / upstream).
    last_term: int = 0
    #: dref extension: the configuration committed through `last_seq` (None: the bootstrap
    #: configuration, never changed).
    membership: Membership | None = None
    #: dref extension: the live sessions of exactly-once writes (`dref_raft.sessions`).
    sessions: tuple[tuple[bytes, SessionState], ...] = ()
    #: dref extension: the lines of contended writers (`dref_raft.lines`), sorted by name.
    lines: tuple[tuple[str, LineState], ...] = ()


@dataclass(frozen=True, slots=True)
class PreparedInstall:
    """`StateMachine.prepare_install`'s work for one snapshot, done off the event loop."""

    snapshot: ClusterSnapshot
    elements: dict[str, Element]
    changes: tuple[Changed, ...]
    #: The machine's mutation count the changes were computed against.
    version: int


_NOTHING = ApplyResult()
_PRESENT = ApplyResult(created=True)
_ABSENT = ApplyResult(created=False)


class StateMachine:
    """Map name → `Element`, changed only by `apply` and `install`."""

    def __init__(self) -> None:
        self._elements: dict[str, Element] = {}
        #: The configuration of the last applied `ConfigChange` (None: none applied).
        self.membership: Membership | None = None
        self.sessions = SessionTable()
        self.lines = LineTable()
        #: Counts `apply` calls: a `PreparedInstall` is valid only at the count it was made at.
        self._version = 0
        self._prepared: PreparedInstall | None = None

    def __len__(self) -> int:
        return len(self._elements)

    def apply(self, command: Command) -> ApplyResult:
        """Apply one command and return its events (and `created` for `SetIfNotExist`)."""
        self._version += 1
        elements = self._elements
        match command:
            case SetElement(name, value, expire_at):
                elements[name] = Element(value, expire_at)
                return ApplyResult((Changed(name, value),))
            case SetIfNotExist(name, value, expire_at):
                if name in elements:
                    return ApplyResult((), created=False)
                elements[name] = Element(value, expire_at)
                return ApplyResult((Changed(name, value),), created=True)
            case DeleteElement(name):
                elements.pop(name, None)
                return ApplyResult((Changed(name, None),))
            case ExpireElement(name, expire_at):
                current = elements.get(name)
                if current is None:
                    return _ABSENT
                elements[name] = Element(current.value, expire_at)
                return _PRESENT
            case DeleteIfExpired(name, now):
                current = elements.get(name)
                if current is None or not current.expired(now):
                    return _NOTHING
                del elements[name]
                return ApplyResult((Changed(name, None),))
            case StartNewTerm() | NoOp():
                return _NOTHING
            case CompareAndSet(name, expected, value, expire_at, now):
                matched, found = self._matching(name, expected, now)
                if not matched:
                    return ApplyResult((), created=False, current=found)
                # Matched a create (`expected` None) while present: the old one had expired.
                expired = expected is None and name in elements
                elements[name] = Element(value, expire_at)
                if expired:
                    return ApplyResult((Changed(name, None), Changed(name, value)), created=True)
                return ApplyResult((Changed(name, value),), created=True)
            case CompareAndDelete(name, expected, now):
                matched, found = self._matching(name, expected, now)
                if not matched:
                    return ApplyResult((), created=False, current=found)
                del elements[name]
                return ApplyResult((Changed(name, None),), created=True)
            case CompareAndExpire(name, expected, expire_at, now):
                matched, found = self._matching(name, expected, now)
                if not matched:
                    return ApplyResult((), created=False, current=found)
                elements[name] = Element(expected, expire_at)
                return ApplyResult((), created=True)
            case FencedWrite():
                return self._fenced(command)
            case ConfigChange(membership):
                self.membership = membership
                return _NOTHING
            case SessionCommand():
                return self._session(command)
            case FairSwap():
                return self._fair_swap(command)
            case LeaveLine(name, ticket, release, now):
                turns = self._turn(name, self.lines.remove(name, ticket))
                if not release:
                    return ApplyResult(turns=turns)
                result = self.apply(CompareAndDelete(name, ticket, now))
                return ApplyResult(result.events, result.created, turns=turns)
        raise TypeError(f"not a state command: {command!r}")

    def _session(self, command: SessionCommand) -> ApplyResult:
        """A write applied at most once per (session, request); a repeat gets the recorded
        result and no events."""
        applied = _NOTHING

        def run(inner: Command) -> RecordedResult:
            nonlocal applied
            if isinstance(inner, SessionCommand):
                raise TypeError("a session command cannot wrap another one")
            applied = self.apply(inner)
            return RecordedResult(applied.created, applied.current, applied.stale, applied.ahead)

        recorded, _ = self.sessions.apply(command, run)
        return ApplyResult(
            applied.events,
            recorded.created,
            recorded.current,
            recorded.stale,
            recorded.ahead,
            applied.turns,
        )

    def _fair_swap(self, command: FairSwap) -> ApplyResult:
        """Swap when nobody waits or `ticket` heads the line, else queue (`FairSwap`)."""
        name, ticket, now, lines = command.name, command.ticket, command.now, self.lines
        before = lines.head(name)
        line = lines.live(name, now)
        head = next(iter(line)) if line else None
        if head is None or head == ticket:
            swap = CompareAndSet(name, command.expected, command.value, command.expire_at, now)
            result = self.apply(swap)
            if result.created:
                next_head = lines.remove(name, ticket) if head is not None else None
                ahead = 0
                if command.rejoin and next_head is not None:
                    ahead = lines.queue(name, ticket, now + command.life_ms)
                return ApplyResult(
                    result.events, True, ahead=ahead, turns=self._turn(name, next_head)
                )
            found = result.current
        else:
            found = self._matching(name, command.expected, now)[1]
        ahead = lines.queue(name, ticket, now + command.life_ms)
        # Dead waiters dropped at the head: the new head's turn has come (unless it is ours).
        after = lines.head(name)
        woken = after if after != before and after != ticket else None
        return ApplyResult((), False, found, ahead=ahead, turns=self._turn(name, woken))

    @staticmethod
    def _turn(name: str, ticket: bytes | None) -> tuple[tuple[str, bytes], ...]:
        return () if ticket is None else ((name, ticket),)

    def _fenced(self, command: FencedWrite) -> ApplyResult:
        lock = self._elements.get(command.lock)
        now = command.now
        if lock is None or lock.value != command.token or (now > 0 and lock.expired(now)):
            return ApplyResult((), created=False, stale=True)
        name, value = command.name, command.value
        if value is None:  # a fenced delete
            self._elements.pop(name, None)
            return ApplyResult((Changed(name, None),), created=True)
        if command.condition == FENCE_SET:
            self._elements[name] = Element(value, command.expire_at)
            return ApplyResult((Changed(name, value),), created=True)
        expected = None if command.condition == FENCE_IF_ABSENT else command.expected
        return self.apply(CompareAndSet(name, expected, value, command.expire_at, now))

    def _matching(self, name: str, expected: bytes | None, now: int) -> tuple[bool, bytes | None]:
        """Whether `name` holds `expected` unexpired at `now` (`now` 0: no expiry check;
        `expected` None: absent), and the live value (None: absent or expired)."""
        element = self._elements.get(name)
        if element is None or (now > 0 and element.expired(now)):
            return expected is None, None
        return element.value == expected, element.value

    def compare(self, name: str, expected: bytes | None, now: int) -> tuple[bool, bytes | None]:
        """What a compare command on `name` would find now, without applying it: whether it
        would match, and the live value (see `_matching`)."""
        return self._matching(name, expected, now)

    def get(self, name: str, now_ms: int) -> bytes | None:
        """The value of `name`, or None if it is absent or expired at `now_ms`."""
        element = self._elements.get(name)
        if element is None or element.expired(now_ms):
            return None
        return element.value

    def element(self, name: str) -> Element | None:
        """The stored element, expired or not."""
        return self._elements.get(name)

    def elements(self) -> Mapping[str, Element]:
        """A read-only live view of every stored element, expired ones included."""
        return MappingProxyType(self._elements)

    def expiration_table(self) -> dict[str, int]:
        """Name → expire_at of every element that has a TTL (what the reaper scans)."""
        return {n: e.expire_at for n, e in self._elements.items() if e.expire_at is not None}

    def snapshot(self, last_seq: int = 0) -> ClusterSnapshot:
        """Every element (expired ones included), sorted by name, stamped with `last_seq`."""
        state = StateCopy(
            self._elements, self.membership, self.sessions.states(), self.lines.states()
        )
        return snapshot_of_state(state, last_seq)

    def copy_elements(self) -> dict[str, Element]:
        """A point-in-time copy of the elements (one C-level dict copy; the elements themselves
        are immutable)."""
        return self._elements.copy()

    def copy_state(self) -> StateCopy:
        """A point-in-time copy of everything a snapshot holds (the elements: one C-level dict
        copy; the configuration; the sessions): build a snapshot from it in another thread with
        `snapshot_of_state` while this machine keeps applying."""
        return StateCopy(
            self._elements.copy(), self.membership, self.sessions.states(), self.lines.states()
        )

    def prepare_install(self, snapshot: ClusterSnapshot) -> PreparedInstall:
        """Do `install`'s heavy work for `snapshot` (safe in a worker thread while the event
        loop applies): the new elements and the changes against the current ones. Hand it to
        `offer_prepared`; `install` uses it if nothing was applied in between."""
        version = self._version
        old = self._elements.copy()
        with paused_gc():
            new = _elements_of(snapshot.entries)
            return PreparedInstall(snapshot, new, _changes(old, new), version)

    def offer_prepared(self, prepared: PreparedInstall) -> None:
        """Let the next `install` of `prepared.snapshot` swap in the prepared state."""
        self._prepared = prepared

    def install(self, snapshot: ClusterSnapshot) -> tuple[Changed, ...]:
        """Replace the whole state with `snapshot` and return what changed, sorted by name.

        An element is reported when it was removed (value None) or when its value is new or
        different; a changed expiry alone is not a change. Duplicate keys: the later wins.
        A matching `offer_prepared` result (nothing applied since) makes this a quick swap.
        """
        prepared, self._prepared = self._prepared, None
        self._version += 1
        self.membership = snapshot.membership
        self.sessions.restore(snapshot.sessions)
        self.lines.restore(snapshot.lines)
        if (
            prepared is not None
            and prepared.snapshot.entries is snapshot.entries
            and prepared.version == self._version - 1
        ):
            self._elements = prepared.elements
            return prepared.changes
        new = _elements_of(snapshot.entries)
        changes = _changes(self._elements, new)
        self._elements = new
        return changes


@dataclass(frozen=True, slots=True)
class StateCopy:
    """`StateMachine.copy_state`: the elements (a copy), the configuration, the sessions and
    the lines of contended writers."""

    elements: dict[str, Element]
    membership: Membership | None
    sessions: tuple[tuple[bytes, SessionState], ...]
    lines: tuple[tuple[str, LineState], ...] = ()


def snapshot_of_state(state: StateCopy, last_seq: int) -> ClusterSnapshot:
    """A snapshot of `state` (a `copy_state` copy), elements sorted by name."""
    elements = state.elements
    with paused_gc():
        return ClusterSnapshot(
            tuple(
                SnapshotEntry(name, elements[name].value, elements[name].expire_at)
                for name in sorted_in_slices(elements)
            ),
            last_seq,
            membership=state.membership,
            sessions=state.sessions,
            lines=state.lines,
        )


#: Names sorted per C call by `sorted_in_slices`.
_SORT_SLICE = 8192


def sorted_in_slices(names: Iterable[str]) -> list[str]:
    """`sorted(names)`, as short sorts merged in Python: one `sorted` of a million names holds
    the GIL for about a second, stalling the event loop even when run in a worker thread."""
    items = list(names)
    if len(items) <= _SORT_SLICE:
        return sorted(items)
    runs = [sorted(items[i : i + _SORT_SLICE]) for i in range(0, len(items), _SORT_SLICE)]
    del items
    return list(heapq.merge(*runs))


def _changes(old: Mapping[str, Element], new: Mapping[str, Element]) -> tuple[Changed, ...]:
    changed: dict[str, bytes | None] = {name: None for name in old if name not in new}
    for name, after in new.items():
        before = old.get(name)
        if before is None or before.value != after.value:
            changed[name] = after.value
    return tuple(Changed(name, changed[name]) for name in sorted_in_slices(changed))


def _elements_of(entries: Iterable[SnapshotEntry]) -> dict[str, Element]:
    return {entry.key: Element(entry.value, entry.expire_at) for entry in entries}
