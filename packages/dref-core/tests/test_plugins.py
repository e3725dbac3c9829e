"""Plugin loading: only the configured backend is imported; failures name what and where."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import sys
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from unittest.mock import ANY

import pytest

import dref
from dref import hookspecs, registries
from dref.errors import BackendNotFoundError, PluginLoadError
from dref.plugins import PluginManager, installed

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


# -- the documented behaviour of every hook (dref.hookspecs) --------------------------------------

RAISING_BACKENDS = """
import dref

@dref.hookimpl
def dref_register_backends(registry):
    raise ValueError("no spec today")
"""


def test_register_backends_raising_names_the_plugin_that_raised(fake_dist: FakeDist) -> None:
    fake_dist("dref.plugins", "bad-backends", RAISING_BACKENDS, dist="dref-bad-backends")
    with pytest.raises(PluginLoadError) as info:
        dref.connect("inmemory")
    assert info.value.plugin == "bad-backends"  # not the configured backend
    assert info.value.distribution == "dref-bad-backends"
    assert "dref_register_backends raised ValueError: no spec today" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)


def test_register_backends_raising_in_the_backend_module(fake_dist: FakeDist) -> None:
    fake_dist("dref.backends", "raising", RAISING_BACKENDS, dist="dref-raising")
    with pytest.raises(PluginLoadError) as info:
        dref.connect("raising")
    assert (info.value.plugin, info.value.distribution) == ("raising", "dref-raising")
    assert isinstance(info.value.__cause__, ValueError)


def test_register_codecs_raising_names_the_plugin(fake_dist: FakeDist) -> None:
    source = """
    import dref

    @dref.hookimpl
    def dref_register_codecs(registry):
        raise RuntimeError("codec bug")
    """
    fake_dist("dref.plugins", "bad-codecs", source, dist="dref-bad-codecs")
    with pytest.raises(PluginLoadError) as info:
        dref.connect("inmemory")
    assert (info.value.plugin, info.value.distribution) == ("bad-codecs", "dref-bad-codecs")
    assert "dref_register_codecs raised RuntimeError: codec bug" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_a_codec_name_already_taken_fails_the_newcomer(fake_dist: FakeDist) -> None:
    source = """
    import dref
    from dref.codecs import JsonCodec

    @dref.hookimpl
    def dref_register_codecs(registry):
        registry.add("json", lambda settings: JsonCodec())
    """
    fake_dist("dref.plugins", "json-again", source, dist="dref-json-again")
    with pytest.raises(PluginLoadError) as info:
        dref.connect("inmemory")
    assert info.value.plugin == "json-again"  # the built-in plugin registered "json" first
    assert isinstance(info.value.__cause__, dref.errors.PluginError)
    assert "codec 'json' is registered twice" in str(info.value)


@pytest.mark.parametrize(
    ("hook", "body"),
    [
        ("dref_register_codecs", "return 'json'"),
        ("dref_register_backends", "return 1"),
    ],
)
def test_a_registration_hook_must_return_none(fake_dist: FakeDist, hook: str, body: str) -> None:
    source = f"""
    import dref

    @dref.hookimpl
    def {hook}(registry):
        {body}
    """
    fake_dist("dref.plugins", "returns", source, dist="dref-returns")
    with pytest.raises(PluginLoadError, match=f"'returns'.*{hook} returned .*must return None"):
        dref.connect("inmemory")


def test_an_async_registration_hook_fails_without_an_unawaited_coroutine(
    fake_dist: FakeDist,
) -> None:
    source = """
    import dref

    @dref.hookimpl
    async def dref_register_codecs(registry):
        registry.add("never", None)
    """
    fake_dist("dref.plugins", "async-codecs", source)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" would be an error
        with pytest.raises(PluginLoadError, match="returned <coroutine"):
            dref.connect("inmemory")
        gc.collect()


async def test_the_backend_module_registers_codecs_too(fake_dist: FakeDist) -> None:
    source = """
    import dref
    from dref.codecs import JsonCodec
    from dref_inmemory.backend import InMemorySettings, open_backend

    @dref.hookimpl
    def dref_register_backends(registry):
        registry.add(dref.BackendSpec("mem-json", InMemorySettings, open_backend))

    @dref.hookimpl
    def dref_register_codecs(registry):
        registry.add("backend-json", lambda settings: JsonCodec())
    """
    fake_dist("dref.backends", "mem-json", source)
    async with dref.connect("mem-json", codec="backend-json") as ctx:
        ref = await ctx.make([1], "plugins:backend-codec")
        assert await ctx.backend.get(ref.name) == b"[1]"


def test_an_implementation_of_an_unknown_hook_fails_to_load(fake_dist: FakeDist) -> None:
    source = """
    import dref

    @dref.hookimpl
    def dref_register_backend(registry):  # typo: the hook is dref_register_backends
        pass
    """
    fake_dist("dref.plugins", "typo", source, dist="dref-typo")
    with pytest.raises(PluginLoadError, match=r"'typo'.*'dref_register_backend' implements no"):
        dref.connect("inmemory")


def test_an_optional_unknown_hook_is_accepted(fake_dist: FakeDist) -> None:
    source = """
    import dref

    @dref.hookimpl(optionalhook=True)
    def dref_from_the_future(registry):
        pass
    """
    fake_dist("dref.plugins", "future", source)
    dref.connect("inmemory")


def test_a_parameter_the_hook_does_not_have_fails_to_load(fake_dist: FakeDist) -> None:
    source = """
    import dref

    @dref.hookimpl
    def dref_lock_released(name, token, holder):
        pass
    """
    fake_dist("dref.plugins", "extra-arg", source, dist="dref-extra-arg")
    with pytest.raises(PluginLoadError, match="'extra-arg' from distribution 'dref-extra-arg'"):
        dref.connect("inmemory")


def test_hook_wrappers_are_rejected(fake_dist: FakeDist) -> None:
    source = """
    import dref

    @dref.hookimpl(wrapper=True)
    def dref_register_codecs(registry):
        return (yield)
    """
    fake_dist("dref.plugins", "wrapper", source, dist="dref-wrapper")
    with pytest.raises(PluginLoadError, match="dref_register_codecs is implemented as a hook wr"):
        dref.connect("inmemory")


OBSERVERS = """
import dref

