"""The pure, deterministic Raft core of dref-raft (no I/O, clock or global randomness).

`RaftCore` takes ticks, messages, proposals and read requests, and hands out `Ready`
batches: what to persist, send, apply and answer. See docs/raft-consensus.md.
"""

from __future__ import annotations

from dref_raft.core.config import CoreConfig
from dref_raft.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    PreVote,
    PreVoteResponse,
    ReadIndex,
    ReadIndexResponse,
    Request,
    Response,
    Vote,
    VoteResponse,
)
from dref_raft.core.progress import PeerKind, Progress, ReplicationState
from dref_raft.core.raft import RaftCore
from dref_raft.core.ready import CoreState, Ready, restore_entries
from dref_raft.core.types import (
    EMPTY_SNAPSHOT,
    ConfigRefused,
    Entry,
    HardState,
    NotLeader,
    Proposed,
    ReadState,
    Role,
    Snapshot,
    SoftState,
)

__all__ = [
    "EMPTY_SNAPSHOT",
    "AppendEntries",
    "AppendEntriesResponse",
    "ConfigRefused",
    "CoreConfig",
    "CoreState",
    "Entry",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "Message",
    "NotLeader",
    "PeerKind",
    "PreVote",
    "PreVoteResponse",
    "Progress",
    "Proposed",
    "RaftCore",
    "ReadIndex",
    "ReadIndexResponse",
    "ReadState",
    "Ready",
    "ReplicationState",
    "Request",
    "Response",
    "Role",
    "Snapshot",
    "SoftState",
    "Vote",
    "VoteResponse",
    "restore_entries",
]
