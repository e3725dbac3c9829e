"""Element names: `ManualId` (verbatim) and `AutoId` (derived from the caller's call site).

An `AutoId` name is `"<module>:<line> (<sha256 hex of '<module>:<line>'>)"`, the shape of the
Rust `AutoId`, with the Python module name (or the script's file name for `__main__`): stable
across runs of the same code, different between call sites. It is never equal to a Scala or Rust
AutoId; use `ManualId` (or a plain `str`) for anything shared across languages.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

__all__ = ["AutoId", "IdLike", "ManualId", "auto_name", "resolve_name"]


@dataclass(frozen=True, slots=True)
class ManualId:
    """Use `name` verbatim as the element key."""

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("ManualId needs a non-empty str")


class _AutoId:
    """Derive the name from the call site of `ctx.make(...)` / `ctx.lock(...)`."""

    _instance: _AutoId | None = None

    def __new__(cls) -> _AutoId:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "AutoId"


AutoId: Final = _AutoId()
IdLike = str | ManualId | _AutoId | None


def auto_name(frame: FrameType) -> str:
    """The AutoId name of the call site executing in `frame`."""
    module = frame.f_globals.get("__name__", "?")
    if module == "__main__":
        module = Path(frame.f_code.co_filename).name
    site = f"{module}:{frame.f_lineno}"
    return f"{site} ({hashlib.sha256(site.encode()).hexdigest()})"


def resolve_name(id: IdLike, depth: int) -> str:
    """The element name for `id`; for AutoId, the call site `depth` frames above the caller."""
    if isinstance(id, str):
        if not id:
            raise ValueError("an element name must not be empty")
        return id
    if isinstance(id, ManualId):
        return id.name
    if id is None or id is AutoId:
        return auto_name(sys._getframe(depth + 1))
    raise TypeError(f"id must be a str, ManualId or AutoId, not {type(id).__name__}")
