"""Our dataclasses ⇄ upstream's protobuf bytes: the only importer of the generated `_pb` code.

* `commands`: replicated commands (`StateCommand`) and snapshots (`ClusterSnapshot`), as the
  log, the snapshot file and `InstallSnapshot` carry them;
* `messages`: node-to-node and client messages of every gRPC service (`DRefConsensus`,
  `DRefRaft`, `DRefExt`, `DRefWatch`), their method names and paths.

Malformed or oversized bytes raise `dref_raft.errors.WireError`. Details: docs/raft-wire.md.
"""
