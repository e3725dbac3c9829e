"""Plugin loading: only the configured backend is imported; failures name what and where."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import pytest

import dref
from dref.errors import BackendNotFoundError, PluginLoadError
from dref.plugins import installed

FakeDist = Callable[..., str]

CODEC_PLUGIN = """
import dref
from dref.codecs import JsonCodec

calls = []

@dref.hookimpl
def dref_register_codecs(registry):
    registry.add("json-upper", lambda settings: JsonCodec())

@dref.hookimpl
def dref_lock_acquired(name, token, fence):
    calls.append(("acquired", name, fence))

@dref.hookimpl
def dref_lock_released(name, token):
    calls.append(("released", name))
    raise RuntimeError("observer bug")
"""


def test_unknown_backend_lists_installed_names() -> None:
    with pytest.raises(BackendNotFoundError) as info:
        dref.connect("etcd")
    assert "inmemory" in info.value.installed
    assert "'etcd'" in str(info.value)
    assert "inmemory" in str(info.value)


def test_backend_failing_to_import_names_plugin_and_distribution(fake_dist: FakeDist) -> None:
    fake_dist("dref.backends", "broken", "raise ImportError('needs libfoo')", dist="dref-broken")
    with pytest.raises(PluginLoadError) as info:
        dref.connect("broken")
    assert info.value.plugin == "broken"
    assert info.value.distribution == "dref-broken"
    assert "needs libfoo" in str(info.value)
    assert isinstance(info.value.__cause__, ImportError)


def test_backend_module_without_the_hook(fake_dist: FakeDist) -> None:
    fake_dist("dref.backends", "empty", "x = 1")
    with pytest.raises(PluginLoadError, match="registers no backend named 'empty'"):
        dref.connect("empty")


def test_only_the_configured_backend_is_imported(fake_dist: FakeDist) -> None:
    module = fake_dist("dref.backends", "other", "raise SystemExit('must not be imported')")
    dref.connect("inmemory")
    assert module not in sys.modules
    assert any(p.name == "other" for p in installed("dref.backends"))


async def test_autoloaded_plugin_adds_a_codec_and_observes_locks(
    fake_dist: FakeDist, caplog: pytest.LogCaptureFixture
) -> None:
    module = fake_dist("dref.plugins", "extras", CODEC_PLUGIN)
    async with dref.connect("inmemory", codec="json-upper") as ctx:
        ref = await ctx.make({"a": 1}, "plugins:codec")
        assert await ctx.backend.get(ref.name) == b'{"a":1}'
        with caplog.at_level(logging.ERROR, logger="dref.plugins"):
            async with ctx.lock("plugins:lock") as guard:
                pass
    calls = sys.modules[module].calls
    assert calls == [("acquired", "plugins:lock", guard.fence), ("released", "plugins:lock")]
    assert "observer bug" in caplog.text  # logged, and the release still happened


def test_autoload_can_be_disabled_or_blocked(
    fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dist("dref.plugins", "extras", CODEC_PLUGIN)
    monkeypatch.setenv("DREF_DISABLE_PLUGIN_AUTOLOAD", "1")
    with pytest.raises(dref.errors.ConfigurationError, match="json-upper"):
        dref.connect("inmemory", codec="json-upper")
    monkeypatch.delenv("DREF_DISABLE_PLUGIN_AUTOLOAD")
    monkeypatch.setenv("DREF_BLOCK_PLUGINS", "extras")
    with pytest.raises(dref.errors.ConfigurationError, match="json-upper"):
        dref.connect("inmemory", codec="json-upper")


def test_plugin_failing_to_import(fake_dist: FakeDist) -> None:
    fake_dist("dref.plugins", "badplugin", "1 / 0", dist="dref-bad")
    with pytest.raises(PluginLoadError, match="'badplugin' from distribution 'dref-bad'"):
        dref.connect("inmemory")
