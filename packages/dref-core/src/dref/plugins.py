"""The plugin manager façade: one per context, never a module global.

Loads dref's built-in plugin, the autoloaded `dref.plugins` entry points, and — on demand — only
the configured backend's `dref.backends` entry point. Core calls every hook through one typed
method of `PluginManager` (`register_backends`, `register_codecs`, `lock_acquired`,
`lock_released`, `lock_lost`), never through pluggy's untyped `pm.hook`; `dref.hookspecs`
documents what each one does when an implementation returns or raises.

Failures name plugin and distribution: an import or registration failure, an implementation of an
unknown hook or a hook wrapper becomes `PluginLoadError` (cause chained); an unknown backend
becomes `BackendNotFoundError` listing the installed names, read from entry-point metadata
without importing anything.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from dref import _builtin, hookspecs, metrics
from dref.errors import BackendNotFoundError, PluginLoadError
from dref.registries import BackendRegistry, CodecRegistry
from dref.settings import DRefSettings
from dref.spi import BackendSpec

__all__ = ["BACKENDS_GROUP", "PLUGINS_GROUP", "InstalledPlugin", "PluginManager", "installed"]

BACKENDS_GROUP = "dref.backends"
PLUGINS_GROUP = "dref.plugins"
BUILTIN = "dref.builtin"
METRICS = "dref.metrics"

log = logging.getLogger("dref.plugins")


@dataclass(frozen=True)
class InstalledPlugin:
    """An entry point of one of dref's groups, as the package metadata describes it."""

    group: str
    name: str
    target: str
    distribution: str | None
    version: str | None


def installed(group: str) -> list[InstalledPlugin]:
    """Entry points of `group`, sorted by name; nothing is imported."""
    found = []
    for ep in entry_points(group=group):
        dist = ep.dist
        found.append(
            InstalledPlugin(
                group=group,
                name=ep.name,
                target=ep.value,
                distribution=dist.name if dist is not None else None,
                version=dist.version if dist is not None else None,
            )
        )
    return sorted(found, key=lambda p: p.name)


