"""Every error dref-raft raises of its own; each extends core's `dref.errors` tree.

```
DRefError
├── CorruptStateError            a persisted file cannot be read fully: the node does not start
│                                from it (names the file, the byte offset and what was wrong)
├── MissingSimulationDependency (+ ImportError) the simulation's checkers (dref-compat) are not
│                                installed: `pip install 'dref-raft[simulation]'`
├── StorageNotEmptyError (+ FileExistsError) `dref raft snapshot restore` into a storage
│                                directory that already holds a node's files (without --force)
├── SnapshotAbandonedError       member-internal: a snapshot being taken from a copy of the
│                                names was given up, an install replaced the state meanwhile
└── BackendError
    ├── WireError (+ ValueError) bytes received, stored or about to be sent are not a valid
    │   │                        (or are a too large) protobuf message of the expected type
    │   └── ChunkRefusedError    a streamed snapshot chunk, or the finished file, is not what
    │                            its header promised (offset, CRC-32, SHA-256): not installed
    ├── AccessDeniedError (+ PermissionError) the member refused the caller: no or a wrong
    │                            bearer token, or member-to-member traffic without a
    │                            certificate signed by the cluster CA (docs/security.md)
    ├── LimitExceededError (+ ValueError) a request exceeds a member's limit (message,
    │                            element name or value size); names the limit
    ├── WatchUnsupportedError    the member does not serve DRefWatch (an upstream node)
    ├── CompareUnsupportedError  the leader does not serve DRefExt/Compare (a mixed cluster)
    ├── MembershipError          the leader refused a membership change (names why)
    ├── RpcStatusError           transport-internal: a call failed with a gRPC status
    │                            (`LeaderClient` raises the error that status stands for)
    ├── StreamUnsupportedError   transport-internal: the member does not serve DRefStream
    │                            (the call is re-sent as a unary call)
    └── BackendUnavailableError
        ├── TransportError       a peer could not be reached, did not answer in time, or the
        │   │                    RPC failed
        │   └── SnapshotUnsupportedError the member does not serve DRefSnapshot (an upstream
        │                        or older node)
        └── WatchLaggedError     a DRefWatch watcher fell behind its buffer; the client resumes
                                 from its last seq
```

Errors of the consensus itself (`NotLeaderError`, `NoLeaderError`, `QuorumLostError`), of
timeouts and of closed resources are core's (`dref.errors`): callers catch those without
importing this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dref.errors import BackendError, BackendUnavailableError, DRefError

if TYPE_CHECKING:
    import grpc

__all__ = [
    "AccessDeniedError",
    "ChunkRefusedError",
    "CompareUnsupportedError",
    "CorruptStateError",
    "LimitExceededError",
    "MembershipError",
    "MissingSimulationDependency",
    "RpcStatusError",
    "SnapshotAbandonedError",
    "SnapshotUnsupportedError",
    "StorageNotEmptyError",
    "StreamUnsupportedError",
    "TransportError",
    "WatchLaggedError",
    "WatchUnsupportedError",
    "WireError",
]


class CorruptStateError(DRefError):
    """A persisted file cannot be read fully; the node must not start from it.

    `path` names the file, `offset` the byte where reading failed, `reason` what was wrong.
    Nothing was deleted or rewritten.
    """

    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(
            f"{path}: unreadable at byte offset {offset}: {reason} "
            "(refusing to start from state that cannot be read fully; the file was left as is)"
        )


class MissingSimulationDependency(DRefError, ImportError):
    """The simulation's history and lock checkers (dref-compat) are not installed."""


class WireError(BackendError, ValueError):
    """Bytes are not a valid (or are a too large) protobuf message of the expected type."""


class AccessDeniedError(BackendError, PermissionError):
    """The member refused the caller (UNAUTHENTICATED / PERMISSION_DENIED); not retried."""


class LimitExceededError(BackendError, ValueError):
    """A request exceeds a member's limit (the message names it); not retried."""


class TransportError(BackendUnavailableError):
    """A peer could not be reached, did not answer in time, or the RPC failed."""


class WatchUnsupportedError(BackendError):
    """The member does not serve `DRefWatch` (an upstream node): use another member."""


class CompareUnsupportedError(BackendError):
    """The leader does not serve `DRefExt/Compare` (an upstream node): the cluster is mixed.

    Not retried; configure `mixed_cluster = true` so that compare commands are not used.
    """


class MembershipError(BackendError):
    """The leader refused a membership change: not a single-server change, an unknown member,
    a mixed cluster, or the previous change still not committed when the deadline ran out
    (docs/raft.md#membership)."""


class WatchLaggedError(BackendUnavailableError):
    """A watcher fell behind its buffer; the client resumes from its last seq."""


class RpcStatusError(BackendError):
    """A call failed with gRPC status `code` and `details`, as a unary call or on `DRefStream`.

    Transport-internal: `LeaderClient` turns it into the error the status stands for
    (`transport.status.error_of`); callers never see it.
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class StreamUnsupportedError(BackendError):
    """The member does not serve `DRefStream` (UNIMPLEMENTED); the call was not executed.

    Transport-internal: `LeaderClient` re-sends the call as a unary call; callers never see it.
    """


class ChunkRefusedError(WireError):
    """A received snapshot chunk or the finished file is not what the header promised
    (offset, size, CRC-32, SHA-256); it is not installed."""


class SnapshotUnsupportedError(TransportError):
    """The member does not serve `DRefSnapshot` (an upstream or older node)."""


class StorageNotEmptyError(DRefError, FileExistsError):
    """`restore_backup` into a storage directory that already holds a node's files."""


class SnapshotAbandonedError(DRefError):
    """A snapshot being taken from a copy of the names (its values copied on write) cannot be
    completed: an install replaced the whole state meanwhile, and brought a newer snapshot.

    Member-internal: the member drops the snapshot it was taking; callers never see it.
    """
