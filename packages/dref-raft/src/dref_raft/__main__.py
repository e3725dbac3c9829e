"""`python -m dref_raft [OPTIONS]`: one Raft member, exactly `dref raft node [OPTIONS]`."""

from __future__ import annotations

from dref_raft.cli.commands import node

if __name__ == "__main__":
    node(prog_name="python -m dref_raft")
