"""Build every wheel, install them into a fresh venv, check entry points and py.typed.

Run by `tox -e pkg`. Exits non-zero with a message naming what is wrong.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTIONS = {
    "packages/dref-core": "dref",
    "packages/dref-inmemory": "dref_inmemory",
    "packages/dref-redis": "dref_redis",
    "packages/dref-raft": "dref_raft",
    "compat": "dref_compat",
}
# raft joins when its engine (and entry point) exists.
EXPECTED_BACKENDS = {
    "inmemory": "dref_inmemory.plugin",
    "redis": "dref_redis.plugin",
    "raft": "dref_raft.plugin",
}

CHECK = """
import importlib, importlib.resources, sys
from importlib.metadata import entry_points
found = {ep.name: ep.value for ep in entry_points(group="dref.backends")}
expected = %r
assert found == expected, f"dref.backends entry points: {found} != {expected}"
for module in %r:
    mod = importlib.import_module(module)
    assert (importlib.resources.files(module) / "py.typed").is_file(), f"{module} lacks py.typed"
for name, target in found.items():
    importlib.import_module(target)
import dref_compat.vectors as v
for name in v.VECTOR_FILES:
    v.load_vectors(name)
print("ok:", ", ".join(sorted(found)))
"""


def run(*cmd: str | Path) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        wheels = Path(tmp) / "wheels"
        for path in DISTRIBUTIONS:
            run(sys.executable, "-m", "build", "--wheel", "--outdir", wheels, ROOT / path)
        env = Path(tmp) / "venv"
        venv.create(env, with_pip=True)
        python = env / "bin" / "python"
        run(python, "-m", "pip", "install", "--quiet", *sorted(wheels.glob("*.whl")))
        script = CHECK % (EXPECTED_BACKENDS, list(DISTRIBUTIONS.values()))
        run(python, "-c", script)
        run(env / "bin" / "dref", "backends")
    return 0


if __name__ == "__main__":
    sys.exit(main())
