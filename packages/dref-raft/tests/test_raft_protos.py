"""The generated protobuf code matches upstream's schema (docs/protocol.md#wire) field by field."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dref_raft._pb import (
    dref_consensus_pb2,
    dref_consensus_pb2_grpc,
    dref_pb2,
    dref_pb2_grpc,
    raft_pb2,
    state_command_pb2,
)

PACKAGE = "io.github.tobia80"
PB_DIR = Path(dref_pb2.__file__).parent
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "generate_protos.py"

# message → [(number, name, type, kind)]; kind: "" plain, "optional" (proto3 presence),
# "repeated", or "oneof:<name>". Types are scalar names or message names in the package.
SCHEMA: dict[str, list[tuple[int, str, str, str]]] = {
    # state_command.proto (docs/protocol.md#wire-state-command)
    "SetElementCommand": [
        (1, "name", "string", ""),
        (2, "value", "bytes", ""),
        (3, "expire_at", "uint64", "optional"),
    ],
    "SetElementIfNotExistCommand": [
        (1, "name", "string", ""),
        (2, "value", "bytes", ""),
        (3, "expire_at", "uint64", "optional"),
    ],
    "DeleteElementCommand": [(1, "name", "string", "")],
    "ExpireElementCommand": [(1, "name", "string", ""), (2, "expire_at", "uint64", "")],
    "DeleteIfExpiredCommand": [(1, "name", "string", ""), (2, "now", "uint64", "")],
    "StartNewTermCommand": [],
    "StateCommand": [
        (1, "set_element", "SetElementCommand", "oneof:op"),
        (2, "set_element_if_not_exist", "SetElementIfNotExistCommand", "oneof:op"),
        (3, "delete_element", "DeleteElementCommand", "oneof:op"),
        (4, "expire_element", "ExpireElementCommand", "oneof:op"),
        (5, "delete_if_expired", "DeleteIfExpiredCommand", "oneof:op"),
        (6, "start_new_term", "StartNewTermCommand", "oneof:op"),
    ],
    # raft.proto (docs/protocol.md#wire-raft-proto)
    "StartNewTermOpProto": [],
    "KVEntry": [
        (1, "key", "string", ""),
        (2, "value", "bytes", ""),
        (3, "expireAt", "uint64", "optional"),
    ],
    "KVSnapshotChunkData": [(1, "entry", "KVEntry", "repeated")],
    "KVSnapshotChunk": [
        (1, "term", "int32", ""),
        (2, "index", "int64", ""),
        (3, "operation", "KVSnapshotChunkData", ""),
        (4, "snapshotChunkIndex", "int32", ""),
        (5, "snapshotChunkCount", "int32", ""),
    ],
    "SnapshotEntryProto": [
        (1, "term", "int32", ""),
        (2, "index", "int64", ""),
        (3, "snapshotChunk", "KVSnapshotChunk", "repeated"),
    ],
    # dref_consensus.proto (docs/protocol.md#wire-dref-consensus)
    "ClusterSnapshot": [(1, "entries", "KVEntry", "repeated"), (2, "last_seq", "uint64", "")],
    "AppendEntriesRequest": [
        (1, "leader_id", "string", ""),
        (2, "term", "uint64", ""),
        (3, "command", "bytes", ""),
        (4, "seq", "uint64", ""),
        (5, "commit_seq", "uint64", ""),
    ],
    "AppendEntriesResponse": [(1, "success", "bool", ""), (2, "term", "uint64", "")],
    "HeartbeatRequest": [
        (1, "leader_id", "string", ""),
        (2, "term", "uint64", ""),
        (3, "commit_seq", "uint64", ""),
    ],
    "HeartbeatResponse": [(1, "acknowledged", "bool", ""), (2, "term", "uint64", "")],
    "ReadIndexRequest": [(1, "leader_id", "string", ""), (2, "term", "uint64", "")],
    "ReadIndexResponse": [(1, "granted", "bool", ""), (2, "term", "uint64", "")],
    "VoteRequest": [
        (1, "candidate_id", "string", ""),
        (2, "term", "uint64", ""),
        (3, "last_seq", "uint64", ""),
    ],
    "VoteResponse": [(1, "granted", "bool", ""), (2, "term", "uint64", "")],
    "PreVoteRequest": [
        (1, "candidate_id", "string", ""),
        (2, "term", "uint64", ""),
        (3, "last_seq", "uint64", ""),
    ],
    "PreVoteResponse": [(1, "granted", "bool", ""), (2, "term", "uint64", "")],
    "InstallSnapshotRequest": [
        (1, "leader_id", "string", ""),
        (2, "term", "uint64", ""),
        (3, "snapshot", "ClusterSnapshot", ""),
        (4, "last_seq", "uint64", ""),
    ],
    "InstallSnapshotResponse": [(1, "success", "bool", ""), (2, "term", "uint64", "")],
    # dref.proto (docs/protocol.md#wire-dref-raft)
    "EndpointResponse": [(1, "ids", "string", "repeated")],
    "GetEndpointsRequest": [],
    "GetExpirationTableRequest": [],
    "ExpireElementRequest": [
        (1, "id", "string", ""),
        (2, "name", "string", ""),
        (3, "expireAt", "uint64", ""),
    ],
    "ExpireElementResponse": [],
    "SetElementRequest": [
        (1, "id", "string", ""),
        (2, "name", "string", ""),
        (3, "value", "bytes", ""),
        (4, "expireAt", "uint64", "optional"),
    ],
    "SetElementResponse": [],
    "SetElementIfNotExistRequest": [
        (1, "id", "string", ""),
        (2, "name", "string", ""),
        (3, "value", "bytes", ""),
        (4, "expireAt", "uint64", "optional"),
    ],
    "SetElementIfNotExistResponse": [(1, "created", "bool", "")],
    "GetElementRequest": [(1, "id", "string", ""), (2, "name", "string", "")],
    "GetElementResponse": [(1, "value", "bytes", "optional")],
    "DeleteElementRequest": [(1, "id", "string", ""), (2, "name", "string", "")],
    "DeleteElementResponse": [],
    "SendCommandRequest": [(1, "id", "string", ""), (2, "payload", "bytes", "")],
    "SendCommandResponse": [],
}

FILES: dict[ModuleType, str] = {
    state_command_pb2: "state_command.proto",
    raft_pb2: "raft.proto",
    dref_consensus_pb2: "dref_consensus.proto",
    dref_pb2: "dref.proto",
}

SERVICES = {
    "DRefConsensus": [
        ("AppendEntries", "AppendEntriesRequest", "AppendEntriesResponse"),
        ("Heartbeat", "HeartbeatRequest", "HeartbeatResponse"),
        ("ReadIndex", "ReadIndexRequest", "ReadIndexResponse"),
        ("RequestVote", "VoteRequest", "VoteResponse"),
        ("RequestPreVote", "PreVoteRequest", "PreVoteResponse"),
        ("InstallSnapshot", "InstallSnapshotRequest", "InstallSnapshotResponse"),
    ],
    "DRefRaft": [
        ("SetElement", "SetElementRequest", "SetElementResponse"),
        ("ExpireElement", "ExpireElementRequest", "ExpireElementResponse"),
        ("SetElementIfNotExist", "SetElementIfNotExistRequest", "SetElementIfNotExistResponse"),
        ("GetElement", "GetElementRequest", "GetElementResponse"),
        ("DeleteElement", "DeleteElementRequest", "DeleteElementResponse"),
        ("GetEndpoints", "GetEndpointsRequest", "EndpointResponse"),
        ("SendCommand", "SendCommandRequest", "SendCommandResponse"),
    ],
}

_SCALARS = {
    "string": 9,  # FieldDescriptor.TYPE_STRING, ...
    "bytes": 12,
    "uint64": 4,
    "int64": 3,
    "int32": 5,
    "bool": 8,
}


def _describe(field: Any) -> tuple[int, str, str, str]:
    if field.type == field.TYPE_MESSAGE:
        type_name = field.message_type.full_name.removeprefix(PACKAGE + ".")
    else:
        type_name = next(name for name, code in _SCALARS.items() if code == field.type)
    repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == 3
    oneof = field.containing_oneof
    if repeated:
        kind = "repeated"
    elif oneof is not None and oneof.name != "_" + field.name:
        kind = f"oneof:{oneof.name}"
    elif oneof is not None:  # proto3 `optional` is a synthetic one-field oneof
        kind = "optional"
    else:
        kind = ""
    return field.number, field.name, type_name, kind


def _all_messages() -> dict[str, Any]:
    found = {}
    for module, file_name in FILES.items():
        assert module.DESCRIPTOR.name == file_name
        assert module.DESCRIPTOR.package == PACKAGE
        for name, message in module.DESCRIPTOR.message_types_by_name.items():
            found[name] = message
    return found


# dref's additive extensions (numbers >= 1000, docs/raft-wire.md, test_transport_convert.py).
EXTENSION_MESSAGES = {
    "DrefEntry",
    "CompareAndSetCommand",
    "CompareAndDeleteCommand",
    "CompareAndExpireCommand",
    "FencedWriteCommand",
}
FIRST_EXTENSION_NUMBER = 1000


def test_exactly_the_upstream_messages_exist() -> None:
    assert sorted(set(_all_messages()) - EXTENSION_MESSAGES) == sorted(SCHEMA)


@pytest.mark.parametrize("message_name", sorted(SCHEMA))
def test_message_fields_match_upstream(message_name: str) -> None:
    message = _all_messages()[message_name]
    assert message.full_name == f"{PACKAGE}.{message_name}"
    upstream = [f for f in message.fields if f.number < FIRST_EXTENSION_NUMBER]
    assert [_describe(f) for f in upstream] == SCHEMA[message_name]


@pytest.mark.parametrize("service_name", sorted(SERVICES))
def test_services_have_upstreams_methods_in_order(service_name: str) -> None:
    module = dref_consensus_pb2 if service_name == "DRefConsensus" else dref_pb2
    service = module.DESCRIPTOR.services_by_name[service_name]
    assert service.full_name == f"{PACKAGE}.{service_name}"
    described = [
        (m.name, m.input_type.name, m.output_type.name, m.client_streaming, m.server_streaming)
        for m in service.methods
    ]
    assert described == [(n, i, o, False, False) for n, i, o in SERVICES[service_name]]


class _RecordingChannel:
    """Stands in for a grpc channel and records the method paths a stub registers."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def unary_unary(self, path: str, *args: Any, **kwargs: Any) -> object:
        self.paths.append(path)
        return object()