class PluginManager:
    """Typed façade over `pluggy.PluginManager` for one dref context: one method per hook."""

    def __init__(self, settings: DRefSettings) -> None:
        self._settings = settings
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        # pluggy's plugin name -> (plugin name in errors, distribution)
        self._origins: dict[str, tuple[str, str | None]] = {
            BUILTIN: (BUILTIN, "dref-core"),
            METRICS: (METRICS, "dref-core"),
        }
        self._pm.register(_builtin, name=BUILTIN)
        self._pm.register(metrics, name=METRICS)  # lock hooks: no-ops while metrics are off
        if not settings.disable_plugin_autoload:
            for ep in entry_points(group=PLUGINS_GROUP):
                if ep.name not in settings.block_plugins:
                    self._load(ep)
        self.codecs = CodecRegistry()
        self.register_codecs(self.codecs)

    # -- hooks: one typed method each (see dref.hookspecs) ----------------------------------------
    def register_backends(self, registry: BackendRegistry) -> None:
        """Call `dref_register_backends`; a failing implementation raises `PluginLoadError`."""
        self._register("dref_register_backends", {"registry": registry})

    def register_codecs(self, registry: CodecRegistry) -> None:
        """Call `dref_register_codecs`; a failing implementation raises `PluginLoadError`."""
        self._register("dref_register_codecs", {"registry": registry})

    def lock_acquired(self, name: str, token: int, fence: int | None) -> None:
        """Call `dref_lock_acquired`; implementations' exceptions are logged, never raised."""
        self._observe("dref_lock_acquired", {"name": name, "token": token, "fence": fence})

    def lock_released(self, name: str, token: int) -> None:
        """Call `dref_lock_released`; implementations' exceptions are logged, never raised."""
        self._observe("dref_lock_released", {"name": name, "token": token})

    def lock_lost(self, name: str, token: int, reason: str) -> None:
        """Call `dref_lock_lost`; implementations' exceptions are logged, never raised."""
        self._observe("dref_lock_lost", {"name": name, "token": token, "reason": reason})

    # -- backends ---------------------------------------------------------------------------------
    def backend(self, name: str) -> BackendSpec:
        """Import the backend `name` (and only it) and return its spec."""
        eps = {ep.name: ep for ep in entry_points(group=BACKENDS_GROUP)}
        blocked = set(self._settings.block_plugins)
        ep = eps.get(name)
        if ep is None or name in blocked:
            raise BackendNotFoundError(name, [n for n in eps if n not in blocked])
        key = _key(ep)
        if self._pm.get_plugin(key) is None:
            self._load(ep)
            # The backend module's codecs join those registered when the manager was created.
            self._register("dref_register_codecs", {"registry": self.codecs}, plugin=key)
        registry = BackendRegistry()
        self.register_backends(registry)
        spec = registry.get(name)
        if spec is None:
            raise PluginLoadError(
                name, _dist(ep), f"module {ep.value!r} registers no backend named {name!r}"
            )
        return spec

    def plugin_names(self) -> list[str]:
        return sorted(n for n, _ in self._pm.list_name_plugin() if n is not None)

    # -- calling ----------------------------------------------------------------------------------
    def _impls(self, hook: str, plugin: str | None = None) -> list[pluggy.HookImpl]:
        """Implementations of `hook` in registration order; tryfirst ones first, trylast last."""
        caller: pluggy.HookCaller = getattr(self._pm.hook, hook)
        impls = [i for i in caller.get_hookimpls() if plugin is None or i.plugin_name == plugin]
        return sorted(impls, key=lambda i: (not i.tryfirst, i.trylast))  # stable

    def _register(self, hook: str, kwargs: Mapping[str, Any], plugin: str | None = None) -> None:
        """Call a registration hook: a raise or a returned value is the plugin's load failure."""
        for impl in self._impls(hook, plugin):
            try:
                result = _call(impl, kwargs)
            except Exception as exc:
                raise self._failure(impl, f"{hook} raised {type(exc).__name__}: {exc}") from exc
            if result is not None:
                _close(result)
                raise self._failure(
                    impl,
                    f"{hook} returned {result!r}; it must return None (hooks are synchronous "
                    "and add to the registry they are given)",
                )

    def _observe(self, hook: str, kwargs: Mapping[str, Any]) -> None:
        """Call an observer hook: each implementation's exception is logged, never raised."""
        for impl in self._impls(hook):
            try:
                result = _call(impl, kwargs)
            except Exception:
                log.exception("dref plugin %r failed in %s", impl.plugin_name, hook)
                continue
            if inspect.isawaitable(result):
                _close(result)
                log.error(
                    "dref plugin %r: %s returned an awaitable, which is never awaited (hooks are "
                    "synchronous; start a task for async work)",
                    impl.plugin_name,
                    hook,
                )

    def _failure(self, impl: pluggy.HookImpl, reason: str) -> PluginLoadError:
        plugin, dist = self._origins.get(impl.plugin_name, (impl.plugin_name, None))
        return PluginLoadError(plugin, dist, reason)

    # -- loading ----------------------------------------------------------------------------------
    def _load(self, ep: EntryPoint) -> ModuleType:
        key = _key(ep)
        existing = self._pm.get_plugin(key)
        if existing is not None:
            return existing  # type: ignore[no-any-return]
        try:
            module = ep.load()
            self._pm.register(module, name=key)
        except Exception as exc:
            raise PluginLoadError(ep.name, _dist(ep), f"{type(exc).__name__}: {exc}") from exc
        self._origins[key] = (ep.name, _dist(ep))
        problem = self._check(key)
        if problem is not None:
            self._pm.unregister(name=key)
            raise PluginLoadError(ep.name, _dist(ep), problem)
        return module  # type: ignore[no-any-return]

    def _check(self, key: str) -> str | None:
        """Why the implementations of plugin `key` are not acceptable, or None."""
        for caller in self._pm.get_hookcallers(self._pm.get_plugin(key)) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin_name != key:
                    continue
                if not caller.has_spec() and not impl.optionalhook:
                    return (
                        f"{impl.function.__name__!r} implements no dref hook (known hooks: "
                        f"{', '.join(_hook_names())}); mark it optionalhook=True if it is "
                        "meant for a newer dref"
                    )
                if impl.hookwrapper or impl.wrapper:
                    return f"{caller.name} is implemented as a hook wrapper; dref hooks take none"
        return None


def _call(impl: pluggy.HookImpl, kwargs: Mapping[str, Any]) -> object:
    function: Callable[..., object] = impl.function
    return function(*[kwargs[arg] for arg in impl.argnames])


def _close(result: object) -> None:
    """Close a coroutine nobody will await, so that it does not warn when collected."""
    if inspect.iscoroutine(result):
        result.close()


def _hook_names() -> list[str]:
    return sorted(n for n in vars(hookspecs) if n.startswith(f"{hookspecs.PROJECT}_"))


def _key(ep: EntryPoint) -> str:
    return f"{ep.group}:{ep.name}"


def _dist(ep: EntryPoint) -> str | None:
    return ep.dist.name if ep.dist is not None else None
