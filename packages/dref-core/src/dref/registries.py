"""Registries handed to the registration hooks (`registry.add(...)`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from dref.errors import ConfigurationError, PluginError
from dref.spi import BackendSpec

if TYPE_CHECKING:
    from dref.codecs import Codec
    from dref.settings import DRefSettings

__all__ = ["BackendRegistry", "CodecFactory", "CodecRegistry"]

CodecFactory = Callable[["DRefSettings"], "Codec"]


class BackendRegistry:
    """Backends registered by plugins, by id."""

    def __init__(self) -> None:
        self._specs: dict[str, BackendSpec] = {}

    def add(self, spec: BackendSpec) -> None:
        if spec.name in self._specs and self._specs[spec.name] is not spec:
            raise PluginError(f"backend {spec.name!r} is registered twice")
        self._specs[spec.name] = spec

    def get(self, name: str) -> BackendSpec | None:
        return self._specs.get(name)

    def names(self) -> list[str]:
        return sorted(self._specs)


class CodecRegistry:
    """Codec factories registered by plugins, by name."""

    def __init__(self) -> None:
        self._factories: dict[str, CodecFactory] = {}

    def add(self, name: str, factory: CodecFactory) -> None:
        if name in self._factories and self._factories[name] is not factory:
            raise PluginError(f"codec {name!r} is registered twice")
        self._factories[name] = factory

    def create(self, name: str, settings: DRefSettings) -> Codec:
        factory = self._factories.get(name)
        if factory is None:
            raise ConfigurationError(
                f"codec (DREF_CODEC) = {name!r}: no such codec "
                f"(registered codecs: {', '.join(self.names())})"
            )
        return factory(settings)

    def names(self) -> list[str]:
        return sorted(self._factories)
