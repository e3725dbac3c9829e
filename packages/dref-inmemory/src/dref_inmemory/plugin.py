"""Entry point of the `inmemory` backend (`dref.backends` group)."""

from __future__ import annotations

from dref.hookspecs import hookimpl
from dref.registries import BackendRegistry
from dref.spi import BackendSpec
from dref_inmemory.backend import InMemorySettings, open_backend


@hookimpl
def dref_register_backends(registry: BackendRegistry) -> None:
    registry.add(
        BackendSpec(
            name="inmemory",
            settings=InMemorySettings,
            open=open_backend,
            description="one store per namespace shared by the contexts of this process",
        )
    )