calls = []

@dref.hookimpl
def dref_lock_acquired(name, fence):  # any subset of the parameters, by name
    calls.append(("acquired", name, fence))
    raise RuntimeError("observer bug in acquired")

@dref.hookimpl
def dref_lock_lost(token, reason, name):
    calls.append(("lost", name, token, reason))
    raise RuntimeError("observer bug in lost")

@dref.hookimpl
def dref_lock_released(name):
    calls.append(("released", name))
"""

SECOND_OBSERVER = """
import dref

calls = []

@dref.hookimpl(tryfirst=True)
def dref_lock_acquired(name):
    calls.append(("acquired", name))

@dref.hookimpl
def dref_lock_lost(name):
    calls.append(("lost", name))
"""


async def test_raising_observers_are_logged_and_the_lock_goes_on(
    fake_dist: FakeDist, caplog: pytest.LogCaptureFixture
) -> None:
    first = fake_dist("dref.plugins", "observer", OBSERVERS)
    second = fake_dist("dref.plugins", "second-observer", SECOND_OBSERVER)
    body_cancelled = False
    async with dref.connect("inmemory") as ctx:
        with (
            caplog.at_level(logging.ERROR, logger="dref.plugins"),
            pytest.raises(dref.errors.LockStolenError) as info,
        ):
            async with ctx.lock("plugins:stolen", ttl=5) as guard:
                await ctx.backend.delete("plugins:stolen")
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    body_cancelled = True
                    raise
    assert body_cancelled  # the raising lost-observer did not stop the cancellation
    reason = info.value.reason
    assert reason is not None
    assert sys.modules[first].calls == [
        ("acquired", "plugins:stolen", guard.fence),
        ("lost", "plugins:stolen", guard.token_int, reason),
    ]  # never "released": for each hold at most one of released / lost
    assert sys.modules[second].calls == [("acquired", "plugins:stolen"), ("lost", "plugins:stolen")]
    assert "observer bug in acquired" in caplog.text
    assert "observer bug in lost" in caplog.text


async def test_lost_at_release_is_reported_instead_of_released(fake_dist: FakeDist) -> None:
    module = fake_dist("dref.plugins", "observer", OBSERVERS)
    async with dref.connect("inmemory") as ctx:
        with pytest.raises(dref.errors.LockStolenError):
            async with ctx.lock("plugins:gone", ttl=5):
                await ctx.backend.delete("plugins:gone")  # before the watchdog starts
    reason = "the lock was no longer held when it was released"
    assert sys.modules[module].calls[1:] == [("lost", "plugins:gone", ANY, reason)]


async def test_an_async_observer_is_logged_and_closed(
    fake_dist: FakeDist, caplog: pytest.LogCaptureFixture
) -> None:
    source = """
    import dref

    @dref.hookimpl
    async def dref_lock_acquired(name):
        raise AssertionError("never runs")
    """
    fake_dist("dref.plugins", "async-observer", source)
    async with dref.connect("inmemory") as ctx:
        with warnings.catch_warnings(), caplog.at_level(logging.ERROR, logger="dref.plugins"):
            warnings.simplefilter("error")
            async with ctx.lock("plugins:async", ttl=5):
                pass
            gc.collect()
    assert "dref_lock_acquired returned an awaitable" in caplog.text


def test_one_typed_facade_method_per_hook() -> None:
    hooks = {n: f for n, f in vars(hookspecs).items() if n.startswith("dref_")}
    assert set(hooks) == {
        "dref_register_backends",
        "dref_register_codecs",
        "dref_lock_acquired",
        "dref_lock_released",
        "dref_lock_lost",
    }
    for hook, spec in hooks.items():
        method = getattr(PluginManager, hook.removeprefix("dref_"))
        expected = inspect.signature(spec)
        got = inspect.signature(method)
        assert list(got.parameters)[1:] == list(expected.parameters), hook
        names = vars(registries)
        assert typing.get_type_hints(method) == typing.get_type_hints(spec, names), hook


def test_every_hook_documents_when_args_returns_and_raises() -> None:
    for name, spec in vars(hookspecs).items():
        if name.startswith("dref_"):
            doc = inspect.getdoc(spec) or ""
            for section in ("Called:", "Returns None", "Raises:"):
                assert section in doc, f"{name} does not document {section!r}"
            for param in inspect.signature(spec).parameters:
                assert f"`{param}`" in doc, f"{name} does not document {param!r}"


def test_core_calls_hooks_only_through_the_facade() -> None:
    src = Path(dref.__file__).parent
    for path in src.rglob("*.py"):
        text = path.read_text()
        if path.name != "plugins.py":
            assert ".hook." not in text, path
            assert "get_hookimpls" not in text, path
