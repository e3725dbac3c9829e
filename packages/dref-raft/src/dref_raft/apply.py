"""The one `Ready` applier: the driver contract, carried out synchronously.

Both the member's asyncio driver (`dref_raft.member.node`) and the simulation
(`dref_raft.simulation.node`) process every `Ready` of their core through a `ReadyApplier`, so
the simulation runs exactly the code production runs. The contract (docs/raft-consensus.md):

0. (`send_early`) send the leader's replication messages (`SEND_BEFORE_PERSIST`) at once, while
   its own log write runs (Raft thesis §10.2.1) — only when the `Ready` changes neither term nor
   vote. Everything else waits for step 1: a response or a vote promises what is durable. The
   leader's own entries count toward a commit only once persisted: the core counts itself
   through the seq `advance` marks stable, and no acknowledgement reaches the core before that;
1. persist (`persist`): the snapshot, the truncation, the entries, the hard state, durably
   (one fsync per file written; the commit seq rides on the next one, see
   `StoreWriter.persist`); this is the only step that blocks, and it touches nothing but the
   stores, so an asyncio driver runs it in a worker thread while the core waits;
2. (`carry_out`, the rest) install a received snapshot into the state machine; fail the
   proposals a truncation replaced;
3. send the messages step 0 did not;
4. apply the committed entries in order (every result is decided by `fsm.StateMachine`);
5. serve the reads that became safe, fail the dropped ones; report a new role;
6. advance the core.

What happens around a step (futures, change events, sockets) is the driver's, through the
`ReadyEffects` it hands in. Snapshots of the state machine are taken here too
(`next_ready` answers a core that asks for one; `compact_due` every `snapshot_every` applies).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

from dref_raft.commands import StartNewTerm
from dref_raft.core import (
    AppendEntries,
    Entry,
    Heartbeat,
    InstallSnapshot,
    Message,
    RaftCore,
    ReadIndex,
    Ready,
    Snapshot,
    SoftState,
)
from dref_raft.fsm import ApplyResult, Changed, ClusterSnapshot, StateMachine
from dref_raft.storage import LogRecord, Stores, VoterState
from dref_raft.wire.command_bytes import command_bytes
from dref_raft.wire.commands import encode_command

__all__ = [
    "SEND_BEFORE_PERSIST",
    "TRUNCATE_LOG_EVERY",
    "ReadyApplier",
    "ReadyEffects",
    "StoreWriter",
    "log_records",
]

#: What only a leader sends, and may send before its own persist finishes (step 0): none of
#: them promises anything about the sender's disk.
SEND_BEFORE_PERSIST = (AppendEntries, Heartbeat, InstallSnapshot, ReadIndex)
#: A node's own snapshots drop the log entries they cover from the log file every this many
#: snapshots only: that rewrite reads and re-writes the whole file (three fsyncs) while the
#: driver waits; entries a saved snapshot covers are skipped on boot.
TRUNCATE_LOG_EVERY = 4


class ReadyEffects(Protocol):
    """What a driver does with the outcome of each step (all called on the core's thread)."""

    def snapshot_installed(self, snapshot: Snapshot, changes: Sequence[Changed]) -> None:
        """A snapshot replaced the state machine; `changes` is what it changed."""

    def entries_truncated(self, from_seq: int) -> None:
        """Log entries from `from_seq` on were replaced: their proposals never apply."""

    def send(self, messages: Sequence[Message]) -> None:
        """Send `messages` (requests to peers and responses to requests received)."""

    def entry_applied(self, entry: Entry, result: ApplyResult) -> None:
        """`entry` was applied with `result`."""

    def read_done(self, request_id: int, ok: bool) -> None:
        """A ReadIndex read is safe to serve now (`ok`) or was dropped (not leader)."""

    def role_changed(self, soft: SoftState) -> None:
        """The role, term or known leader changed."""


def log_records(ready: Ready) -> tuple[LogRecord, ...]:
    """`ready`'s entries as the command log's records (the commands' wire bytes, encoded once
    for the log and the AppendEntries that carry them: `dref_raft.wire.command_bytes`)."""
    return tuple(
        LogRecord(
            e.seq,
            encode_command(e.command, term=e.term)
            if isinstance(e.command, StartNewTerm)
            else command_bytes(e.command),
        )
        for e in ready.entries
    )


class StoreWriter:
    """Step 1 against a node's three stores (None: a node that persists nothing).

    Only the stores are touched, so `persist` and `save_snapshot` may run in a worker thread.
    Each write is durable when the call returns.
    """

    def __init__(self, stores: Stores | None, *, term: int, vote: str | None, commit: int) -> None:
        self.stores = stores
        self._saved_voter = (term, vote)
        self._saved_commit = commit
        self._snapshots_saved = 0

    def persist(self, ready: Ready, records: Sequence[LogRecord] | None = None) -> None:
        """Save `ready`'s snapshot, truncation, entries and hard state, in that order.

        `records` is `log_records(ready)` when the caller encoded them already (a driver does,
        on its own thread, so that the worker thread only writes and syncs).

        Each file written is fsync'ed once. The commit seq alone is written without an fsync
        of its own, after the entries: it becomes durable with the log's next append (or a
        rewrite), and a crash before that leaves an older commit, which the node learns again
        from its leader (the commit is knowledge, not a promise: Raft keeps it volatile).
        """
        stores = self.stores
        if stores is None:
            hard = ready.hard_state
            if hard is not None:  # what step 0 compares with
                self._saved_voter, self._saved_commit = (hard.term, hard.vote), hard.commit
            return
        log = stores.command_log
        rewrote = False
        if ready.snapshot is not None:
            snap = ready.snapshot
            stores.snapshot.save(
                dataclasses.replace(snap.data, last_seq=snap.seq, last_term=snap.term)
            )
            log.truncate_through(snap.seq)
            rewrote = True
        if ready.truncate_from is not None:
            log.truncate_from(ready.truncate_from)
        if ready.entries:
            log.append_many(log_records(ready) if records is None else records)
        hard = ready.hard_state
        if hard is not None and (hard.term, hard.vote) != self._saved_voter:
            stores.voter_state.save(VoterState(hard.term, hard.vote))
            self._saved_voter = (hard.term, hard.vote)
        commit = hard.commit if hard is not None else self._saved_commit
        if commit != self._saved_commit or rewrote:
            log.set_commit_seq(commit, durable=rewrote)
            self._saved_commit = commit

    def voter_changes(self, ready: Ready) -> bool:
        """Whether `ready` changes the term or the vote (to be saved by `persist`)."""
        hard = ready.hard_state
        return hard is not None and (hard.term, hard.vote) != self._saved_voter

    def save_snapshot(self, data: ClusterSnapshot) -> int:
        """Save a snapshot the node took itself, and every `TRUNCATE_LOG_EVERY` snapshots drop
        the log entries it covers from the file; the bytes of the snapshot file (0 without
        stores)."""
        stores = self.stores
        if stores is None:
            return 0
        size = stores.snapshot.save(data)
        self.drop_log_through(data.last_seq)
        return size

    def drop_log_through(self, seq: int) -> None:
        """Once a snapshot covering them is saved: every `TRUNCATE_LOG_EVERY`-th time, drop the
        log entries through `seq` from the file (a rewrite; not concurrently with `persist`:
        both write the command log)."""
        stores = self.stores
        if stores is None:
            return
        self._snapshots_saved += 1
        if self._snapshots_saved % TRUNCATE_LOG_EVERY:
            return
        stores.command_log.truncate_through(seq)
        stores.command_log.set_commit_seq(self._saved_commit)


class ReadyApplier:
    """Carries out every `Ready` of `core` against `machine` and `writer`, telling `effects`."""

    def __init__(
        self,
        core: RaftCore,
        machine: StateMachine,
        writer: StoreWriter,
        effects: ReadyEffects,
        *,
        snapshot_every: int,
        offers_snapshots: bool = True,
        catch_up_entries: int = 0,
    ) -> None:
        self.core = core
        #: Entries a compaction keeps of those its snapshot covers (`RaftCore.compact`'s
        #: `keep`): a follower that far behind catches up from the log.
        self.catch_up_entries = catch_up_entries
        #: Whether `next_ready` gives a core that `wants_snapshot` the state machine's snapshot
        #: itself, on the caller's thread; False: the driver offers it (`RaftNode` builds it
        #: in a worker thread).
        self.offers_snapshots = offers_snapshots
        self.machine = machine
        self.writer = writer
        self.effects = effects
        self.snapshot_every = snapshot_every
        self.applies_since_snapshot = 0
        #: The `Ready` whose (non-empty) early messages `send_early` sent; `carry_out` sends
        #: only the others.
        self._sent_early: Ready | None = None

    def next_ready(self) -> Ready | None:
        """The core's next `Ready`, or None when it has nothing to do.

        A core that asks for the state machine (an upstream peer needs a snapshot) is given it
        first, which may itself produce work (unless `offers_snapshots` is False).
        """
        core = self.core
        while True:
            if self.offers_snapshots and core.wants_snapshot:
                core.offer_snapshot(core.applied, self.snapshot_at(core.applied))
            elif core.has_ready():
                return core.ready()
            else:
                return None

    def must_persist(self, ready: Ready) -> bool:
        """Whether step 1 must write durably for `ready` (an fsync: run it in a thread).

        False when there is nothing to write, or only a new commit seq (written without an
        fsync, a page-cache write that `persist` may do on the driver's thread)."""
        return self.writer.stores is not None and bool(
            ready.snapshot
            or ready.entries
            or ready.truncate_from is not None
            or self.writer.voter_changes(ready)
        )

    def early_messages(self, ready: Ready) -> tuple[Message, ...]:
        """The messages of `ready` that step 0 sends before persisting (see the module doc)."""
        if not ready.messages or self.writer.voter_changes(ready):
            return ()
        return tuple(m for m in ready.messages if isinstance(m, SEND_BEFORE_PERSIST))

    def send_early(self, ready: Ready) -> None:
        """Step 0: send `early_messages(ready)` now; `carry_out` sends the rest."""
        early = self.early_messages(ready)
        if early:
            self._sent_early = ready
            self.effects.send(early)

    def persist(self, ready: Ready, records: Sequence[LogRecord] | None = None) -> None:
        """Step 1 (blocking; safe in a worker thread while the core waits); `records`: see
        `StoreWriter.persist`."""
        self.writer.persist(ready, records)

    def carry_out(self, ready: Ready) -> None:
        """Every step after persisting, ending with `advance`."""
        core, effects = self.core, self.effects
        if ready.snapshot is not None:
            changes = self.machine.install(ready.snapshot.data)
            self.applies_since_snapshot = 0
            effects.snapshot_installed(ready.snapshot, changes)
        if ready.truncate_from is not None:
            effects.entries_truncated(ready.truncate_from)
        messages = ready.messages
        if self._sent_early is not None:
            if self._sent_early is ready:
                messages = tuple(m for m in messages if not isinstance(m, SEND_BEFORE_PERSIST))
            self._sent_early = None
        if messages:
            effects.send(messages)
        for entry in ready.committed:
            result = self.machine.apply(entry.command)
            self.applies_since_snapshot += 1
            effects.entry_applied(entry, result)
        for read in ready.reads:
            effects.read_done(read.request_id, True)
        for request_id in ready.dropped_reads:
            effects.read_done(request_id, False)
        if ready.soft_state is not None:
            effects.role_changed(ready.soft_state)
        core.advance(ready)

    def handle(self, ready: Ready) -> None:
        """The whole contract for one `Ready`, synchronously."""
        self.send_early(ready)
        self.persist(ready)
        self.carry_out(ready)

    def compact_due(self) -> ClusterSnapshot | None:
        """Every `snapshot_every` applies: compact the core's log through `applied` and return
        the snapshot, which the caller saves with `writer.save_snapshot`; else None."""
        point = self.compaction_due()
        if point is None:
            return None
        data = self.snapshot_at(point[0])
        self.core.compact(point[0], data, keep=self.catch_up_entries)
        return data

    def compaction_due(self) -> tuple[int, int] | None:
        """Every `snapshot_every` applies: (`applied`, its term), the point to snapshot the
        state machine at now — for a driver that builds the snapshot off its thread (from
        `StateMachine.copy_state`) and hands it to `core.compact` later; else None."""
        every = self.snapshot_every
        if not every or self.applies_since_snapshot < every:
            return None
        self.applies_since_snapshot = 0
        applied = self.core.applied
        if applied <= self.core.log.snapshot.seq:
            return None
        term = self.core.log.term_at(applied)
        assert term is not None, "applied is never below the log's base"
        return applied, term

    def snapshot_at(self, applied: int) -> ClusterSnapshot:
        """The state machine's snapshot; it holds everything through `applied`."""
        term = self.core.log.term_at(applied)
        assert term is not None, "applied is never below the log's base"
        return dataclasses.replace(self.machine.snapshot(applied), last_term=term)
