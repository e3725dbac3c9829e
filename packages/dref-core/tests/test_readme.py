"""The README's API tour runs as written."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[3] / "README.md"


def test_api_tour_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no python example"
    script = tmp_path / "tour.py"
    script.write_text(blocks[0])
    runpy.run_path(str(script), run_name="__main__")
    assert "Flags(dark_mode=True, max_items=10)" in capsys.readouterr().out
