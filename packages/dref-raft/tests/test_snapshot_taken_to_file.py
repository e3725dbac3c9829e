"""A snapshot taken straight into its file (`encode_state_parts`, `encode_names_parts` with the
values copied on write, `MonotonicSnapshotStore.save_written`): the same bytes as the snapshot
built in memory and encoded, saved as `state-snapshot` through a hard link, never its tuples in
memory (docs/raft.md#large-state)."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dref_raft.commands import DeleteElement, Membership, SetElement
from dref_raft.errors import SnapshotAbandonedError
from dref_raft.fsm import (
    ClusterSnapshot,
    NamesCopy,
    StateMachine,
    snapshot_of_state,
)
from dref_raft.storage.snapshot import (
    FileEntries,
    InMemorySnapshotStore,
    SnapshotStore,
    encode_snapshot_file,
    read_snapshot_file,
)
from dref_raft.storage.snapshot_files import MonotonicSnapshotStore
from dref_raft.wire.commands import encode_names_parts, encode_snapshot, encode_state_parts


def _machine(count: int, seed: int = 1) -> StateMachine:
    rng = random.Random(seed)
    machine = StateMachine()
    for i in rng.sample(range(count * 2), count):  # not in name order
        expire_at = 1000 + i if rng.random() < 0.1 else None
        machine.apply(SetElement(f"n{i:06d}", rng.randbytes(rng.randint(1, 40)), expire_at))
    machine.membership = Membership(("a", "b"), (), (("a", "127.0.0.1:1"),))
    return machine


@pytest.mark.parametrize("count", [0, 1, 300, 20000])
def test_a_state_encoded_from_its_copy_is_the_snapshot_built_and_encoded(count: int) -> None:
    machine = _machine(count)
    expected = encode_snapshot(snapshot_of_state(machine.copy_state(), 42, 7))
    copy = machine.copy_state()
    assert b"".join(encode_state_parts(copy, 42, 7)) == expected
    assert not copy.slices
    assert not copy.expiries


def _names_copy(machine: StateMachine, size: int = 1000) -> NamesCopy:
    steps = machine.copy_names_in_slices(size)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            copy: NamesCopy = done.value
            return copy


def _held_snapshot(copy: NamesCopy, held: Path, seq: int) -> ClusterSnapshot:
    return ClusterSnapshot(
        FileEntries(held, len(copy)), seq, 0, copy.membership, copy.sessions, copy.lines
    )


@pytest.mark.parametrize("count", [0, 1, 300, 20000])
def test_a_snapshot_from_a_copy_of_the_names_is_the_state_at_the_copy(count: int) -> None:
    # The values are read later, copied on write: what the machine changes meanwhile (set,
    # delete, add, expire) does not reach the snapshot.
    machine = _machine(count)
    expected = encode_snapshot(machine.snapshot(42))
    copy = _names_copy(machine)
    names = sorted(machine.values())
    for name in names[::3]:
        machine.apply(SetElement(name, b"changed", 5))
    for name in names[1::3]:
        machine.apply(DeleteElement(name))
    machine.apply(SetElement("new", b"added"))
    assert b"".join(encode_names_parts(copy, 42, 0)) == expected
    machine.end_copy_on_write(copy.cow)
    machine.apply(SetElement("later", b"x"))
    assert "later" not in copy.cow.replaced  # no longer recorded


def test_values_changed_by_another_thread_while_the_snapshot_is_written(tmp_path: Path) -> None:
    # The snapshot is written in a worker thread while the event loop's thread applies: each
    # value is the one at the copy, whichever thread ran first.
    machine = _machine(20000, seed=3)
    expected = encode_snapshot(machine.snapshot(42))
    copy = _names_copy(machine)
    names = sorted(machine.values())
    done = threading.Event()

    def write() -> bytes:
        try:
            return b"".join(encode_names_parts(copy, 42, 0))
        finally:
            done.set()

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(write)
        rounds = 0
        while not done.is_set() and rounds < 50:
            for name in names[rounds::50]:
                machine.apply(SetElement(name, b"r%d" % rounds))
            rounds += 1
        assert future.result(timeout=60) == expected


def test_an_install_while_the_snapshot_is_written_abandons_it(tmp_path: Path) -> None:
    machine = _machine(300)
    copy = _names_copy(machine)
    with pytest.raises(RuntimeError, match="already"):
        _names_copy(machine)
    machine.install(_machine(5, seed=9).snapshot(60))
    assert copy.cow.abandoned
    with pytest.raises(SnapshotAbandonedError):
        b"".join(encode_names_parts(copy, 42, 0))
    _names_copy(machine)  # another may start


def test_save_written_writes_the_held_file_and_links_it_into_place(tmp_path: Path) -> None:
    machine = _machine(5000)
    expected = encode_snapshot_file(machine.snapshot(42))
    store = MonotonicSnapshotStore(SnapshotStore(tmp_path))
    held = tmp_path / "state-snapshot.held-42-1"
    copy = _names_copy(machine)
    snapshot = _held_snapshot(copy, held, 42)
    size = store.save_written(encode_names_parts(copy, 42, 0), snapshot)
    assert held.read_bytes() == (tmp_path / "state-snapshot").read_bytes() == expected
    assert size == len(expected)
    assert held.stat().st_ino == (tmp_path / "state-snapshot").stat().st_ino  # one file
    assert len(snapshot.entries) == 5000
    assert list(snapshot.entries) == list(read_snapshot_file(held).entries)
    assert store.link_saved(tmp_path / "linked", 42, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "linked",
        "state-snapshot",
        "state-snapshot.held-42-1",
    ]


def test_save_written_older_than_the_saved_one_leaves_the_file(tmp_path: Path) -> None:
    store = MonotonicSnapshotStore(SnapshotStore(tmp_path))
    store.save(_machine(10).snapshot(50))
    saved = (tmp_path / "state-snapshot").read_bytes()
    held = tmp_path / "state-snapshot.held-42-1"
    copy = _names_copy(_machine(20))
    snapshot = _held_snapshot(copy, held, 42)
    assert store.save_written(encode_names_parts(copy, 42, 0), snapshot) == 0
    assert (tmp_path / "state-snapshot").read_bytes() == saved
    assert len(snapshot.entries) == 20  # still a snapshot at 42, held in its own file
    assert list(snapshot.entries) == list(read_snapshot_file(held).entries)


def test_a_failed_save_written_removes_its_file(tmp_path: Path) -> None:
    store = MonotonicSnapshotStore(SnapshotStore(tmp_path))
    machine = _machine(300)
    copy = _names_copy(machine)
    held = tmp_path / "state-snapshot.held-42-1"
    machine.install(_machine(5, seed=9).snapshot(60))
    with pytest.raises(SnapshotAbandonedError):
        store.save_written(encode_names_parts(copy, 42, 0), _held_snapshot(copy, held, 42))
    assert not held.exists()
    assert not (tmp_path / "state-snapshot").exists()


def test_save_written_needs_a_store_with_a_file(tmp_path: Path) -> None:
    store = MonotonicSnapshotStore(InMemorySnapshotStore())
    copy = _names_copy(_machine(1))
    with pytest.raises(TypeError, match="a file"):
        store.save_written([], _held_snapshot(copy, tmp_path / "held", 1))
