"""Every reference in the repository resolves inside it.

Code, tests and docs point at the protocol reference as `docs/protocol.md#anchor` (or a
Markdown link to `protocol.md#anchor`); each anchor must exist there. No file cites a section
sign of a document that is not in the repository, and relative Markdown links in the docs
and READMEs name files that exist.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PROTOCOL = ROOT / "docs" / "protocol.md"
TEXT_SUFFIXES = {".py", ".pyi", ".md", ".proto", ".toml", ".ini", ".txt", ".yml", ".yaml"}
#: Section signs that cite the Raft paper itself, not an outside document of ours.
PAPER = re.compile(r"Raft (paper |thesis )?§")


def _files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [
        ROOT / name
        for name in listed
        if Path(name).suffix in TEXT_SUFFIXES
        and not name.startswith("compat/src/dref_compat/data/")
        and (ROOT / name).is_file()
    ]


def _anchors() -> set[str]:
    return set(re.findall(r'<a id="([^"]+)"></a>', PROTOCOL.read_text(encoding="utf-8")))


def test_the_protocol_reference_has_anchors() -> None:
    anchors = _anchors()
    assert {"wire-state-command", "storage-recovery", "ttl-expiry", "weak"} <= anchors


def test_every_protocol_anchor_cited_exists() -> None:
    anchors = _anchors()
    wrong = []
    for path in _files():
        if path == Path(__file__).resolve():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in re.finditer(r"protocol\.md((?:#[\w-]+(?:,? (?:to )?)?)+)", text):
            for anchor in re.findall(r"#([\w-]+)", match.group(1)):
                if anchor not in anchors:
                    wrong.append(f"{path.relative_to(ROOT)}: #{anchor}")
    assert wrong == []


def test_no_section_sign_points_outside_the_repository() -> None:
    cited = []
    for path in _files():
        if path in (PROTOCOL, Path(__file__).resolve()):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "§" in PAPER.sub("", line):
                cited.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert cited == []


def _generated_pages() -> set[Path]:
    """Pages the docs site generates at build time (tools/docs_hooks.py): links may name them."""
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "tools" / "docs_hooks.py")
    assert spec is not None
    assert spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    return {(ROOT / "docs" / page).resolve() for page in hooks.GENERATED_PAGES}


def test_relative_markdown_links_resolve() -> None:
    generated = _generated_pages()
    broken = []
    for path in _files():
        if path.suffix != ".md":
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            file_part = target.split("#", 1)[0]
            resolved = (path.parent / file_part).resolve()
            if file_part and not resolved.exists() and resolved not in generated:
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert broken == []
