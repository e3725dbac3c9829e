"""The transport of dref-raft: gRPC (upstream-compatible) and in-memory (tests).

* `grpc_server.GrpcServer`: `DRefConsensus` + `DRefRaft` + `DRefWatch` + `DRefExt` on one port;
* `grpc_client.PeerClients` / `LeaderClient` / `WatchClient`: the calling side;
* `tcp_channel`: the dref-only TCP channel that carries `Session`s between dref nodes when a
  member announces it (docs/raft-wire.md#tcp-channel);
* `memory.MemoryNetwork`: the same interfaces without sockets, with fault injection;
* `retry.with_leader`: upstream's client retry policy, bounded by a deadline;
* `status`: dref errors ⇄ upstream's gRPC statuses.

Bytes are made and parsed by `dref_raft.wire` (the only importer of the generated `_pb` code);
errors are `dref_raft.errors`'s. Wire details and the extension-field table: docs/raft-wire.md.
"""

from __future__ import annotations

from dref_raft.transport.base import (
    DEFAULT_PORT,
    ClientHandler,
    CompareHandler,
    ConsensusHandler,
    LeaderApi,
    PeerTransport,
    WatchApi,
    WatchHandler,
)
from dref_raft.transport.grpc_client import LeaderClient, PeerClients, WatchClient
from dref_raft.transport.grpc_server import GrpcServer
from dref_raft.transport.memory import (
    MemoryLeaderClient,
    MemoryNetwork,
    MemoryPeerClients,
    MemoryWatchClient,
)
from dref_raft.transport.retry import RetryPolicy, with_leader

__all__ = [
    "DEFAULT_PORT",
    "ClientHandler",
    "CompareHandler",
    "ConsensusHandler",
    "GrpcServer",
    "LeaderApi",
    "LeaderClient",
    "MemoryLeaderClient",
    "MemoryNetwork",
    "MemoryPeerClients",
    "MemoryWatchClient",
    "PeerClients",
    "PeerTransport",
    "RetryPolicy",
    "WatchApi",
    "WatchClient",
    "WatchHandler",
    "with_leader",
]
