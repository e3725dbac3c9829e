"""The one error a storage load raises when persisted state cannot be read fully."""

from __future__ import annotations

from dref.errors import DRefError

__all__ = ["CorruptStateError"]


class CorruptStateError(DRefError):
    """A persisted file cannot be read fully; the node must not start from it.

    `path` names the file, `offset` the byte where reading failed, `reason` what was wrong.
    Nothing was deleted or rewritten.
    """

    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(
            f"{path}: unreadable at byte offset {offset}: {reason} "
            "(refusing to start from state that cannot be read fully; the file was left as is)"
        )
