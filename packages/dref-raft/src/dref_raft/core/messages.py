"""The core's messages: one dataclass per upstream message kind, plus dref extensions.

Every message has an envelope (`sender`, `to`) that the transport maps to RPC endpoints, the
upstream fields with upstream's meaning (docs/protocol.md#wire-dref-consensus), and extension
fields that only dref
peers send and read (protobuf numbers ≥ 1000, see docs/raft-consensus.md). `ext=True` on a
message advertises that its sender is a dref node; a node relies on extension fields from a
peer only in messages where that peer set `ext`.

Responses are unary RPC results and upstream's carry no echo of the request. The fields
`match_seq` (AppendEntries, InstallSnapshot) and `read_ctx` (ReadIndex) are extension fields
on the wire; for a response without them the transport fills them from the request it sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from dref_raft.commands import Command
from dref_raft.core.types import Entry
from dref_raft.fsm import ClusterSnapshot

__all__ = [
    "AppendEntries",
    "AppendEntriesResponse",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "Message",
    "PreVote",
    "PreVoteResponse",
    "ReadIndex",
    "ReadIndexResponse",
    "Request",
    "Response",
    "Vote",
    "VoteResponse",
]


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Upstream: one `command` at `seq` with the leader's `commit_seq`.

    Extension: `entries` is the whole batch (its first element is `seq`/`command`), after the
    entry `prev_seq` of term `prev_term` (log matching).
    """

    sender: str
    to: str
    term: int
    seq: int
    command: Command
    commit_seq: int
    ext: bool = False
    prev_seq: int = 0
    prev_term: int = 0
    entries: tuple[Entry, ...] = ()


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    """Upstream: `success` and the follower's term.

    `match_seq`: on success the last seq now known to match the leader (extension; filled
    from the request for upstream peers). `reject_hint` (extension): on failure, the highest
    seq that might still match.
    """

    sender: str
    to: str
    term: int
    success: bool
    match_seq: int = 0
    ext: bool = False
    reject_hint: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Upstream: the leader's term and commit seq (for a dref follower: capped at its match)."""

    sender: str
    to: str
    term: int
    commit_seq: int
    ext: bool = False
    #: Extension: the leader hands over leadership; campaign at once (Raft's TimeoutNow).
    timeout_now: bool = False


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    """Upstream: `acknowledged` and the follower's term; extension: its last seq."""

    sender: str
    to: str
    term: int
    acknowledged: bool
    ext: bool = False
    last_seq: int = 0


@dataclass(frozen=True, slots=True)
class Vote:
    """Upstream: candidate, its term and last seq; extension: the term of its last entry, and
    `transfer` (the leader asked for this election: voters ignore their leader lease)."""

    sender: str
    to: str
    term: int
    last_seq: int
    ext: bool = False
    last_term: int = 0
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse:
    """Upstream: `granted` and the voter's term."""

    sender: str
    to: str
    term: int
    granted: bool
    ext: bool = False


@dataclass(frozen=True, slots=True)
class PreVote:
    """Upstream: candidate, the term it would start (current + 1) and its last seq."""

    sender: str
    to: str
    term: int
    last_seq: int
    ext: bool = False
    last_term: int = 0


@dataclass(frozen=True, slots=True)
class PreVoteResponse:
    """Upstream: `granted` and the voter's current term (nothing is persisted)."""

    sender: str
    to: str
    term: int
    granted: bool
    ext: bool = False


@dataclass(frozen=True, slots=True)
class ReadIndex:
    """Upstream: a leader asking whether it is still leader; extension: `read_ctx`."""

    sender: str
    to: str
    term: int
    ext: bool = False
    read_ctx: int = 0


@dataclass(frozen=True, slots=True)
class ReadIndexResponse:
    """Upstream: `granted` and the follower's term; `read_ctx` echoes the request."""

    sender: str
    to: str
    term: int
    granted: bool
    read_ctx: int = 0
    ext: bool = False


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """Upstream: the whole state at `last_seq`; extension: the term of that entry."""

    sender: str
    to: str
    term: int
    snapshot: ClusterSnapshot
    last_seq: int
    ext: bool = False
    last_term: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshotResponse:
    """Upstream: `success` and the follower's term; `match_seq` echoes `last_seq`."""

    sender: str
    to: str
    term: int
    success: bool
    match_seq: int = 0
    ext: bool = False


Request = AppendEntries | Heartbeat | Vote | PreVote | ReadIndex | InstallSnapshot
Response = (
    AppendEntriesResponse
    | HeartbeatResponse
    | VoteResponse
    | PreVoteResponse
    | ReadIndexResponse
    | InstallSnapshotResponse
)
Message = Request | Response
