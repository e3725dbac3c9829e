"""What a simulated node has persisted: exactly what the driver contract made durable."""

from __future__ import annotations

from dataclasses import dataclass, field

from dref_raft.commands import Command, StartNewTerm
from dref_raft.core import EMPTY_SNAPSHOT, CoreState, HardState, Ready, Snapshot, restore_entries
from dref_raft.fsm import StateMachine

__all__ = ["SimStorage"]


@dataclass(slots=True)
class SimStorage:
    """Voter state + commit, snapshot and log records `(command, marker_term)` by seq.

    Only a `StartNewTerm` keeps its term (the proposed extension field), as the real log
    store would; terms of other entries are rebuilt with `restore_entries` on restart.
    """

    hard: HardState = field(default_factory=lambda: HardState(0, None, 0))
    snapshot: Snapshot = EMPTY_SNAPSHOT
    log: dict[int, tuple[Command, int | None]] = field(default_factory=dict)

    def persist(self, ready: Ready) -> None:
        """Step 1 of the driver contract."""
        if ready.snapshot is not None:
            self.snapshot = ready.snapshot
            self.drop_through(ready.snapshot.seq)
        if ready.truncate_from is not None:
            for seq in [s for s in self.log if s >= ready.truncate_from]:
                del self.log[seq]
        for entry in ready.entries:
            marker = entry.term if isinstance(entry.command, StartNewTerm) else None
            self.log[entry.seq] = (entry.command, marker)
        if ready.hard_state is not None:
            self.hard = ready.hard_state

    def drop_through(self, seq: int) -> None:
        """Delete stored entries through `seq` (a snapshot covers them)."""
        for s in [s for s in self.log if s <= seq]:
            del self.log[s]

    def recover(self) -> tuple[CoreState, StateMachine]:
        """The core's restart state and the state machine replayed through the commit."""
        machine = StateMachine()
        machine.install(self.snapshot.data)
        commit = max(self.hard.commit, self.snapshot.seq)
        for seq in range(self.snapshot.seq + 1, commit + 1):
            machine.apply(self.log[seq][0])
        records = [(s, c, m) for s, (c, m) in sorted(self.log.items()) if s > self.snapshot.seq]
        entries = restore_entries(records, self.snapshot.term)
        state = CoreState(self.hard.term, self.hard.vote, commit, self.snapshot, entries)
        return state, machine
