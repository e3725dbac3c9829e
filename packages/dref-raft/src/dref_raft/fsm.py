"""The deterministic DRef state machine: commands in, change events out
(docs/protocol.md#raft-state-machine).

It never reads a clock: expiry is decided by times carried in commands and, for reads, by
the `now_ms` the caller passes in. Two machines that apply the same commands hold the same
elements, which is what lets every node of a cluster agree.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import sys
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar, overload

from dref_raft.bulk import FREEZE_AFTER, built_large, paused_gc
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
    "CHUNK_ITEMS",
    "ApplyResult",
    "ChangeList",
    "Changed",
    "ChunkedTuple",
    "ChunkedTupleBuilder",
    "ClusterSnapshot",
    "CopyOnWrite",
    "Element",
    "NamedEntrySink",
    "NamesCopy",
    "PackedEntries",
    "PreparedInstall",
    "SnapshotEntry",
    "StateChanges",
    "StateCopy",
    "StateMachine",
    "release_snapshot",
    "snapshot_of_state",
    "sorted_in_slices",
    "sorted_items",
    "sorted_names",
    "sorted_pairs",
    "sorted_slices",
]

_T = TypeVar("_T")


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


#: Items per tuple of a `ChunkedTuple` (a power of two).
CHUNK_ITEMS = 16384
_CHUNK_SHIFT = CHUNK_ITEMS.bit_length() - 1


class ChunkedTuple(Sequence[_T]):
    """An immutable sequence held as a list of tuples of `CHUNK_ITEMS` items each (the last
    one shorter): made a tuple at a time from a list, and freed a tuple at a time
    (`release_snapshot`), so that neither holds the GIL for a million items. Equal to any
    sequence of the same items.

    Tuples: the cyclic garbage collector stops tracking a tuple of strings or bytes the first
    time it sees one, while it walks every item of a list in each full collection (tens of
    milliseconds per million, on whichever thread triggers it: the event loop's too); the list
    of the tuples is one item per `CHUNK_ITEMS`.
    """

    __slots__ = ("_len", "chunks")

    def __init__(self, items: Iterable[_T] = ()) -> None:
        if isinstance(items, ChunkedTuple):
            chunks = list(items.chunks)  # the tuples shared, never the list
        else:
            if not isinstance(items, list | tuple):
                items = list(items)
            chunks = [tuple(items[i : i + CHUNK_ITEMS]) for i in range(0, len(items), CHUNK_ITEMS)]
        self.chunks: list[tuple[_T, ...]] = chunks
        self._len = sum(map(len, chunks))
        if self._len >= FREEZE_AFTER:
            built_large()

    @classmethod
    def of_chunks(cls, chunks: list[tuple[_T, ...]]) -> ChunkedTuple[_T]:
        """The sequence of `chunks` (taken, not copied): each of `CHUNK_ITEMS` items but the
        last (`ChunkedTupleBuilder`)."""
        if any(len(chunk) != CHUNK_ITEMS for chunk in chunks[:-1]):
            raise ValueError(f"every chunk but the last must hold {CHUNK_ITEMS} items")
        built = cls()
        built.chunks = chunks
        built._len = sum(map(len, chunks))
        if built._len >= FREEZE_AFTER:
            built_large()
        return built

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, index: int) -> _T: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[_T, ...]: ...

    def __getitem__(self, index: int | slice) -> _T | tuple[_T, ...]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._len)
            if step != 1:
                return tuple(self)[index]
            pieces: list[tuple[_T, ...]] = []
            while start < stop:
                piece = self.chunks[start >> _CHUNK_SHIFT][start % CHUNK_ITEMS :][: stop - start]
                pieces.append(piece)
                start += len(piece)
            if len(pieces) == 1:
                return pieces[0]
            return tuple(itertools.chain.from_iterable(pieces))
        i = range(self._len)[index]  # negative indices, IndexError
        return self.chunks[i >> _CHUNK_SHIFT][i % CHUNK_ITEMS]

    def __iter__(self) -> Iterator[_T]:
        return itertools.chain.from_iterable(self.chunks)

    def __eq__(self, other: object) -> bool:
        return _same_items(self, other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"ChunkedTuple({_shown(self)})"


class ChunkedTupleBuilder(Generic[_T]):
    """A `ChunkedTuple` made from items added in batches, each tuple of `CHUNK_ITEMS` as soon
    as that many are there: never a list of all the items beside the tuples (what a decoded
    snapshot's names and values are built with)."""

    __slots__ = ("_chunks", "_tail", "count")

    def __init__(self) -> None:
        self._chunks: list[tuple[_T, ...]] = []
        self._tail: list[_T] = []
        #: Items added so far.
        self.count = 0

    def extend(self, items: list[_T]) -> None:
        """Add `items` at the end."""
        tail = self._tail
        tail.extend(items)
        self.count += len(items)
        if len(tail) >= CHUNK_ITEMS:
            full = len(tail) - len(tail) % CHUNK_ITEMS
            self._chunks.extend(
                tuple(tail[i : i + CHUNK_ITEMS]) for i in range(0, full, CHUNK_ITEMS)
            )
            del tail[:full]

    def build(self) -> ChunkedTuple[_T]:
        """The items added, as a `ChunkedTuple` (the builder starts over empty)."""
        chunks, self._chunks = self._chunks, []
        if self._tail:
            chunks.append(tuple(self._tail))
            self._tail = []
        self.count = 0
        return ChunkedTuple.of_chunks(chunks)


class PackedEntries(Sequence[SnapshotEntry]):
    """A snapshot's entries as two parallel `ChunkedTuple`s, names and values, and the expiry
    of each entry that has one (by index): 16 bytes per entry besides the names and values,
    which are shared with the state they were taken from (a `SnapshotEntry` object each costs
    ~64). Entries are made on access; equal to any sequence of the same entries.
    """

    __slots__ = ("expiries", "names", "values")

    def __init__(
        self,
        names: Sequence[str],
        values: Sequence[bytes],
        expiries: dict[int, int] | None = None,
    ) -> None:
        if len(names) != len(values):
            raise ValueError(f"{len(names)} names but {len(values)} values")
        self.names: ChunkedTuple[str] = ChunkedTuple(names)
        self.values: ChunkedTuple[bytes] = ChunkedTuple(values)
        self.expiries: dict[int, int] = {} if expiries is None else expiries

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, index: int) -> SnapshotEntry: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[SnapshotEntry]: ...

    def __getitem__(self, index: int | slice) -> SnapshotEntry | Sequence[SnapshotEntry]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        i = range(len(self.names))[index]  # negative indices, IndexError
        return SnapshotEntry(self.names[i], self.values[i], self.expiries.get(i))

    def __iter__(self) -> Iterator[SnapshotEntry]:
        expiries = self.expiries
        for i, (name, value) in enumerate(zip(self.names, self.values, strict=True)):
            yield SnapshotEntry(name, value, expiries.get(i))

    def __eq__(self, other: object) -> bool:
        return _same_items(self, other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"PackedEntries({_shown(self)})"


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """The whole state (upstream `ClusterSnapshot`): entries and the last seq they include."""

    #: A tuple of `SnapshotEntry`, or `PackedEntries` (snapshots of a state machine, decoded
    #: snapshots).
    entries: Sequence[SnapshotEntry] = ()
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


class _Changes(Sequence[Changed]):
    """What an install changed, as `Changed` objects made on access (an install may change a
    million elements): equal to any sequence of the same changes."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return _same_items(self, other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_shown(self)})"


class ChangeList(_Changes):
    """What a snapshot install changed, sorted by name: parallel lists of the names and their
    new values (None: deleted)."""

    __slots__ = ("names", "values")

    def __init__(self, names: Sequence[str], values: Sequence[bytes | None]) -> None:
        self.names = names
        self.values = values

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, index: int) -> Changed: ...

    @overload
    def __getitem__(self, index: slice) -> ChangeList: ...

    def __getitem__(self, index: int | slice) -> Changed | ChangeList:
        if isinstance(index, slice):
            return ChangeList(self.names[index], self.values[index])
        return Changed(self.names[index], self.values[index])

    def __iter__(self) -> Iterator[Changed]:
        for name, value in zip(self.names, self.values, strict=True):
            yield Changed(name, value)


class StateChanges(_Changes):
    """Every element of `values` as a change, in the dict's order (a new member's install,
    its state filled as the snapshot was decoded: by name): a view, not a copy of a million
    names, so it is valid until the machine changes again (the install's listeners read it
    while they are called). Slices from either end cost only their length."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, bytes]) -> None:
        self._values = values

    def __len__(self) -> int:
        return len(self._values)

    @overload
    def __getitem__(self, index: int) -> Changed: ...

    @overload
    def __getitem__(self, index: slice) -> ChangeList: ...

    def __getitem__(self, index: int | slice) -> Changed | ChangeList:
        count = len(self._values)
        if isinstance(index, int):
            at = index + count if index < 0 else index
            if not 0 <= at < count:
                raise IndexError("change index out of range")
            return self[at : at + 1][0]
        start, stop, step = index.indices(count)
        items = self._values.items()
        if step != 1:
            pairs = list(items)[index]
        elif stop <= start:
            pairs = []
        elif count - start < stop:  # nearer the end: read from there
            pairs = list(itertools.islice(reversed(items), count - start))
            pairs.reverse()
            del pairs[stop - start :]
        else:
            pairs = list(itertools.islice(items, start, stop))
        return ChangeList([name for name, _ in pairs], [value for _, value in pairs])

    def __iter__(self) -> Iterator[Changed]:
        for name, value in self._values.items():
            yield Changed(name, value)


def _same_items(seq: Sequence[object], other: object) -> bool:
    if not isinstance(other, Sequence) or isinstance(other, str | bytes | bytearray):
        return NotImplemented  # type: ignore[no-any-return]
    return len(seq) == len(other) and all(bool(a == b) for a, b in zip(seq, other, strict=True))


def _shown(seq: Sequence[object]) -> str:
    return repr(list(seq)) if len(seq) <= 20 else f"{len(seq)} items"


@dataclass(frozen=True, slots=True)
class PreparedInstall:
    """`StateMachine.prepare_install`'s work for one snapshot, done off the event loop."""

    snapshot: ClusterSnapshot
    #: The new state's values; None: the machine holds most of them already, and `install`
    #: applies `changes` to its own values instead.
    values: dict[str, bytes] | None
    expiries: dict[str, int]
    #: What the install changes (`ChangeList`, or `StateChanges` for a new member's).
    changes: Sequence[Changed]
    #: The machine's mutation count the changes were computed against.
    version: int


_NOTHING = ApplyResult()
_PRESENT = ApplyResult(created=True)
_ABSENT = ApplyResult(created=False)
#: Elements copied per step by `StateMachine.copy_state_in_slices`.
COPY_SLICE = 16384


class StateMachine:
    """Map name → value and expiry, changed only by `apply` and `install`.

    Stored compactly (docs/raft.md#large-state): one dict name → value bytes, and one
    name → expire_at for the elements that have a TTL; `element`/`elements` build `Element`
    objects on access.
    """

    def __init__(self) -> None:
        #: name → value of every stored element, expired ones included.
        self._values: dict[str, bytes] = {}
        #: name → expire_at (epoch ms) of the stored elements that have a TTL.
        self._expiries: dict[str, int] = {}
        #: The configuration of the last applied `ConfigChange` (None: none applied).
        self.membership: Membership | None = None
        self.sessions = SessionTable()
        self.lines = LineTable()
        #: Counts `apply` calls: a `PreparedInstall` is valid only at the count it was made at.
        self._version = 0
        self._prepared: PreparedInstall | None = None
        #: None, or where `install` puts the replaced state's dicts for its caller to free off
        #: the event loop (`dref_raft.bulk.release_in_slices`) instead of dropping them.
        self.retired: list[dict[Any, Any] | list[Any]] | None = None
        #: The values as they were when `copy_names_in_slices` copied the names, while a
        #: snapshot is taken from that copy (None: none is).
        self._cow: CopyOnWrite | None = None

    def __len__(self) -> int:
        return len(self._values)

    @property
    def version(self) -> int:
        """Counts the changes (`apply`, `install`): work done off the event loop against the
        state is valid only while this stays the same."""
        return self._version

    def _put(self, name: str, value: bytes, expire_at: int | None) -> None:
        cow = self._cow
        if cow is not None and name not in cow.replaced:  # recorded before it changes
            cow.replaced[name] = self._values.get(name)
        self._values[name] = value
        if expire_at is not None:
            self._expiries[name] = expire_at
        elif self._expiries:
            self._expiries.pop(name, None)

    def _remove(self, name: str) -> None:
        cow = self._cow
        if cow is not None and name not in cow.replaced:
            cow.replaced[name] = self._values.get(name)
        self._values.pop(name, None)
        self._expiries.pop(name, None)

    def _expired(self, name: str, now_ms: int) -> bool:
        expire_at = self._expiries.get(name)
        return expire_at is not None and expire_at <= now_ms

    def apply(self, command: Command) -> ApplyResult:
        """Apply one command and return its events (and `created` for `SetIfNotExist`)."""
        self._version += 1
        values = self._values
        match command:
            case SetElement(name, value, expire_at):
                self._put(name, value, expire_at)
                return ApplyResult((Changed(name, value),))
            case SetIfNotExist(name, value, expire_at):
                if name in values:
                    return ApplyResult((), created=False)
                self._put(name, value, expire_at)
                return ApplyResult((Changed(name, value),), created=True)
            case DeleteElement(name):
                self._remove(name)
                return ApplyResult((Changed(name, None),))
            case ExpireElement(name, expire_at):
                current = values.get(name)
                if current is None:
                    return _ABSENT
                self._put(name, current, expire_at)
                return _PRESENT
            case DeleteIfExpired(name, now):
                if name not in values or not self._expired(name, now):
                    return _NOTHING
                self._remove(name)
                return ApplyResult((Changed(name, None),))
            case StartNewTerm() | NoOp():
                return _NOTHING
            case CompareAndSet(name, expected, value, expire_at, now):
                matched, found = self._matching(name, expected, now)
                if not matched:
                    return ApplyResult((), created=False, current=found)
                # Matched a create (`expected` None) while present: the old one had expired.
                expired = expected is None and name in values
                self._put(name, value, expire_at)
                if expired:
                    return ApplyResult((Changed(name, None), Changed(name, value)), created=True)
                return ApplyResult((Changed(name, value),), created=True)
            case CompareAndDelete(name, expected, now):
                matched, found = self._matching(name, expected, now)
                if not matched:
                    return ApplyResult((), created=False, current=found)
                self._remove(name)
                return ApplyResult((Changed(name, None),), created=True)
            case CompareAndExpire(name, expected, expire_at, now):
                matched, found = self._matching(name, expected, now)
                if not matched:
                    return ApplyResult((), created=False, current=found)
                self._put(name, expected, expire_at)
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
        token = self._values.get(command.lock)
        now = command.now
        stale = now > 0 and self._expired(command.lock, now)
        if token is None or token != command.token or stale:
            return ApplyResult((), created=False, stale=True)
        name, value = command.name, command.value
        if value is None:  # a fenced delete
            self._remove(name)
            return ApplyResult((Changed(name, None),), created=True)
        if command.condition == FENCE_SET:
            self._put(name, value, command.expire_at)
            return ApplyResult((Changed(name, value),), created=True)
        expected = None if command.condition == FENCE_IF_ABSENT else command.expected
        return self.apply(CompareAndSet(name, expected, value, command.expire_at, now))

    def _matching(self, name: str, expected: bytes | None, now: int) -> tuple[bool, bytes | None]:
        """Whether `name` holds `expected` unexpired at `now` (`now` 0: no expiry check;
        `expected` None: absent), and the live value (None: absent or expired)."""
        value = self._values.get(name)
        if value is None or (now > 0 and self._expired(name, now)):
            return expected is None, None
        return value == expected, value

    def compare(self, name: str, expected: bytes | None, now: int) -> tuple[bool, bytes | None]:
        """What a compare command on `name` would find now, without applying it: whether it
        would match, and the live value (see `_matching`)."""
        return self._matching(name, expected, now)

    def get(self, name: str, now_ms: int) -> bytes | None:
        """The value of `name`, or None if it is absent or expired at `now_ms`."""
        value = self._values.get(name)
        if value is None or self._expired(name, now_ms):
            return None
        return value

    def element(self, name: str) -> Element | None:
        """The stored element, expired or not."""
        value = self._values.get(name)
        return None if value is None else Element(value, self._expiries.get(name))

    def elements(self) -> Mapping[str, Element]:
        """A read-only live view of every stored element, expired ones included (an `Element`
        is made per access)."""
        return _ElementsView(self._values, self._expiries)

    def values(self) -> Mapping[str, bytes]:
        """A read-only live view name → value of every stored element, expired ones included."""
        return MappingProxyType(self._values)

    def expiries(self) -> Mapping[str, int]:
        """A read-only live view name → expire_at of the elements that have a TTL."""
        return MappingProxyType(self._expiries)

    def expiration_table(self) -> dict[str, int]:
        """Name → expire_at of every element that has a TTL (what the reaper scans)."""
        return dict(self._expiries)

    def snapshot(self, last_seq: int = 0) -> ClusterSnapshot:
        """Every element (expired ones included), sorted by name, stamped with `last_seq`."""
        return snapshot_of_state(self.copy_state(), last_seq)

    def copy_state(self) -> StateCopy:
        """A point-in-time copy of everything a snapshot holds (the names and the values as two
        lists, each one C-level copy sharing the objects; the expiries; the configuration; the
        sessions; the lines of contended writers): build a snapshot from it in another thread
        with `snapshot_of_state` while this machine keeps applying."""
        values = self._values
        return StateCopy(
            [(list(values), list(values.values()))],
            self._expiries.copy(),
            self.membership,
            self.sessions.states(),
            self.lines.states(),
        )

    def copy_state_in_slices(self, size: int = COPY_SLICE) -> Generator[None, None, StateCopy]:
        """`copy_state` a slice of `size` elements per step: each `next` copies one slice (a
        C call each for the names, the values, the expiries), and the generator returns the
        copy. Nothing may be applied or installed until it is done (`RuntimeError` otherwise):
        the caller pauses its applies and lets the event loop run between the steps."""
        values, expiries, version = self._values, self._expiries, self._version
        slices: list[tuple[list[str], list[bytes]]] = []
        copied = 0
        timed: dict[str, int] = {}
        name_iter, value_iter = iter(values), iter(values.values())
        expiry_iter = iter(expiries.items())
        while copied < len(values) or len(timed) < len(expiries):
            names = list(itertools.islice(name_iter, size))
            if names:
                slices.append((names, list(itertools.islice(value_iter, size))))
                copied += len(names)
            timed.update(itertools.islice(expiry_iter, size))
            yield
            if self._version != version or values is not self._values:
                raise RuntimeError("the state machine changed while its state was being copied")
        return StateCopy(
            slices, timed, self.membership, self.sessions.states(), self.lines.states()
        )

    def copy_names_in_slices(self, size: int = COPY_SLICE) -> Generator[None, None, NamesCopy]:
        """Like `copy_state_in_slices`, but the names only (8 bytes per element instead of
        16): the values are read later, while the snapshot is written, from the live values,
        each one this machine changes meanwhile first recorded as it was (`CopyOnWrite`) —
        until `end_copy_on_write`, or an install, which makes the copy unusable
        (`CopyOnWrite.abandoned`). One at a time (`RuntimeError` while another is used)."""
        if self._cow is not None:
            raise RuntimeError("a snapshot is already being taken from a copy of the names")
        values, expiries, version = self._values, self._expiries, self._version
        slices: list[list[str]] = []
        copied = 0
        timed: dict[str, int] = {}
        name_iter, expiry_iter = iter(values), iter(expiries.items())
        while copied < len(values) or len(timed) < len(expiries):
            names = list(itertools.islice(name_iter, size))
            if names:
                slices.append(names)
                copied += len(names)
            timed.update(itertools.islice(expiry_iter, size))
            yield
            if self._version != version or values is not self._values:
                raise RuntimeError("the state machine changed while its state was being copied")
        cow = self._cow = CopyOnWrite(values)
        return NamesCopy(
            slices, cow, timed, self.membership, self.sessions.states(), self.lines.states()
        )

    def end_copy_on_write(self, cow: CopyOnWrite) -> None:
        """The snapshot taken from `cow`'s copy is written (or given up): stop recording."""
        if self._cow is cow:
            self._cow = None

    def _abandon_copy_on_write(self) -> None:
        """The whole state is replaced: a snapshot being taken from a copy of the names can no
        longer read the values it needs."""
        if self._cow is not None:
            self._cow.abandoned = True
            self._cow = None

    def prepare_install(
        self, snapshot: ClusterSnapshot, state: dict[str, bytes] | None = None
    ) -> PreparedInstall:
        """Do `install`'s heavy work for `snapshot` (safe in a worker thread while the event
        loop applies): the new state and the changes against the current one. Hand it to
        `offer_prepared`; `install` uses it if nothing was applied in between. `state`: the
        snapshot's name → value, filled while it was decoded (`SnapshotDecoder`), used as the
        new state instead of building it."""
        version = self._version
        with paused_gc():
            try:
                in_place = _difference(self._values, snapshot.entries)
                if in_place is not None:
                    changes, expiries = in_place
                    return PreparedInstall(snapshot, None, expiries, changes, version)
                values, expiries = _state_of(snapshot.entries, state)
                changes = _changes(self._values, values, snapshot.entries)
            except RuntimeError:  # the loop applied meanwhile: `install` will not use it
                values, expiries = _state_of(snapshot.entries, state)
                changes = _changes(self._values.copy(), values, snapshot.entries)
        return PreparedInstall(snapshot, values, expiries, changes, version)

    def offer_prepared(self, prepared: PreparedInstall) -> None:
        """Let the next `install` of `prepared.snapshot` swap in the prepared state."""
        self._prepared = prepared

    def install(
        self, snapshot: ClusterSnapshot, state: dict[str, bytes] | None = None
    ) -> Sequence[Changed]:
        """Replace the whole state with `snapshot` and return what changed, sorted by name.

        An element is reported when it was removed (value None) or when its value is new or
        different; a changed expiry alone is not a change. Duplicate keys: the later wins.
        A matching `offer_prepared` result (nothing applied since) makes this a quick swap;
        `state`: as for `prepare_install`.
        """
        prepared, self._prepared = self._prepared, None
        self._version += 1
        self._abandon_copy_on_write()
        self.membership = snapshot.membership
        self.sessions.restore(snapshot.sessions)
        self.lines.restore(snapshot.lines)
        if (
            prepared is not None
            and prepared.snapshot.entries is snapshot.entries
            and prepared.version == self._version - 1
        ):
            self._retire(prepared.values is not None)
            self._expiries = prepared.expiries
            changes = prepared.changes
            if prepared.values is None:  # a few differences, applied here
                assert isinstance(changes, ChangeList)
                values = self._values
                for name, value in zip(changes.names, changes.values, strict=True):
                    if value is None:
                        del values[name]
                    else:
                        values[name] = value
            else:
                self._values = prepared.values
            return prepared.changes
        self._retire(True)
        with paused_gc():
            values, expiries = _state_of(snapshot.entries, state)
            changes = _changes(self._values, values, snapshot.entries)
        self._values, self._expiries = values, expiries
        return changes

    def restore(
        self, snapshot: ClusterSnapshot, values: dict[str, bytes], expiries: dict[str, int]
    ) -> None:
        """Start from `snapshot` whose elements were decoded into `values` and `expiries`
        (taken as they are: a member booting from a snapshot held in its file); the current
        state is dropped, nothing is reported."""
        self._version += 1
        self._prepared = None
        self._abandon_copy_on_write()
        self.membership = snapshot.membership
        self.sessions.restore(snapshot.sessions)
        self.lines.restore(snapshot.lines)
        self._values, self._expiries = values, expiries

    def _retire(self, values: bool) -> None:
        """Hand the expiries (and the values) about to be replaced to `retired`."""
        if self.retired is not None:
            self.retired.append(self._expiries)
            if values:
                self.retired.append(self._values)


class _ElementsView(Mapping[str, Element]):
    """`StateMachine.elements`: the two dicts seen as name → `Element`."""

    __slots__ = ("_expiries", "_values")

    def __init__(self, values: dict[str, bytes], expiries: dict[str, int]) -> None:
        self._values = values
        self._expiries = expiries

    def __getitem__(self, name: str) -> Element:
        return Element(self._values[name], self._expiries.get(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, name: object) -> bool:
        return name in self._values


@dataclass(frozen=True, slots=True)
class StateCopy:
    """`StateMachine.copy_state`: the names and their values as parallel lists in slices
    (one per step of `copy_state_in_slices`, so that sorting them needs no second copy of
    them all: each slice is sorted and freed in turn), the expiries, the configuration, the
    sessions and the lines of contended writers."""

    slices: list[tuple[list[str], list[bytes]]]
    expiries: dict[str, int]
    membership: Membership | None
    sessions: tuple[tuple[bytes, SessionState], ...]
    lines: tuple[tuple[str, LineState], ...] = ()

    def __len__(self) -> int:
        return sum(len(names) for names, _ in self.slices)

    def pairs(self) -> Iterator[tuple[str, bytes]]:
        """The (name, value) pairs, in the copy's order."""
        for names, values in self.slices:
            yield from zip(names, values, strict=True)

    def clear(self) -> None:
        """Drop the copied names, values and expiries."""
        self.slices.clear()
        self.expiries.clear()


class CopyOnWrite:
    """The values of a `StateMachine` as they were when `copy_names_in_slices` copied its
    names: `values` (the live dict) and `replaced`, each name's value before this machine
    first changed it since (None: it had none). The machine records into `replaced` before it
    changes `values`; `value_of` reads them in the other order, so that a worker thread
    reading while the event loop applies gets the old value either way."""

    __slots__ = ("abandoned", "replaced", "values")

    def __init__(self, values: dict[str, bytes]) -> None:
        self.values = values
        self.replaced: dict[str, bytes | None] = {}
        #: The machine's whole state was replaced (an install): `values` is no longer it.
        self.abandoned = False

    def value_of(self, name: str) -> bytes | None:
        """`name`'s value at the copy (None: it had none)."""
        value = self.values.get(name)
        return self.replaced.get(name, value)


@dataclass(frozen=True, slots=True)
class NamesCopy:
    """`StateMachine.copy_names_in_slices`: the names in slices (each sorted in place by
    `sorted_names`), their values through `cow`, and the rest as in `StateCopy`."""

    slices: list[list[str]]
    cow: CopyOnWrite
    expiries: dict[str, int]
    membership: Membership | None
    sessions: tuple[tuple[bytes, SessionState], ...]
    lines: tuple[tuple[str, LineState], ...] = ()

    def __len__(self) -> int:
        return sum(len(names) for names in self.slices)


def sorted_names(copy: NamesCopy) -> Iterator[str]:
    """The copied names in order: each slice sorted in place, the slices merged as they are
    consumed (each freed once merged; `copy.slices` emptied)."""
    runs = copy.slices[:]
    copy.slices.clear()
    for run in runs:
        run.sort()
    if len(runs) == 1:
        return iter(runs.pop())
    iterators = [iter(run) for run in runs]
    runs.clear()
    return heapq.merge(*iterators)


def release_snapshot(box: list[ClusterSnapshot]) -> None:
    """Drop the snapshot `box` holds (its one item, taken out): when nothing else holds it,
    its entries or their names and values, a tuple of `CHUNK_ITEMS` at a time, so that
    freeing a million of them never holds the GIL for long (blocking: a worker thread);
    otherwise only this reference goes (the last holder frees it)."""
    snapshot = box.pop()
    entries = snapshot.entries
    # getrefcount's own argument counts one; `snapshot`: this frame; `entries`: this frame and
    # the snapshot's field; `names`, `values`: this frame and the entries' field.
    if not isinstance(entries, PackedEntries) or sys.getrefcount(snapshot) > 2:
        return
    names, values = entries.names, entries.values
    if sys.getrefcount(entries) > 3 or sys.getrefcount(names) > 3 or sys.getrefcount(values) > 3:
        return
    for chunks in (names.chunks, values.chunks):
        while chunks:
            chunks.pop()


def snapshot_of_state(state: StateCopy, last_seq: int, last_term: int = 0) -> ClusterSnapshot:
    """A snapshot of `state` (a `copy_state` copy, emptied on the way: the caller's thread
    frees it), elements sorted by name, as `PackedEntries` sharing the names and values;
    `last_term`: the term of the entry at `last_seq` (0: unknown).

    At most about two references per element are held at any time besides the state's own
    (docs/raft.md#large-state): the sorted lists become `ChunkedTuple`s one at a time, each
    list freed as soon as its copy exists."""
    with paused_gc():
        sorted_names, sorted_values = _sorted_lists(_sorted_runs(state.slices))
        expiries = {
            bisect.bisect_left(sorted_names, name): at for name, at in state.expiries.items()
        }
        names = ChunkedTuple(sorted_names)
        del sorted_names[:]
        values = ChunkedTuple(sorted_values)
        del sorted_values[:]
        entries = PackedEntries(names, values, expiries)
    snapshot = ClusterSnapshot(
        entries,
        last_seq,
        last_term,
        membership=state.membership,
        sessions=state.sessions,
        lines=state.lines,
    )
    state.clear()
    return snapshot


def sorted_items(state: StateCopy) -> Iterator[tuple[str, bytes]]:
    """The (name, value) pairs of `state` (a `copy_state` copy) in name order, as short sorts
    merged as they are consumed: the copy's lists are emptied as the sorted runs are made,
    and each run is freed once merged; never a sorted list of them all."""
    runs = _sorted_runs(state.slices)
    if len(runs) == 1:
        names, values = runs.pop()
        return zip(names, values, strict=True)
    return _merged(runs)


def sorted_pairs(names: list[str], values: list[bytes]) -> tuple[list[str], list[bytes]]:
    """`names` sorted and `values` in the same order, as short sorts merged in Python (see
    `sorted_in_slices`); the two input lists are emptied as the sorted runs are made, and each
    run is freed once merged, so memory holds about two copies of the references, never a
    tuple per element."""
    return _sorted_lists(_sorted_runs([(names, values)]))


def _sorted_lists(runs: list[tuple[list[str], list[bytes]]]) -> tuple[list[str], list[bytes]]:
    """The names and values of `runs` merged into two lists (`runs` emptied)."""
    if len(runs) == 1:
        return runs.pop()
    out_names: list[str] = []
    out_values: list[bytes] = []
    add_name, add_value = out_names.append, out_values.append
    for name, value in _merged(runs):
        add_name(name)
        add_value(value)
    return out_names, out_values


def _merged(runs: list[tuple[list[str], list[bytes]]]) -> Iterator[tuple[str, bytes]]:
    """The (name, value) pairs of `runs` (each sorted by name) in name order; `runs` is emptied
    at once, so that only the merge's iterators hold the runs: an exhausted list iterator lets
    its list go (`strict` exhausts the values' iterator with the names' one), and each run is
    freed as soon as it is merged."""
    iterators = [zip(iter(names), iter(values), strict=True) for names, values in runs]
    runs.clear()
    return heapq.merge(*iterators)


def _sorted_runs(
    slices: list[tuple[list[str], list[bytes]]],
) -> list[tuple[list[str], list[bytes]]]:
    """Sorted runs of the parallel lists in `slices` (emptied as the runs are made). A slice
    of at most `COPY_SLICE` (a step of `copy_state_in_slices`) is sorted in place and is the
    run: no second list of its references. A longer one is taken `_SORT_SLICE` at a time
    from its end, and dropped once empty."""
    runs: list[tuple[list[str], list[bytes]]] = []
    slices.reverse()
    while slices:
        names, values = slices.pop()
        if len(names) <= COPY_SLICE:
            order = sorted(range(len(names)), key=names.__getitem__)
            names[:] = [names[i] for i in order]
            values[:] = [values[i] for i in order]
            runs.append((names, values))
            continue
        while names:
            chunk, chunk_values = names[-_SORT_SLICE:], values[-_SORT_SLICE:]
            del names[-_SORT_SLICE:], values[-_SORT_SLICE:]
            order = sorted(range(len(chunk)), key=chunk.__getitem__)
            runs.append(([chunk[i] for i in order], [chunk_values[i] for i in order]))
    return runs


#: Names sorted per C call by `sorted_in_slices`.
_SORT_SLICE = 8192


def sorted_in_slices(names: Iterable[str]) -> list[str]:
    """`sorted(names)`, as short sorts merged in Python: one `sorted` of a million names holds
    the GIL for about a second, stalling the event loop even when run in a worker thread."""
    runs = sorted_slices(names)
    if len(runs) <= 1:
        return runs[0] if runs else []
    return list(heapq.merge(*runs))


def sorted_slices(names: Iterable[str]) -> list[list[str]]:
    """`names` taken `_SORT_SLICE` at a time, each slice sorted (one short C call each): runs
    for `heapq.merge`."""
    items = iter(names)
    runs: list[list[str]] = []
    while run := list(itertools.islice(items, _SORT_SLICE)):
        run.sort()
        runs.append(run)
    return runs


def _state_of(
    entries: Sequence[SnapshotEntry], built: dict[str, bytes] | None = None
) -> tuple[dict[str, bytes], dict[str, int]]:
    """The values and expiries `entries` hold (duplicate names: the later wins), built a
    `ChunkedTuple` chunk at a time (each C call holds the GIL); `built`: those values, filled
    while `entries` were decoded, taken as they are."""
    values: dict[str, bytes] = {} if built is None else built
    expiries: dict[str, int] = {}
    if isinstance(entries, PackedEntries):
        names = entries.names
        if built is None:
            for name_chunk, value_chunk in zip(names.chunks, entries.values.chunks, strict=True):
                values.update(zip(name_chunk, value_chunk, strict=True))
        if len(values) == len(names):  # no duplicates: each expiry belongs to its name
            expiries = {names[i]: at for i, at in entries.expiries.items()}
            return values, expiries
    for entry in entries:
        values[entry.key] = entry.value
        if entry.expire_at is not None:
            expiries[entry.key] = entry.expire_at
        elif expiries:
            expiries.pop(entry.key, None)
    return values, expiries


def _changes(
    old: Mapping[str, bytes], new: Mapping[str, bytes], entries: Sequence[SnapshotEntry]
) -> ChangeList:
    if (
        not old
        and isinstance(entries, PackedEntries)
        and len(new) == len(entries)
        and _ascending(entries.names)
    ):  # a new member: everything changed, in the snapshot's order already
        return ChangeList(entries.names, entries.values)
    changed = [name for name in old if name not in new]
    changed += [name for name, value in new.items() if old.get(name) != value]
    names = sorted_in_slices(changed)
    return ChangeList(names, [new.get(name) for name in names])


#: `prepare_install` applies at most this many differences to the held state in place (on the
#: event loop, in `install`); more, and it builds the new state in the worker thread instead.
IN_PLACE_MAX = 65536


def _difference(
    old: Mapping[str, bytes], entries: Sequence[SnapshotEntry]
) -> tuple[ChangeList, dict[str, int]] | None:
    """For a machine that already holds most of `entries` (a restarted member): the changes
    (which are the differences to apply) and the new expiries; None when the differences are
    many, or `entries` are not `PackedEntries` with strictly ascending (so unique) names."""
    if not old or not isinstance(entries, PackedEntries) or not _ascending(entries.names):
        return None
    names, values = entries.names, entries.values
    held = old.get
    changed = [
        i for i, (name, value) in enumerate(zip(names, values, strict=True)) if held(name) != value
    ]
    if len(changed) > IN_PLACE_MAX:
        return None
    new: dict[str, bytes | None] = {names[i]: values[i] for i in changed}
    if len(old) > len(names) - sum(1 for i in changed if names[i] not in old):
        # Some held names are not in the snapshot: removed (`names` are sorted: bisect).
        for name in list(old):
            at = bisect.bisect_left(names, name)
            if at == len(names) or names[at] != name:
                new[name] = None
                if len(new) > IN_PLACE_MAX:
                    return None
    order = sorted_in_slices(new)
    changes = ChangeList(order, [new[name] for name in order])
    return changes, {names[i]: at for i, at in entries.expiries.items()}


class NamedEntrySink:
    """Base of the `EntrySink`s that take a snapshot's entries by name (`take`): keeps the
    expiries by name, and whether the names came strictly ascending (`ascending`: each once,
    as a dref member writes them; else what the subclass built may not be what an install
    builds, duplicates being resolved by position)."""

    def __init__(self) -> None:
        self.expiries: dict[str, int] = {}
        self.ascending = True
        self._last: str | None = None

    def add(self, names: list[str], values: list[bytes]) -> None:
        if names:
            if self.ascending:
                last = self._last
                self.ascending = (last is None or last < names[0]) and _ascending(names)
            self._last = names[-1]
        self.take(names, values)

    def take(self, names: list[str], values: list[bytes]) -> None:
        """The next entries, in the snapshot's order."""
        raise NotImplementedError

    def expire(self, name: str, expire_at: int) -> None:
        self.expiries[name] = expire_at


def _ascending(names: Sequence[str]) -> bool:
    return all(a < b for a, b in itertools.pairwise(names))
