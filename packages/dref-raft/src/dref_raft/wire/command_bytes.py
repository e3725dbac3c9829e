"""The wire bytes of the commands of recent log entries, each encoded once.

One entry's command is wanted as `StateCommand` bytes several times on the write path: the
leader writes it to its log and sends it in one AppendEntries per follower; a follower decodes
it and writes it to its log. `command_bytes` encodes a command once and hands the same bytes
out again while the command is among the recent ones; `remember` records the bytes a command
was decoded from (a follower stores the leader's bytes, which decode to the same command).

Keyed by the command object's identity (the memo holds the object, so the identity is not
reused meanwhile), at most `MEMO_ENTRIES` commands of at most `MEMO_MAX_BYTES` each: a few
megabytes at worst. `StartNewTerm`, whose log bytes carry the term and whose AppendEntries
bytes do not, is never memoised.
"""

from __future__ import annotations

import contextlib
from typing import Final

from dref_raft.commands import Command, StartNewTerm
from dref_raft.wire.commands import encode_command

__all__ = ["MEMO_ENTRIES", "MEMO_MAX_BYTES", "command_bytes", "remember"]

MEMO_ENTRIES: Final = 1024
"""Commands remembered at most (the oldest go first)."""
MEMO_MAX_BYTES: Final = 1024
"""Larger commands are encoded each time (cheap next to their copies; never held here)."""

_memo: dict[int, tuple[Command, bytes]] = {}


def command_bytes(command: Command) -> bytes:
    """`encode_command(command)`, encoded once while `command` is recent (raises as it does)."""
    hit = _memo.get(id(command))
    if hit is not None and hit[0] is command:
        return hit[1]
    data = encode_command(command)
    remember(command, data)
    return data


def remember(command: Command, data: bytes) -> None:
    """`command` is `data` on the wire (it was decoded from them, or encoded to them)."""
    if len(data) > MEMO_MAX_BYTES or isinstance(command, StartNewTerm):
        return
    memo = _memo
    memo[id(command)] = (command, data)
    if len(memo) > MEMO_ENTRIES:
        # Another thread's call may change the memo under us: that eviction is skipped.
        with contextlib.suppress(RuntimeError, StopIteration, KeyError):
            del memo[next(iter(memo))]
