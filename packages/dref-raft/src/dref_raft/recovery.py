"""Boot recovery (spec §4.5): the three stores' contents → the state a node starts from.

A pure function, so it is tested directly. Differences from upstream, both to lose nothing
committed: the header's commit_seq is trusted only if the log (or the snapshot) really holds
every entry up to it — upstream takes min(commit, last log seq) and so can silently forget
committed entries — and a gap or an undecodable entry in the committed range raises
`CorruptStateError` instead of aborting the process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from dref_raft.fsm import ClusterSnapshot, StateMachine
from dref_raft.storage.command_log import LogContents
from dref_raft.storage.errors import CorruptStateError
from dref_raft.storage.layout import COMMIT_SEQ_OFFSET
from dref_raft.storage.voter_state import VoterState
from dref_raft.wire import WireFormatError, decode_command

__all__ = ["RecoveredState", "recover"]


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
        """Upstream's `has_persisted`: a term above 0 or a vote was saved (§4.5 step 7)."""
        return self.term > 0 or self.voted_for is not None


def recover(
    snapshot: ClusterSnapshot | None, log: LogContents, voter: VoterState
) -> RecoveredState:
    """Rebuild a node's state from what its three stores loaded (spec §4.5 steps 2 to 7).

    Raises `CorruptStateError` when a committed entry is missing from the log or cannot be
    decoded: the node must not start from a state it cannot rebuild fully.
    """
    machine = StateMachine()
    snapshot_last_seq = 0
    if snapshot is not None:
        machine.install(snapshot)  # boot: nobody is subscribed, the events are irrelevant
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
        except WireFormatError as exc:
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
