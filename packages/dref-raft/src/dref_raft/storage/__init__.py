"""Raft persistence in upstream's on-disk formats (docs/protocol.md#storage): one directory, three
files.

* `voter-state` (DRFT): `VoterStateStore`, the term and the vote;
* `state-snapshot` (DRFS): `SnapshotStore`, the state machine at some seq;
* `command-log` (DRFL): `CommandLogStore`, the commands after it, and the commit seq.

Each has an in-memory twin with the same interface for tests. The stores do synchronous,
durable file I/O (an asyncio caller runs them in a thread). A file that cannot be read fully
raises `CorruptStateError` and is left untouched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dref_raft.errors import CorruptStateError
from dref_raft.storage.command_log import (
    CommandLogStorage,
    CommandLogStore,
    InMemoryCommandLogStore,
    LogContents,
    LogRecord,
)
from dref_raft.storage.snapshot import InMemorySnapshotStore, SnapshotStorage, SnapshotStore
from dref_raft.storage.voter_state import (
    InMemoryVoterStateStore,
    VoterState,
    VoterStateStorage,
    VoterStateStore,
)

__all__ = [
    "CommandLogStorage",
    "CommandLogStore",
    "CorruptStateError",
    "InMemoryCommandLogStore",
    "InMemorySnapshotStore",
    "InMemoryVoterStateStore",
    "LogContents",
    "LogRecord",
    "SnapshotStorage",
    "SnapshotStore",
    "Stores",
    "VoterState",
    "VoterStateStorage",
    "VoterStateStore",
    "in_memory_stores",
    "open_stores",
]


@dataclass(frozen=True, slots=True)
class Stores:
    """The three stores of one node."""

    voter_state: VoterStateStorage
    snapshot: SnapshotStorage
    command_log: CommandLogStorage


def open_stores(directory: str | os.PathLike[str]) -> Stores:
    """The file stores of a storage directory (created on the first write)."""
    return Stores(VoterStateStore(directory), SnapshotStore(directory), CommandLogStore(directory))


def in_memory_stores() -> Stores:
    """Three empty in-memory stores."""
    return Stores(InMemoryVoterStateStore(), InMemorySnapshotStore(), InMemoryCommandLogStore())
