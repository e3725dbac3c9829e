"""The in-memory backend passes the whole conformance suite."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from dref_compat.conformance import BackendConformance


class TestInMemory(BackendConformance):
    backend = "inmemory"
    revision_history = 32

    @pytest.fixture
    def connect_options(self) -> dict[str, Any]:
        return {"namespace": f"conformance-{uuid.uuid4().hex}", "history": self.revision_history}

    def lose_next_answer(self, ctx: Any, meanwhile: Any = None) -> None:
        """An in-process write is applied and answered in one call: no answer can be lost."""
