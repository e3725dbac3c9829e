"""Type-checked usage of `dref.sync` (mypy --strict by test_sync.py); never run by pytest."""

from __future__ import annotations

import dref.sync
from dref.sync import SyncLockGuard, SyncRef


def usage() -> None:
    with dref.sync.connect("inmemory", namespace="typing") as ctx:
        visits: SyncRef[int] = ctx.make(0, "visits")
        visits.update(lambda n: n + 1)
        total: int = visits.get()
        label: str = visits.modify(lambda n: (f"#{n}", n + 1))
        with ctx.lock("report", ttl=10, timeout=5) as guard:
            lost: bool = guard.lost
            fence: int | None = guard.fence
        g: SyncLockGuard = guard
        for value in visits.changes():
            doubled: int = value * 2
            break
        names: list[str] = ctx.names("v")
        print(total, label, lost, fence, g, doubled, names)
