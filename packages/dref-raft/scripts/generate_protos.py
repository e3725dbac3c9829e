#!/usr/bin/env python3
"""Regenerate the committed protobuf/gRPC code of dref-raft, or check that it is up to date.

    python packages/dref-raft/scripts/generate_protos.py          # rewrite src/dref_raft/_pb
    python packages/dref-raft/scripts/generate_protos.py --check  # exit 1 if it is stale

Needs exactly the versions pinned in requirements-protos.txt beside this script (the output
depends on them). The code is generated into a temporary directory, its `import x_pb2` lines
are rewritten to package-relative imports, and the result is compared with (or copied over)
the committed files.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
PROTO_DIR = PACKAGE_DIR / "protos"
OUT_DIR = PACKAGE_DIR / "src" / "dref_raft" / "_pb"
REQUIREMENTS = Path(__file__).resolve().with_name("requirements-protos.txt")
SELF = "packages/dref-raft/scripts/generate_protos.py"

PROTOS = (
    "dref_membership.proto",
    "dref.proto",
    "raft.proto",
    "dref_session.proto",
    "dref_fair.proto",
    "state_command.proto",
    "dref_consensus.proto",
    "dref_watch.proto",
    "dref_ext.proto",
    "dref_stream.proto",
    "dref_snapshot.proto",
)
SERVICE_PROTOS = (
    "dref.proto",
    "dref_consensus.proto",
    "dref_watch.proto",
    "dref_ext.proto",
    "dref_stream.proto",
    "dref_membership.proto",
    "dref_snapshot.proto",
    "dref_fair.proto",
)
MODULES = tuple(name.removesuffix(".proto") + "_pb2" for name in PROTOS)

INIT = '''"""Generated protobuf and gRPC code of the upstream DRef protocol (io.github.tobia80).

Do not edit: regenerate with `python packages/dref-raft/scripts/generate_protos.py`.
These types stay inside dref_raft (wire codec, transport, storage); convert at the edge.
"""
'''

_MODULE_ALTERNATION = "|".join(MODULES)
# `import dref_pb2 as dref__pb2`, `import dref_pb2`, `from dref_pb2 import X`: our modules only.
_IMPORT_AS = re.compile(rf"^import ({_MODULE_ALTERNATION})(_grpc)?( as \w+)?$", re.MULTILINE)
_FROM_IMPORT = re.compile(rf"^from ({_MODULE_ALTERNATION})(_grpc)? import ", re.MULTILINE)


class GeneratorError(Exception):
    """The generator cannot run or its output cannot be produced."""


def pinned_versions() -> dict[str, str]:
    """Read `name==version` lines from requirements-protos.txt."""
    pins: dict[str, str] = {}
    for raw in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise GeneratorError(
                f"{REQUIREMENTS.name}: every line must pin `name==version`: {raw!r}"
            )
        pins[name.strip()] = version.strip()
    return pins


def check_tool_versions() -> None:
    """Refuse to run with generator versions other than the pinned ones."""
    problems = []
    for name, wanted in pinned_versions().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name}=={wanted} is pinned but not installed")
            continue
        if installed != wanted:
            problems.append(f"{name}=={wanted} is pinned but {installed} is installed")
    if problems:
        raise GeneratorError(
            "; ".join(problems)
            + ". Install the pinned generator first: "
            + f"pip install -r {REQUIREMENTS.relative_to(PACKAGE_DIR.parent.parent)}"
        )


def fix_imports(text: str) -> str:
    """Rewrite top-level imports of our generated modules into package-relative imports."""
    text = _IMPORT_AS.sub(lambda m: f"from . import {m[1]}{m[2] or ''}{m[3] or ''}", text)
    return _FROM_IMPORT.sub(lambda m: f"from .{m[1]}{m[2] or ''} import ", text)


def _plugin(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(
        name, path=sysconfig.get_path("scripts")
    )
    if found is None:
        raise GeneratorError(
            f"{name} not found next to {sys.executable}; is mypy-protobuf installed?"
        )
    return found


def _protoc(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise GeneratorError(f"protoc failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def generate() -> dict[str, bytes]:
    """Generate every file of `_pb` and return them by file name."""
    with tempfile.TemporaryDirectory(prefix="dref-protos-") as tmp:
        out = Path(tmp)
        _protoc([f"--python_out={out}", f"--pyi_out={out}", *PROTOS])
        _protoc(
            [
                f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
                f"--grpc_python_out={out}",
                f"--mypy_grpc_out={out}",
                *SERVICE_PROTOS,
            ]
        )
        files = {
            path.name: fix_imports(path.read_text(encoding="utf-8")).encode("utf-8")
            for path in sorted(out.iterdir())
            if path.suffix in {".py", ".pyi"}
        }
    files["__init__.py"] = INIT.encode("utf-8")
    return files


def committed() -> dict[str, bytes]:
    """The generated files currently in the package."""
    if not OUT_DIR.is_dir():
        return {}
    return {
        p.name: p.read_bytes() for p in sorted(OUT_DIR.iterdir()) if p.suffix in {".py", ".pyi"}
    }


def stale_report(fresh: dict[str, bytes], current: dict[str, bytes]) -> list[str]:
    """Human-readable differences between fresh and committed code (empty when equal)."""
    lines = []
    for name in sorted(fresh.keys() | current.keys()):
        if name not in current:
            lines.append(f"missing: {name}")
        elif name not in fresh:
            lines.append(f"not generated any more: {name}")
        elif fresh[name] != current[name]:
            diff = difflib.unified_diff(
                current[name].decode("utf-8", "replace").splitlines(),
                fresh[name].decode("utf-8", "replace").splitlines(),
                f"committed/{name}",
                f"generated/{name}",
                lineterm="",
                n=1,
            )
            lines.append(f"differs: {name}")
            lines.extend("    " + _shorten(d) for d in list(diff)[:20])
    return lines


def _shorten(line: str, width: int = 120) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


def write(fresh: dict[str, bytes]) -> None:
    """Replace the committed generated files with `fresh`."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name in committed().keys() - fresh.keys():
        (OUT_DIR / name).unlink()
    for name, data in fresh.items():
        (OUT_DIR / name).write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed code differs from a fresh run"
    )
    args = parser.parse_args(argv)
    try:
        check_tool_versions()
        fresh = generate()
    except GeneratorError as exc:
        print(f"generate_protos: {exc}", file=sys.stderr)
        return 2
    if args.check:
        report = stale_report(fresh, committed())
        if report:
            print(
                "generate_protos: the committed code in packages/dref-raft/src/dref_raft/_pb is "
                "stale (it does not match packages/dref-raft/protos):\n  "
                + "\n  ".join(report)
                + f"\nRegenerate it with: python {SELF}",
                file=sys.stderr,
            )
            return 1
        print("generate_protos: packages/dref-raft/src/dref_raft/_pb is up to date")
        return 0
    write(fresh)
    print(f"generate_protos: wrote {len(fresh)} files to packages/dref-raft/src/dref_raft/_pb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
