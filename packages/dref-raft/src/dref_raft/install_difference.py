"""A snapshot installed by a member that already holds a state (restarted, or lagging behind),
decoded against that state: only the entries that differ are kept, never the snapshot's
tuples (docs/raft.md#large-state).

`SnapshotDifference` takes the decoded entries as they come (a `SnapshotDecoder` sink) and
keeps the names that are new or hold another value, and how many of the snapshot's names the
state holds; when that is fewer than the state's own names, `removed_names` finds the held
names the snapshot lacks in a second pass over the file. `prepare_difference` turns both into
the state machine's `PreparedInstall`. Everything here runs in a worker thread while the event
loop applies: the result is valid only at the machine's `version` it was computed against.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Mapping

from dref_raft.fsm import (
    IN_PLACE_MAX,
    ChangeList,
    ClusterSnapshot,
    NamedEntrySink,
    PreparedInstall,
    sorted_slices,
)

__all__ = ["AbsentNames", "SnapshotDifference", "prepare_difference", "removed_names"]


class SnapshotDifference(NamedEntrySink):
    """An `EntrySink`: the entries of a snapshot compared with `held` (a member's live
    values) as they are decoded. `changed`: name → value of the entries `held` lacks or holds
    another value for, in the snapshot's order; `present`: how many of the snapshot's names
    `held` holds; `ascending`: whether the names were strictly ascending (each name once, as
    a dref member writes them) — else `present` says nothing about removed names and the
    difference is not used; `expiries`: name → expire_at of the entries that have one."""

    def __init__(self, held: Mapping[str, bytes]) -> None:
        super().__init__()
        self._held = held
        self.changed: dict[str, bytes] = {}
        self.present = 0

    def take(self, names: list[str], values: list[bytes]) -> None:
        held = self._held.get
        changed = self.changed
        present = 0
        for name, value in zip(names, values, strict=True):
            old = held(name)
            if old is not None:
                present += 1
                if old == value:
                    continue
            changed[name] = value
        self.present += present


class AbsentNames:
    """An `EntrySink` for a second pass over a snapshot (names ascending): `removed` collects
    the names of `held` (ascending) that the snapshot lacks."""

    def __init__(self, held: Iterator[str]) -> None:
        self._held = held
        self._at: str | None = next(held, None)
        self.removed: list[str] = []

    def add(self, names: list[str], values: list[bytes]) -> None:
        at, held, removed = self._at, self._held, self.removed
        for name in names:
            while at is not None and at < name:
                removed.append(at)
                at = next(held, None)
            if at is not None and at == name:
                at = next(held, None)
        self._at = at

    def expire(self, name: str, expire_at: int) -> None:
        pass

    def finish(self) -> list[str]:
        """`removed`, with the held names after the snapshot's last one."""
        if self._at is not None:
            self.removed.append(self._at)
            self.removed.extend(self._held)
            self._at = None
        return self.removed


def removed_names(
    held: Mapping[str, bytes], second_pass: Callable[[AbsentNames], object]
) -> list[str]:
    """The names of `held` a snapshot lacks, ascending: `second_pass` decodes the snapshot
    again into the given sink. The held names are sorted a slice at a time and merged as the
    pass goes (8 bytes per name at most, never a sorted copy of them all).
    `RuntimeError` when `held` changes while its names are read (the difference is stale
    anyway)."""
    absent = AbsentNames(heapq.merge(*sorted_slices(iter(held))))
    second_pass(absent)
    return absent.finish()


def prepare_difference(
    held: Mapping[str, bytes],
    snapshot: ClusterSnapshot,
    difference: SnapshotDifference,
    removed: list[str],
    version: int,
) -> PreparedInstall:
    """The `PreparedInstall` of `snapshot` for a machine at `version` whose values are
    `held`: the changes (the changed entries and the `removed` names, by name); at most
    `IN_PLACE_MAX` of them are applied to the held values by `install`, more and the new
    values are built here (a copy of `held` with the changes, `RuntimeError` if `held`
    changed meanwhile)."""
    changed = difference.changed
    names = list(heapq.merge(changed, removed))
    changes = ChangeList(names, [changed.get(name) for name in names])
    values: dict[str, bytes] | None = None
    if len(names) > IN_PLACE_MAX:
        values = dict(held)
        for name in removed:
            del values[name]
        values.update(changed)
    return PreparedInstall(snapshot, values, difference.expiries, changes, version)
