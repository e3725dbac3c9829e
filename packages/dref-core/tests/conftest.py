"""Fixtures shared by the core tests: fake installed distributions with dref entry points."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

FakeDist = Callable[..., str]


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDist:
    """Install a throw-away distribution: `fake_dist(group, name, module_source)` -> module name."""

    def make(group: str, name: str, source: str, dist: str = "fake-dist") -> str:
        module = f"fake_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{dist.replace('-', '_')}_{module}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
        (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {module}\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        return module

    return make
