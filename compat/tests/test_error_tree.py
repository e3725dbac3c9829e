"""The error-module rule catches exceptions defined elsewhere, outside the tree, or undrawn."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from dref_compat.error_tree import check_error_module, exception_classes


def make_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> str:
    package = f"fake_backend_{uuid.uuid4().hex[:8]}"
    root = tmp_path / package
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("")
    for name, source in files.items():
        (root / name).write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return package


def test_a_conforming_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    errors = '"""DRefError\\n└── BackendError\\n    └── FakeError"""\n' + (
        "from dref.errors import BackendError\nclass FakeError(BackendError): pass\n"
    )
    package = make_package(tmp_path, monkeypatch, {"errors.py": errors})
    assert [c.__name__ for c in exception_classes(package)] == ["FakeError"]
    assert check_error_module(package) == []


def test_every_violation_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = make_package(
        tmp_path,
        monkeypatch,
        {
            "errors.py": '"""No tree here."""\nfrom dref.errors import DRefError\n'
            "class Undrawn(DRefError): pass\nclass Plain(Exception): pass\n",
            "sub/deep.py": "class Hidden:\n    class Nested(ValueError): pass\n",
        },
    )
    assert check_error_module(package) == [
        f"{package}.errors.Plain does not extend dref.errors.DRefError",
        f"{package}.errors.Undrawn is missing from the tree in {package}.errors's docstring",
        f"{package}.sub.deep.Hidden.Nested is defined outside {package}.errors",
        f"{package}.sub.deep.Hidden.Nested does not extend dref.errors.DRefError",
    ]
