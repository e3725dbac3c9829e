"""Loaders for the five upstream golden-vector files shipped as package data (unchanged copies)."""

from __future__ import annotations

import functools
import json
from importlib.resources import files
from typing import Any, Literal

__all__ = ["VECTOR_FILES", "load_vectors", "vector_bytes"]

VectorFile = Literal[
    "vectors",
    "consensus_vectors",
    "snapshot_vectors",
    "voter_state_vectors",
    "command_log_vectors",
]
VECTOR_FILES: tuple[VectorFile, ...] = (
    "vectors",
    "consensus_vectors",
    "snapshot_vectors",
    "voter_state_vectors",
    "command_log_vectors",
)


@functools.cache
def _load(name: str) -> str:
    return (files("dref_compat") / "data" / f"{name}.json").read_text(encoding="utf-8")


def load_vectors(name: VectorFile) -> dict[str, Any]:
    """The parsed content of `compat/<name>.json` (a fresh copy each call)."""
    if name not in VECTOR_FILES:
        raise ValueError(f"unknown vector file {name!r}; known: {', '.join(VECTOR_FILES)}")
    data: dict[str, Any] = json.loads(_load(name))
    return data


def vector_bytes(name: VectorFile, *path: str | int) -> bytes:
    """The bytes of a hex field, e.g. `vector_bytes("vectors", "lock_value", "hex")`."""
    node: Any = load_vectors(name)
    for key in path:
        node = node[key]
    return bytes.fromhex(node)
