"""A snapshot decoded against the state a member holds (`dref_raft.install_difference`): only
the differences kept, the removed names found in a second pass, and an install from them that
leaves the state and reports the changes a whole install would (docs/raft.md#large-state)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from dref_raft import install_difference
from dref_raft.commands import DeleteElement, SetElement
from dref_raft.fsm import (
    Changed,
    ClusterSnapshot,
    PackedEntries,
    PreparedInstall,
    SnapshotEntry,
    StateChanges,
    StateMachine,
)
from dref_raft.install_difference import (
    SnapshotDifference,
    prepare_difference,
    removed_names,
)
from dref_raft.storage.snapshot import FileEntries, read_snapshot_file, write_snapshot_file


def _machine(values: dict[str, bytes], expiries: dict[str, int] | None = None) -> StateMachine:
    machine = StateMachine()
    for name, value in values.items():
        machine.apply(SetElement(name, value, (expiries or {}).get(name)))
    return machine


def _prepared(
    machine: StateMachine, snapshot: ClusterSnapshot, path: Path
) -> tuple[ClusterSnapshot, PreparedInstall]:
    """Write `snapshot` to `path` and decode it against `machine` (as a restarted member
    does): the snapshot decoded (held in its file) and its install prepared."""
    write_snapshot_file(snapshot, path, durable=False)
    held = machine.values()
    difference = SnapshotDifference(held)
    decoded = read_snapshot_file(path, sink=difference)
    assert isinstance(decoded.entries, FileEntries)
    assert difference.ascending
    removed: list[str] = []
    if difference.present != len(held):
        removed = removed_names(held, lambda sink: read_snapshot_file(path, sink=sink))
    return decoded, prepare_difference(held, decoded, difference, removed, machine.version)


def _install_by_difference(
    machine: StateMachine, snapshot: ClusterSnapshot, path: Path
) -> tuple[ClusterSnapshot, object]:
    """`_prepared`, then installed; the snapshot installed and the changes."""
    decoded, prepared = _prepared(machine, snapshot, path)
    machine.offer_prepared(prepared)
    return decoded, machine.install(decoded)


def test_the_difference_keeps_only_new_or_changed_entries() -> None:
    difference = SnapshotDifference({"a": b"1", "b": b"2", "c": b"3"})
    difference.add(["a", "b"], [b"1", b"changed"])
    difference.add(["d"], [b"new"])
    difference.expire("d", 99)
    assert difference.changed == {"b": b"changed", "d": b"new"}
    assert difference.present == 2  # a and b; c is not in the snapshot
    assert difference.ascending
    assert difference.expiries == {"d": 99}


@pytest.mark.parametrize("blocks", [[["b", "a"]], [["a", "b"], ["b"]], [["a"], ["a", "c"]]])
def test_names_out_of_order_or_repeated_make_the_difference_unusable(
    blocks: list[list[str]],
) -> None:
    difference = SnapshotDifference({})
    for names in blocks:
        difference.add(names, [b"x"] * len(names))
    assert not difference.ascending


def test_the_removed_names_are_found_in_a_second_pass_over_many_slices(tmp_path: Path) -> None:
    held = {f"k{i:06d}": b"v" for i in range(20000)}  # more than one sorted slice
    kept = [name for i, name in enumerate(sorted(held)) if i % 7 and i != 19999]
    snapshot = ClusterSnapshot(PackedEntries([*kept, "zz"], [b"v"] * (len(kept) + 1)), 9)
    path = tmp_path / "snap"
    write_snapshot_file(snapshot, path, durable=False)
    removed = removed_names(held, lambda sink: read_snapshot_file(path, sink=sink))
    assert removed == sorted(set(held) - set(kept))


@pytest.mark.parametrize("seed", range(12))
def test_an_install_from_the_difference_equals_a_whole_install(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    names = [f"n{i:05d}" for i in range(rng.choice([0, 5, 300, 20000]))]
    held = {name: rng.choice([b"a", b"b"]) for name in names if rng.random() < 0.8}
    held_expiries = {name: 50 for name in held if rng.random() < 0.05}
    new = {name: rng.choice([b"a", b"b", b"c"]) for name in names if rng.random() < 0.8}
    new_expiries = {name: 70 for name in new if rng.random() < 0.05}
    if not held:
        held = {"only": b"x"}
    entries = tuple(SnapshotEntry(n, v, new_expiries.get(n)) for n, v in sorted(new.items()))
    snapshot = ClusterSnapshot(entries, 77, 3)
    whole = _machine(held, held_expiries)
    expected = whole.install(snapshot)
    machine = _machine(held, held_expiries)
    decoded, changes = _install_by_difference(machine, snapshot, tmp_path / "snap")
    assert changes == expected
    assert dict(machine.elements()) == dict(whole.elements())
    assert machine.expiries() == whole.expiries() == new_expiries
    assert list(decoded.entries) == list(entries)


def test_many_differences_build_the_new_values_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(install_difference, "IN_PLACE_MAX", 2)
    machine = _machine(dict.fromkeys("abcd", b"old"))
    snapshot = ClusterSnapshot(PackedEntries(["a", "b", "c"], [b"1", b"2", b"3"]), 5)
    decoded, prepared = _prepared(machine, snapshot, tmp_path / "snap")
    assert prepared.values == {"a": b"1", "b": b"2", "c": b"3"}
    machine.offer_prepared(prepared)
    assert list(machine.install(decoded)) == [
        Changed("a", b"1"),
        Changed("b", b"2"),
        Changed("c", b"3"),
        Changed("d", None),
    ]


def test_a_difference_prepared_before_an_apply_is_not_used(tmp_path: Path) -> None:
    # The member applied an entry while the snapshot was decoded: `install` builds the state
    # from the snapshot itself (its file) instead of the stale difference.
    machine = _machine({"a": b"1", "b": b"2"})
    snapshot = ClusterSnapshot(PackedEntries(["a", "c"], [b"1", b"3"]), 5)
    decoded, prepared = _prepared(machine, snapshot, tmp_path / "snap")
    machine.apply(DeleteElement("a"))
    machine.offer_prepared(prepared)
    assert list(machine.install(decoded)) == [
        Changed("a", b"1"),
        Changed("b", None),
        Changed("c", b"3"),
    ]
    assert dict(machine.values()) == {"a": b"1", "c": b"3"}


@pytest.mark.parametrize("count", [0, 1, 5, 40])
def test_a_new_members_changes_are_a_view_of_its_state_sliced_like_a_list(count: int) -> None:
    values = {f"n{i:03d}": b"v%d" % i for i in range(count)}
    changes = StateChanges(values)
    expected = [Changed(name, value) for name, value in values.items()]
    assert len(changes) == count
    assert list(changes) == expected
    assert changes == expected
    for index in (slice(None), slice(-3, None), slice(None, 4), slice(2, -2), slice(5, 2)):
        assert list(changes[index]) == expected[index]
    assert list(changes[::2]) == expected[::2]
    for i in range(-count, count):
        assert changes[i] == expected[i]
    with pytest.raises(IndexError):
        changes[count]
