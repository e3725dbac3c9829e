"""The `dref` console script: demo, backends, --version, error reporting and `dref.cli` commands."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import textwrap
import uuid
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console
from rich.text import Text

import dref
import dref.cli
from dref.cli import main
from dref.demo import USE_CASES, DemoFailure, run_demo

FakeDist = Callable[..., str]  # the `fake_dist` fixture of conftest.py

WIDE = {"COLUMNS": "200"}


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env={**WIDE, **(env or {})})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.filterwarnings("error")
def test_demo_tells_the_four_use_cases(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    code, out, err = invoke("demo", "--backend", "inmemory")
    assert code == 0, err
    assert err == ""
    assert [r.getMessage() for r in caplog.records] == []
    for number, case in enumerate(USE_CASES, 1):
        assert f"{number}. {case.title}" in out
    # 1. leader election: a winner, two failovers, growing fences
    assert "wins the election: leader with fence 1" in out
    assert out.count("takes over: leader with fence") == 2
    assert out.count("crashes;") == 2
    assert "every failover raised the fence: 1 → 2 → 3" in out
    # 2. feature flags: each flip reaches both subscribers
    assert out.count("(on_change) sees dark_mode off → on") == 1
    assert out.count("(changes()) sees dark_mode off → on") == 1
    assert out.count("sees new_checkout off → on") == 2
    assert out.count("sees dark_mode on → off") == 2
    # 3. throttled job: one run, two timeouts, one worker waits its turn
    assert out.count("ran the report") == 1
    assert out.count("gave up: LockTimeoutError") == 2
    assert "already done, skipped" in out
    # 4. live counter: no increment lost
    assert "counter reached 1000" in out
    assert "final value 1000 = 4 x 5 x 50 increments, none lost" in out
    assert out.rstrip().endswith("All use cases passed.")


def test_demo_runs_only_the_named_use_cases() -> None:
    code, out, _ = invoke("demo", "--backend", "inmemory", "counter")
    assert code == 0
    assert "4. Live counter" in out
    assert "Leader election" not in out


def test_demo_rejects_an_unknown_use_case() -> None:
    code, _, err = invoke("demo", "nope")
    assert code == 2
    assert "'nope' is not one of" in err


async def test_demo_leaves_no_task_behind_and_runs_again_on_the_same_store() -> None:
    namespace = f"test-demo-{uuid.uuid4().hex}"
    text = io.StringIO()
    out = Console(file=text, width=200)
    for _ in range(2):  # the second run finds the first run's data, like a persistent cluster
        await run_demo(lambda: dref.connect("inmemory", namespace=namespace), out)
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert "raised the fence: 4 → 5 → 6" in text.getvalue()
    assert text.getvalue().count("final value 1000") == 2


def test_backends_lists_installed_entry_points_without_importing(fake_dist: FakeDist) -> None:
    fake_dist("dref.plugins", "exploding", "raise RuntimeError('imported')", dist="dref-boom")
    code, out, err = invoke("backends")
    assert code == 0, err
    rows = {line.split()[1]: line.split()[2:] for line in out.splitlines() if "│" in line}
    assert rows["inmemory"][:5] == ["│", "dref-inmemory", "│", version("dref-inmemory"), "│"]
    assert "dref_inmemory.plugin" in rows["inmemory"]
    assert rows["exploding"][:5] == ["│", "dref-boom", "│", "1.2.3", "│"]
    assert "Backends (dref.backends)" in out
    assert "Plugins (dref.plugins)" in out


def test_version() -> None:
    code, out, _ = invoke("--version")
    assert code == 0
    assert out == f"dref {version('dref-core')}\n"


def test_a_dref_error_is_one_red_line_and_its_documented_exit_status() -> None:
    code, out, err = invoke(
        "demo", "--backend", "inmemory", env={"DREF_BLOCK_PLUGINS": "inmemory", "FORCE_COLOR": "1"}
    )
    assert code == 6  # bad configuration: the backend is not installed
    assert out == ""
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert "\x1b[1;31merror:" in err  # red
    plain = Text.from_ansi(err).plain
    assert "error: BackendNotFoundError: no dref backend named 'inmemory' is installed" in plain


def test_a_failed_demo_check_is_reported_like_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing(*args: object) -> None:
        raise DemoFailure("the counter ended at 999,\nexpected 1000")

    monkeypatch.setattr(dref.cli, "run_demo", failing)
    code, _, err = invoke("demo", "--backend", "inmemory")
    assert code == 1
    assert err == "error: DemoFailure: the counter ended at 999, expected 1000\n"


# -- `dref.cli` entry points --------------------------------------------------------------------
def cli_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> str:
    """Install a throw-away distribution with the `dref.cli` entry point `name = <module>:cli`."""
    module = f"fake_cli_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    info = tmp_path / f"dref_fakecli_{module}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dref-fakecli\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[dref.cli]\n{name} = {module}:cli\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return module


HELLO = """
    import click

    @click.group()
    def cli():
        \"\"\"Hello commands.\"\"\"

    @cli.command()
    @click.argument("who")
    def greet(who):
        click.echo(f"hello {who}")

    @cli.command()
    @click.argument("use_cases", nargs=-1)
    def demo(use_cases):
        click.echo(f"fake demo of {list(use_cases)}")
"""


def test_a_contributed_command_is_listed_without_import_and_loaded_when_invoked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = cli_dist(tmp_path, monkeypatch, "hello", HELLO)
    code, out, _ = invoke("--help")
    assert code == 0
    assert "hello     Commands of dref-fakecli (dref.cli entry point)." in out
    assert module not in sys.modules  # listed from metadata only
    code, out, _ = invoke("hello", "greet", "world")
    assert (code, out) == (0, "hello world\n")
    assert module in sys.modules


def test_demo_backend_runs_the_contributed_demo_subcommand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli_dist(tmp_path, monkeypatch, "hello", HELLO)
    code, out, _ = invoke("demo", "--backend", "hello", "flags", "counter")
    assert (code, out) == (0, "fake demo of ['flags', 'counter']\n")


def test_demo_auto_is_raft_if_its_cli_is_installed_else_inmemory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dref.cli, "_cli_entry_points", dict)  # nothing contributed
    code, out, _ = invoke("demo", "counter")
    assert code == 0
    assert "in-memory backend" in out


def test_demo_of_a_backend_without_a_demo_is_a_usage_error() -> None:
    code, _, err = invoke("demo", "--backend", "nope")
    assert code == 2
    assert "no demo for backend 'nope' is installed" in err


def test_a_contributed_command_that_fails_to_load_is_one_red_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli_dist(tmp_path, monkeypatch, "broken", "raise RuntimeError('boom')")
    code, out, err = invoke("broken")
    assert code == 6  # bad configuration (docs/cli.md)
    assert out == ""
    assert "PluginLoadError" in err
    assert "RuntimeError: boom" in err
    assert "Traceback" not in err
