"""Generated protobuf and gRPC code of the upstream DRef protocol (io.github.tobia80).

Do not edit: regenerate with `python packages/dref-raft/scripts/generate_protos.py`.
These types stay inside dref_raft (wire codec, transport, storage); convert at the edge.
"""
