"""Helpers of the dref-raft tests: golden vectors, hypothesis strategies, node storage."""

from __future__ import annotations

import json
import os
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from dref_raft.commands import (
    Command,
    DeleteElement,
    DeleteIfExpired,
    ExpireElement,
    NoOp,
    SetElement,
    SetIfNotExist,
    StartNewTerm,
)
from dref_raft.fsm import ClusterSnapshot, SnapshotEntry
from dref_raft.storage import (
    CommandLogStore,
    InMemoryCommandLogStore,
    InMemorySnapshotStore,
    InMemoryVoterStateStore,
    SnapshotStore,
    VoterStateStore,
)
from dref_raft.storage.layout import COMMAND_LOG_FILE, SNAPSHOT_FILE, VOTER_STATE_FILE


def count_syncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, the descriptors of every `os.fsync` and `os.fdatasync` call, in order."""
    calls: list[int] = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name, None)
        if real is not None:
            monkeypatch.setattr(os, name, lambda fd, real=real: (calls.append(fd), real(fd))[1])
    return calls


def load_vectors(name: str) -> Any:
    """A golden vector file from dref_compat's package data (unchanged upstream copies)."""
    return json.loads((files("dref_compat") / "data" / f"{name}.json").read_text("utf-8"))


# ---- hypothesis strategies shared by the test modules ----

U64 = st.integers(min_value=0, max_value=2**64 - 1)
U63 = st.integers(min_value=0, max_value=2**63 - 1)
NAMES = st.text(max_size=12)
VALUES = st.binary(max_size=16)
EXPIRES = st.none() | U64

COMMANDS: st.SearchStrategy[Command] = st.one_of(
    st.builds(SetElement, NAMES, VALUES, EXPIRES),
    st.builds(SetIfNotExist, NAMES, VALUES, EXPIRES),
    st.builds(DeleteElement, NAMES),
    st.builds(ExpireElement, NAMES, U64),
    st.builds(DeleteIfExpired, NAMES, U64),
    st.just(StartNewTerm()),
    st.just(NoOp()),
)

SNAPSHOTS: st.SearchStrategy[ClusterSnapshot] = st.builds(
    ClusterSnapshot,
    st.lists(st.builds(SnapshotEntry, NAMES, VALUES, EXPIRES), max_size=5).map(tuple),
    U63,
)


# ---- stores of both kinds: every store test runs against the files and the in-memory twins ----


class NodeStorage:
    """One node's storage directory, on disk or in memory.

    `voter_state()`, `snapshot()` and `command_log()` open a fresh store each time, as a
    restarted process would; `read`/`write` access a file's raw bytes (None: no file).
    """

    _MEMORY = {
        VOTER_STATE_FILE: InMemoryVoterStateStore,
        SNAPSHOT_FILE: InMemorySnapshotStore,
        COMMAND_LOG_FILE: InMemoryCommandLogStore,
    }

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.directory = directory
        self._latest: dict[str, Any] = {name: cls() for name, cls in self._MEMORY.items()}

    def voter_state(self) -> Any:
        return self._open(VOTER_STATE_FILE, VoterStateStore)

    def snapshot(self) -> Any:
        return self._open(SNAPSHOT_FILE, SnapshotStore)

    def command_log(self) -> Any:
        return self._open(COMMAND_LOG_FILE, CommandLogStore)

    def read(self, file_name: str) -> bytes | None:
        if self.kind == "memory":
            data: bytes | None = self._latest[file_name].contents
            return data
        path = self.directory / file_name
        return path.read_bytes() if path.exists() else None

    def write(self, file_name: str, data: bytes) -> None:
        if self.kind == "memory":
            self._latest[file_name].contents = data
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / file_name).write_bytes(data)

    def _open(self, file_name: str, file_cls: Any) -> Any:
        if self.kind == "file":
            return file_cls(self.directory)
        store = self._MEMORY[file_name](self._latest[file_name].contents)
        self._latest[file_name] = store
        return store


def varint(value: int) -> bytes:
    """A protobuf base-128 varint, for hand-built wire bytes."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
