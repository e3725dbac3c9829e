"""A storage directory written by our stores looks exactly like upstream's
(docs/protocol.md#storage-common)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dref_raft.fsm import ClusterSnapshot, SnapshotEntry
from dref_raft.storage import VoterState, in_memory_stores, open_stores
from dref_raft.storage.media import FileMedium


def fill(directory: Path | None) -> None:
    stores = open_stores(directory) if directory is not None else in_memory_stores()
    stores.voter_state.save(VoterState(42, "node-7"))
    stores.snapshot.save(ClusterSnapshot((SnapshotEntry("a", b"\x01"),), last_seq=42))
    stores.command_log.append(43, bytes.fromhex("1a080a066d792d6b6579"))
    stores.command_log.set_commit_seq(42)
    stores.command_log.truncate_through(42)  # exercises an atomic rewrite too


def test_the_directory_holds_exactly_upstreams_three_files(tmp_path: Path) -> None:
    directory = tmp_path / "nested" / "storage"  # created on the first write
    fill(directory)
    assert sorted(p.name for p in directory.iterdir()) == [
        "command-log",
        "state-snapshot",
        "voter-state",
    ]
    assert (directory / "voter-state").read_bytes().hex() == (
        "4452465401000000000000002a000000066e6f64652d37"  # the golden term_42_voted_node_7
    )
    assert (directory / "state-snapshot").read_bytes().hex() == (
        "44524653010000000a0a060a0161120101102a"  # the golden ..._last_seq_42
    )
    assert (directory / "command-log").read_bytes().hex() == (
        "4452464c01000000000000002a"  # header, commit 42
        "000000000000002b0000000a1a080a066d792d6b6579"  # seq 43, 10 bytes
    )


def test_file_and_in_memory_stores_hold_the_same_bytes(tmp_path: Path) -> None:
    fill(tmp_path)
    memory = in_memory_stores()
    memory.voter_state.save(VoterState(42, "node-7"))
    memory.snapshot.save(ClusterSnapshot((SnapshotEntry("a", b"\x01"),), last_seq=42))
    memory.command_log.append(43, bytes.fromhex("1a080a066d792d6b6579"))
    memory.command_log.set_commit_seq(42)
    memory.command_log.truncate_through(42)
    for name, store in [
        ("voter-state", memory.voter_state),
        ("state-snapshot", memory.snapshot),
        ("command-log", memory.command_log),
    ]:
        assert (tmp_path / name).read_bytes() == store.contents  # type: ignore[attr-defined]


def test_a_whole_file_write_syncs_the_file_renames_then_syncs_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FileMedium(tmp_path / "voter-state").replace(b"old")
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(f"rename {Path(src).name} -> {Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    FileMedium(tmp_path / "voter-state").replace(b"new")
    assert events == ["fsync file", "rename voter-state.tmp -> voter-state", "fsync dir"]
    assert (tmp_path / "voter-state").read_bytes() == b"new"


def test_a_leftover_tmp_file_from_a_crash_is_ignored_and_replaced(tmp_path: Path) -> None:
    stores = open_stores(tmp_path)
    stores.voter_state.save(VoterState(1, None))
    (tmp_path / "voter-state.tmp").write_bytes(b"half a write")
    assert stores.voter_state.load() == VoterState(1, None)
    stores.voter_state.save(VoterState(2, None))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voter-state"]
