"""Raft's safety properties, checked incrementally as the simulation runs."""

from __future__ import annotations

from dref_raft.commands import Command, ConfigChange
from dref_raft.core import Entry, RaftCore
from dref_raft.fsm import StateMachine

__all__ = ["InvariantViolation", "Invariants"]


class InvariantViolation(AssertionError):
    """A safety property does not hold."""


class Invariants:
    """Election safety, log matching, leader completeness, state-machine safety, durability.

    Log matching is checked through two facts that imply it by induction: an entry is
    identified by (seq, term), so (a) every log holding (seq, term) has the same command there
    and (b) the same term at seq-1.
    """

    def __init__(self) -> None:
        self.leaders: dict[int, str] = {}
        self.entries: dict[tuple[int, int], tuple[Command, int | None]] = {}
        #: seq → (term, command) of every applied entry.
        self.applied: dict[int, tuple[int, Command]] = {}
        self.max_applied = 0
        #: seq → a term such that every leader of a higher term must hold the entry: the
        #: highest leader term seen when it was first applied (it was committed by then).
        self.committed_by: dict[int, int] = {}
        #: (leader, term) → seq through which completeness was checked (a leader's log only
        #: grows, so each entry is checked once per leadership).
        self._checked: dict[tuple[str, int], int] = {}
        #: node → the highest commit it ever had (a commit is durable: it never goes back).
        self.commits: dict[str, int] = {}

    def check_known_leader(self, core: RaftCore) -> None:
        """A node that is not leading follows only the leader elected in its own term: it
        learns of a leader from that leader's messages of the node's current term, never from
        a message of an earlier term (which a correct node rejects)."""
        if core.leader_id is None or core.leader_id == core.id:
            return
        elected = self.leaders.get(core.term)
        if elected != core.leader_id:
            raise InvariantViolation(
                f"{core.id} in term {core.term} follows {core.leader_id}, but the leader "
                f"elected in term {core.term} is {elected or 'nobody'}"
            )

    def check_leader(self, core: RaftCore) -> None:
        """Election safety and leader completeness for a node that leads now, and the
        configuration rules (`check_leader_config`)."""
        holder = self.leaders.setdefault(core.term, core.id)
        if holder != core.id:
            raise InvariantViolation(f"two leaders in term {core.term}: {holder} and {core.id}")
        self.check_leader_config(core)
        log = core.log
        required = self.max_applied
        while required > 0 and self.committed_by[required] >= core.term:
            required -= 1
        if log.last_seq < required:
            raise InvariantViolation(
                f"leader {core.id} (term {core.term}) ends at {log.last_seq} but "
                f"{required} was committed before its term"
            )
        checked = self._checked.get((core.id, core.term), log.base_seq)
        self._checked[(core.id, core.term)] = max(checked, required)
        for seq in range(max(checked, log.base_seq) + 1, required + 1):
            term, command = self.applied[seq]
            entry = log.entry(seq)
            if entry.term != term or entry.command != command:
                raise InvariantViolation(
                    f"leader {core.id} (term {core.term}) lacks committed entry {seq}: has "
                    f"{entry}, applied was term {term} {command!r}"
                )

    def check_leader_config(self, core: RaftCore) -> None:
        """A leader is a voter of the configuration it holds, except while its own removal is
        not committed yet; and its log holds at most one uncommitted configuration change
        (one server at a time: a second waits for the first to commit)."""
        if core.id not in core.voters and core.commit >= core.config_seq:
            raise InvariantViolation(
                f"leader {core.id} (term {core.term}) is no voter of its configuration "
                f"{core.membership} (entry {core.config_seq}, committed through {core.commit})"
            )
        if core.config_seq <= core.commit:
            return
        pending = [
            e.seq
            for e in core.log.slice(core.commit + 1, core.log.last_seq)
            if isinstance(e.command, ConfigChange)
        ]
        if len(pending) > 1:
            raise InvariantViolation(
                f"leader {core.id} (term {core.term}) holds uncommitted configuration changes "
                f"at {pending}: one at a time"
            )

    def check_entries(self, core: RaftCore, entries: tuple[Entry, ...]) -> None:
        """Log matching for entries a node just appended."""
        log = core.log
        for entry in entries:
            if log.term_at(entry.seq) != entry.term:
                continue  # already replaced again before this check
            prev = log.term_at(entry.seq - 1)
            known = self.entries.setdefault((entry.seq, entry.term), (entry.command, prev))
            if known[0] != entry.command:
                raise InvariantViolation(
                    f"log matching: {core.id} holds {entry} but another log has "
                    f"{known[0]!r} at the same seq and term"
                )
            if prev is not None and known[1] is not None and known[1] != prev:
                raise InvariantViolation(
                    f"log matching: {core.id} holds {entry} after term {prev}, another "
                    f"log after term {known[1]}"
                )

    def check_apply(self, node: str, entry: Entry) -> None:
        """State-machine safety: every node applies the same command at each seq."""
        known = self.applied.setdefault(entry.seq, (entry.term, entry.command))
        if known != (entry.term, entry.command):
            raise InvariantViolation(
                f"state-machine safety: {node} applies {entry} at {entry.seq}, another node "
                f"applied term {known[0]} {known[1]!r}"
            )
        if entry.seq not in self.committed_by:
            self.committed_by[entry.seq] = max(self.leaders, default=0)
        self.max_applied = max(self.max_applied, entry.seq)

    def check_node(self, core: RaftCore) -> None:
        """Committed entries are never lost: a node's commit never goes back (not even over a
        crash), and the entry it holds at its commit is the one applied there."""
        highest = self.commits.get(core.id, 0)
        if core.commit < highest:
            raise InvariantViolation(
                f"committed entries lost: {core.id}'s commit went back from {highest} to "
                f"{core.commit}"
            )
        self.commits[core.id] = core.commit
        term = core.log.term_at(core.commit)
        known = self.applied.get(core.commit)
        if term is not None and known is not None and term != known[0]:
            raise InvariantViolation(
                f"state-machine safety: {core.id} committed through {core.commit} in term "
                f"{term}, but term {known[0]} was applied there"
            )

    def check_log(self, core: RaftCore, limit: int | None = None) -> None:
        """Log matching for entries a node already holds (the first `limit` after its base):
        after a restart, and after a snapshot moved its base."""
        entries = core.log.entries if limit is None else core.log.entries[:limit]
        self.check_entries(core, tuple(entries))

    def check_recovered(self, node: str, commit: int, machine: StateMachine) -> None:
        """Durability: a restarted node's state is the committed log replayed through commit."""
        reference = StateMachine()
        for seq in range(1, commit + 1):
            known = self.applied.get(seq)
            if known is None:
                raise InvariantViolation(f"{node} restarted with commit {commit} but {seq} unknown")
            reference.apply(known[1])
        if dict(reference.elements()) != dict(machine.elements()):
            raise InvariantViolation(f"{node} recovered a state that differs from the log")
        if reference.lines.states() != machine.lines.states():
            raise InvariantViolation(f"{node} recovered lines of waiters that differ from the log")
