"""Boot recovery (docs/protocol.md#storage-recovery): the three stores' contents → the state a node
starts from.

`recover` is a pure function of what the stores loaded, so it is tested directly; `boot` loads
the stores and also rebuilds the log entries' terms for the core (members and the simulation
both start through it). Differences from upstream, both to lose nothing
committed: the header's commit_seq is trusted only if the log (or the snapshot) really holds
every entry up to it — upstream takes min(commit, last log seq) and so can silently forget
committed entries — and a gap or an undecodable entry in the committed range raises
`CorruptStateError` instead of aborting the process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from dref_raft.commands import Command
from dref_raft.core import CoreState, Snapshot, restore_entries
from dref_raft.errors import CorruptStateError, WireError
from dref_raft.fsm import ClusterSnapshot, StateMachine
from dref_raft.storage import SnapshotStore, Stores
from dref_raft.storage.command_log import LogContents
from dref_raft.storage.layout import COMMIT_SEQ_OFFSET
from dref_raft.storage.voter_state import VoterState
from dref_raft.wire.commands import decode_command, decode_command_term

__all__ = ["RecoveredState", "boot", "recover"]


@dataclass(frozen=True, slots=True)
class RecoveredState:
    """Where a node resumes: applied state, log positions, pending entries, term and vote."""

    #: The state machine with the snapshot installed and every committed entry applied.
    state_machine: StateMachine
    #: The seq the snapshot covers (0 without a snapshot).
    snapshot_last_seq: int
    #: Highest seq stored: max(snapshot last_seq, last log seq).
    last_seq: int
    #: Highest committed seq, all of it applied (upstream sets last_applied = commit_seq).
    commit_seq: int
    #: Uncommitted log entries (seq > commit_seq): seq → `StateCommand` bytes, ascending.
    pending: Mapping[int, bytes]
    term: int
    voted_for: str | None
    #: Bytes of a torn final log record that the load ignored.
    discarded_log_bytes: int = 0

    @property
    def has_persisted_vote_state(self) -> bool:
        """Upstream's `has_persisted`: a term above 0 or a vote was saved
        (docs/protocol.md#storage-recovery step 7)."""
        return self.term > 0 or self.voted_for is not None


def recover(
    snapshot: ClusterSnapshot | None,
    log: LogContents,
    voter: VoterState,
    state: dict[str, bytes] | None = None,
    expiries: dict[str, int] | None = None,
) -> RecoveredState:
    """Rebuild a node's state from what its three stores loaded (docs/protocol.md#storage-recovery
    steps 2 to 7); `state`: the snapshot's name → value, filled while it was decoded
    (`SnapshotDecoder`); `expiries`: with `state`, for a snapshot held in its file (its
    entries not in memory: `SnapshotStore.load_held`), its name → expire_at.

    Raises `CorruptStateError` when a committed entry is missing from the log or cannot be
    decoded: the node must not start from a state it cannot rebuild fully.
    """
    machine = StateMachine()
    snapshot_last_seq = 0
    if snapshot is not None and state is not None and expiries is not None:
        machine.restore(snapshot, state, expiries)
        snapshot_last_seq = snapshot.last_seq
    elif snapshot is not None:
        machine.install(snapshot, state)  # boot: nobody is subscribed, the events are irrelevant
        snapshot_last_seq = snapshot.last_seq
    commands = {record.seq: record.command for record in log.records}
    stored_through = max(snapshot_last_seq, log.last_seq)
    if log.commit_seq > stored_through:
        raise CorruptStateError(
            log.path,
            COMMIT_SEQ_OFFSET,
            f"commit_seq is {log.commit_seq} but the log ends at seq {log.last_seq} and the "
            f"snapshot at {snapshot_last_seq}: committed entries are missing",
        )
    commit_seq = max(snapshot_last_seq, log.commit_seq)
    for seq in range(snapshot_last_seq + 1, commit_seq + 1):
        data = commands.get(seq)
        if data is None:
            raise CorruptStateError(
                log.path,
                COMMIT_SEQ_OFFSET,
                f"committed entry seq {seq} is missing (commit_seq {commit_seq}, "
                f"snapshot last_seq {snapshot_last_seq})",
            )
        try:
            command = decode_command(data)
        except WireError as exc:
            raise CorruptStateError(
                log.path, log.offsets[seq], f"committed entry seq {seq}: {exc}"
            ) from exc
        machine.apply(command)
    pending = {seq: data for seq, data in sorted(commands.items()) if seq > commit_seq}
    return RecoveredState(
        state_machine=machine,
        snapshot_last_seq=snapshot_last_seq,
        last_seq=stored_through,
        commit_seq=commit_seq,
        pending=MappingProxyType(pending),
        term=voter.term,
        voted_for=voter.voted_for,
        discarded_log_bytes=log.discarded_bytes,
    )


def boot(stores: Stores, held: Path | None = None) -> tuple[StateMachine, CoreState]:
    """The state machine and the core's start state from the three stores (`recover`, then
    the stored entries with their terms rebuilt). `held`: with a file store, where to keep
    the snapshot (hard-linked, `SnapshotStore.load_held`): its entries stay in that file, not
    in memory."""
    # A file store fills the state as it decodes (never the whole snapshot and then the
    # state built from it: docs/raft.md#large-state).
    values: dict[str, bytes] | None = None
    expiries: dict[str, int] | None = None
    snapshot: ClusterSnapshot | None
    if isinstance(stores.snapshot, SnapshotStore):
        values = {}
        loaded = stores.snapshot.load_held(held, values) if held is not None else None
        if loaded is not None:
            snapshot, expiries = loaded
        else:
            snapshot = stores.snapshot.load(values)
    else:
        snapshot = stores.snapshot.load()
    log = stores.command_log.load()
    voter = stores.voter_state.load()
    recovered = recover(snapshot, log, voter, values, expiries)
    del values, expiries
    base = snapshot if snapshot is not None else ClusterSnapshot()
    records: list[tuple[int, Command, int | None]] = []
    expected = base.last_seq + 1
    for record in log.records:
        if record.seq < expected:
            continue
        if record.seq != expected:
            # A gap above the commit: uncommitted leftovers
            # (docs/protocol.md#weak-consensus-quorum-lost-rollback) are dropped.
            stores.command_log.truncate_from(expected)
            break
        command, marker = decode_command_term(record.command)
        records.append((record.seq, command, marker))
        expected += 1
    entries = restore_entries(records, base.last_term)
    state = CoreState(
        term=voter.term,
        vote=voter.voted_for,
        commit=recovered.commit_seq,
        snapshot=Snapshot(base.last_seq, base.last_term, base),
        entries=entries,
    )
    return recovered.state_machine, state
