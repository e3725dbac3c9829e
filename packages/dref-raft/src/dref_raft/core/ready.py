"""The core's output batch (`Ready`) and its input state after a restart (`CoreState`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dref_raft.commands import Command, StartNewTerm
from dref_raft.core.messages import Message
from dref_raft.core.types import EMPTY_SNAPSHOT, Entry, HardState, ReadState, Snapshot, SoftState

__all__ = ["CoreState", "Ready", "restore_entries"]


@dataclass(frozen=True, slots=True)
class Ready:
    """Everything the driver must do, in this order (see docs/raft-consensus.md):

    1. persist: `snapshot` (save it, install it into the state machine, drop stored entries
       through its seq), then delete stored entries from `truncate_from`, append `entries`,
       save `hard_state` — all durably;
    2. send `messages`;
    3. apply `committed` in order;
    4. serve `reads` (all their entries are applied now); fail `dropped_reads`;
    5. call `advance(ready)`.
    """

    messages: tuple[Message, ...] = ()
    snapshot: Snapshot | None = None
    truncate_from: int | None = None
    entries: tuple[Entry, ...] = ()
    hard_state: HardState | None = None
    committed: tuple[Entry, ...] = ()
    reads: tuple[ReadState, ...] = ()
    dropped_reads: tuple[int, ...] = ()
    soft_state: SoftState | None = None

    def __bool__(self) -> bool:
        return bool(
            self.messages
            or self.snapshot
            or self.truncate_from is not None
            or self.entries
            or self.hard_state
            or self.committed
            or self.reads
            or self.dropped_reads
            or self.soft_state
        )


@dataclass(frozen=True, slots=True)
class CoreState:
    """What a node persisted, to start a core from: hard state, snapshot and log entries.

    Entries are every stored entry after the snapshot (committed ones included), with their
    terms (see `restore_entries`). The state machine must already hold everything through
    `commit` (as `dref_raft.storage.recovery.recover` leaves it).
    """

    term: int = 0
    vote: str | None = None
    commit: int = 0
    snapshot: Snapshot = EMPTY_SNAPSHOT
    entries: Sequence[Entry] = field(default_factory=tuple)


def restore_entries(
    records: Iterable[tuple[int, Command, int | None]], base_term: int
) -> list[Entry]:
    """Entries with terms from stored `(seq, command, marker_term)` records.

    Every dref leader's first entry is a `StartNewTerm` whose term is stored with it (the
    extension field of `StartNewTermCommand`, passed here as `marker_term`), so an entry's term
    is the marker term of the last `StartNewTerm` at or before it, or `base_term` (the
    snapshot's term) when there is none after the snapshot.
    """
    term = base_term
    entries = []
    for seq, command, marker_term in records:
        if isinstance(command, StartNewTerm) and marker_term is not None:
            term = marker_term
        entries.append(Entry(seq, term, command))
    return entries
