"""Raft consensus backend for dref.

`dref_raft.members(ctx)` (lazily imported): membership operations through a `raft` context
(docs/raft.md#membership).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dref_raft.client.membership import members

__all__ = ["members"]


def __getattr__(name: str) -> Any:
    if name == "members":
        from dref_raft.client.membership import members

        return members
    raise AttributeError(f"module 'dref_raft' has no attribute {name!r}")
