"""Plain values the core takes and hands out: entries, snapshots, hard state, roles, results."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from dref_raft.commands import Command
from dref_raft.fsm import ClusterSnapshot

__all__ = [
    "EMPTY_SNAPSHOT",
    "ConfigRefused",
    "Entry",
    "HardState",
    "NotLeader",
    "Proposed",
    "ReadState",
    "Role",
    "Snapshot",
    "SoftState",
]


class Role(Enum):
    """A node's role. `PRE_CANDIDATE` runs PreVote without changing its term."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry: its seq, the term of the leader that created it, and its command."""

    seq: int
    term: int
    command: Command


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine through `seq`, whose entry had term `term` (0, 0: the empty state)."""

    seq: int
    term: int
    data: ClusterSnapshot


EMPTY_SNAPSHOT = Snapshot(0, 0, ClusterSnapshot())


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message of the same `Ready` is sent."""

    term: int
    vote: str | None
    commit: int


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile role information, reported when it changes."""

    role: Role
    leader_id: str | None
    term: int


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read that became linearizable once every entry through `seq` has been applied.

    The core only reports a read when all of those entries have been handed out in this or an
    earlier `Ready`, so the driver serves it right after applying this `Ready`.
    """

    request_id: int
    seq: int


@dataclass(frozen=True, slots=True)
class Proposed:
    """Commands accepted by the leader at `first_seq..last_seq` in `term`.

    A proposal succeeded iff the entry later applied at its seq has the same term.
    """

    term: int
    first_seq: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class NotLeader:
    """Refusal: this node is not the leader (or cannot serve yet); `leader_id` is a hint."""

    leader_id: str | None


@dataclass(frozen=True, slots=True)
class ConfigRefused:
    """Refusal of a configuration change by the leader, and why (docs/raft.md#membership).

    `retriable`: the same change may be accepted later (the previous one is not committed
    yet, or the new leader has not committed an entry of its term).
    """

    reason: str
    retriable: bool = False
