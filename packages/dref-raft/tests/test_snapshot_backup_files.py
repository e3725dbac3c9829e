"""`dref raft snapshot restore`: a backup is verified before anything is written, and a
non-empty storage directory is refused (docs/operations.md#backup-and-restore)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from dref.cli import main
from dref_raft.fsm import ClusterSnapshot, SnapshotEntry
from dref_raft.storage import open_stores
from dref_raft.storage.recovery import boot
from dref_raft.storage.snapshot import encode_snapshot_file
from dref_raft.storage.snapshot_files import write_backup_trailer

SNAPSHOT = ClusterSnapshot((SnapshotEntry("a", b"1"), SnapshotEntry("b", b"2", 99)), 7, 3)


@pytest.fixture
def backup(tmp_path: Path) -> Path:
    path = tmp_path / "backup.drfs"
    body = encode_snapshot_file(SNAPSHOT)
    path.write_bytes(body)
    write_backup_trailer(path, hashlib.sha256(body).digest())
    return path


def restore(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["raft", "snapshot", "restore", *args])
    return result.exit_code, result.output


def test_restore_seeds_a_directory_a_member_boots_from(backup: Path, tmp_path: Path) -> None:
    code, out = restore(str(backup), "--storage-dir", str(tmp_path / "n1"))
    assert code == 0, out
    assert "restored 2 elements at seq 7 (term 3)" in out
    machine, state = boot(open_stores(tmp_path / "n1"))
    assert machine.snapshot(7) == ClusterSnapshot(SNAPSHOT.entries, 7)
    assert (state.commit, state.term, state.snapshot.term) == (7, 3, 3)


def test_restore_refuses_a_damaged_backup_naming_the_offset(backup: Path, tmp_path: Path) -> None:
    data = bytearray(backup.read_bytes())
    data[12] ^= 0xFF
    backup.write_bytes(bytes(data))
    code, out = restore(str(backup), "--storage-dir", str(tmp_path / "n1"))
    assert code == 1
    assert "is not a valid backup" in out
    assert "SHA-256 of bytes 0.." in out
    assert "the file is damaged" in out
    assert not (tmp_path / "n1").exists()


def test_restore_refuses_a_truncated_backup(backup: Path, tmp_path: Path) -> None:
    backup.write_bytes(backup.read_bytes()[:-10])
    code, out = restore(str(backup), "--storage-dir", str(tmp_path / "n1"))
    assert code == 1
    assert "bad trailer magic" in out
    assert "not a dref snapshot backup, or truncated" in out


def test_restore_refuses_a_non_empty_directory_unless_forced(backup: Path, tmp_path: Path) -> None:
    target = tmp_path / "n1"
    target.mkdir()
    (target / "command-log").write_bytes(b"old")
    code, out = restore(str(backup), "--storage-dir", str(target))
    assert code == 1
    assert "is not empty (command-log)" in out
    assert (target / "command-log").read_bytes() == b"old"
    code, out = restore(str(backup), "--storage-dir", str(target), "--force")
    assert code == 0, out
    assert not (target / "command-log").exists()
    machine, _ = boot(open_stores(target))
    assert machine.get("a", 0) == b"1"
