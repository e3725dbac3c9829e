"""Fixtures of the dref-raft tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from raft_helpers import NodeStorage


@pytest.fixture(params=["file", "memory"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> NodeStorage:
    """A node's storage; tests using it run once on disk and once in memory."""
    return NodeStorage(str(request.param), tmp_path / "node")
