"""The plugin manager façade: one per context, never a module global.

Loads dref's built-in plugin, the autoloaded `dref.plugins` entry points, and — on demand — only
the configured backend's `dref.backends` entry point. Import failures become `PluginLoadError`
naming plugin and distribution; an unknown backend becomes `BackendNotFoundError` listing the
installed names, read from entry-point metadata without importing anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from dref import _builtin, hookspecs
from dref.errors import BackendNotFoundError, PluginLoadError
from dref.registries import BackendRegistry, CodecRegistry
from dref.settings import DRefSettings
from dref.spi import BackendSpec

__all__ = ["BACKENDS_GROUP", "PLUGINS_GROUP", "InstalledPlugin", "PluginManager", "installed"]

BACKENDS_GROUP = "dref.backends"
PLUGINS_GROUP = "dref.plugins"

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
    """Typed façade over `pluggy.PluginManager` for one dref context."""

    def __init__(self, settings: DRefSettings) -> None:
        self._settings = settings
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._pm.register(_builtin, name="dref.builtin")
        if not settings.disable_plugin_autoload:
            for ep in entry_points(group=PLUGINS_GROUP):
                if ep.name not in settings.block_plugins:
                    self._load(ep)
        self.codecs = CodecRegistry()
        self._pm.hook.dref_register_codecs(registry=self.codecs)

    def backend(self, name: str) -> BackendSpec:
        """Import the backend `name` (and only it) and return its spec."""
        eps = {ep.name: ep for ep in entry_points(group=BACKENDS_GROUP)}
        blocked = set(self._settings.block_plugins)
        ep = eps.get(name)
        if ep is None or name in blocked:
            raise BackendNotFoundError(name, [n for n in eps if n not in blocked])
        self._load(ep)
        registry = BackendRegistry()
        try:
            self._pm.hook.dref_register_backends(registry=registry)
        except Exception as exc:
            raise PluginLoadError(name, _dist(ep), f"dref_register_backends failed: {exc}") from exc
        spec = registry.get(name)
        if spec is None:
            raise PluginLoadError(
                name, _dist(ep), f"module {ep.value!r} registers no backend named {name!r}"
            )
        return spec

    def plugin_names(self) -> list[str]:
        return sorted(n for n, _ in self._pm.list_name_plugin() if n is not None)

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call an observer hook; each implementation's exception is logged, never raised."""
        caller = getattr(self._pm.hook, hook)
        for impl in reversed(caller.get_hookimpls()):
            try:
                impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception:
                log.exception("dref plugin %r failed in %s", impl.plugin_name, hook)

    def _load(self, ep: EntryPoint) -> ModuleType:
        key = f"{ep.group}:{ep.name}"
        existing = self._pm.get_plugin(key)
        if existing is not None:
            return existing  # type: ignore[no-any-return]
        try:
            module = ep.load()
            self._pm.register(module, name=key)
        except Exception as exc:
            raise PluginLoadError(ep.name, _dist(ep), f"{type(exc).__name__}: {exc}") from exc
        return module  # type: ignore[no-any-return]


def _dist(ep: EntryPoint) -> str | None:
    return ep.dist.name if ep.dist is not None else None
