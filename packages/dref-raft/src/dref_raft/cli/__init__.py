"""`dref raft …` (click), also behind `python -m dref_raft` (= `dref raft node`).

* `commands`: the click group `raft` (`node`, `cluster`, `demo`);
* `local_cluster`: member processes on 127.0.0.1 and their status files.
"""

from __future__ import annotations

from dref_raft.cli.commands import raft

__all__ = ["raft"]
