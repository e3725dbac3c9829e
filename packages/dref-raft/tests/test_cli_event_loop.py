"""`dref raft node --event-loop`: uvloop when installed, asyncio's loop otherwise."""

from __future__ import annotations

import asyncio
import sys
import types

import pytest
from click.testing import CliRunner

from dref_raft.cli.commands import node
from dref_raft.cli.event_loop import loop_factory, run


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


class _MarkedLoop(asyncio.SelectorEventLoop):
    """Stands for uvloop's loop."""


def _fake_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("uvloop")
    module.new_event_loop = _MarkedLoop  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uvloop", module)


def test_auto_and_uvloop_use_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_uvloop(monkeypatch)
    assert run(_loop_type(), "auto") is _MarkedLoop
    assert run(_loop_type(), "uvloop") is _MarkedLoop
    assert run(_loop_type(), "asyncio") is not _MarkedLoop


def test_without_uvloop_auto_falls_back_and_uvloop_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import fails
    assert loop_factory("auto") is None
    assert run(_loop_type(), "auto") is not _MarkedLoop
    with pytest.raises(RuntimeError, match=r"dref-raft\[uvloop\]"):
        loop_factory("uvloop")
    result = CliRunner().invoke(node, ["--event-loop", "uvloop", "--node-id", "n1"])
    assert result.exit_code == 2
    assert "dref-raft[uvloop]" in result.output


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="auto, asyncio, uvloop"):
        loop_factory("trio")  # type: ignore[arg-type]