@pytest.mark.parametrize(
    ("stub_module", "service_name"),
    [(dref_consensus_pb2_grpc, "DRefConsensus"), (dref_pb2_grpc, "DRefRaft")],
)
def test_grpc_stubs_call_upstreams_method_paths(stub_module: Any, service_name: str) -> None:
    channel = _RecordingChannel()
    getattr(stub_module, f"{service_name}Stub")(channel)
    assert channel.paths == [f"/{PACKAGE}.{service_name}/{m}" for m, _, _ in SERVICES[service_name]]


def test_generated_code_imports_only_package_relative_siblings() -> None:
    generated = sorted(PB_DIR.glob("*.py*"))
    assert {p.name for p in generated} >= {
        "dref_pb2.py",
        "dref_pb2.pyi",
        "dref_pb2_grpc.py",
        "dref_pb2_grpc.pyi",
        "dref_consensus_pb2_grpc.py",
        "state_command_pb2.pyi",
    }
    for path in generated:
        text = path.read_text("utf-8")
        assert not re.search(r"^(import|from) \w+_pb2", text, re.MULTILINE), path.name


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dref_raft_generate_protos", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_rewrites_imports_of_our_modules_only() -> None:
    fix_imports = _generator().fix_imports
    source = (
        "import grpc\n"
        "from google.protobuf import descriptor as _descriptor\n"
        "import raft_pb2 as raft__pb2\n"
        "import dref_consensus_pb2\n"
        "from state_command_pb2 import StateCommand\n"
        "import other_pb2 as other__pb2\n"
    )
    assert fix_imports(source) == (
        "import grpc\n"
        "from google.protobuf import descriptor as _descriptor\n"
        "from . import raft_pb2 as raft__pb2\n"
        "from . import dref_consensus_pb2\n"
        "from .state_command_pb2 import StateCommand\n"
        "import other_pb2 as other__pb2\n"
    )
    assert fix_imports(fix_imports(source)) == fix_imports(source)


def test_generator_reports_stale_and_missing_files() -> None:
    report = _generator().stale_report(
        {"a_pb2.py": b"new\n", "b_pb2.py": b"same\n"},
        {"a_pb2.py": b"old\n", "b_pb2.py": b"same\n", "c_pb2.py": b"gone\n"},
    )
    assert report[0] == "differs: a_pb2.py"
    assert "not generated any more: c_pb2.py" in report
    assert not any("b_pb2.py" in line for line in report)
