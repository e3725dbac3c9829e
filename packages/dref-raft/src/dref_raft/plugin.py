"""Entry point of the `raft` backend (`dref.backends` → `raft = "dref_raft.plugin"`)."""

from __future__ import annotations

from dref.hookspecs import hookimpl
from dref.registries import BackendRegistry
from dref.spi import BackendSpec
from dref_raft.backend import open_backend
from dref_raft.settings import RaftSettings

__all__ = ["dref_register_backends"]


@hookimpl
def dref_register_backends(registry: BackendRegistry) -> None:
    registry.add(
        BackendSpec(
            name="raft",
            settings=RaftSettings,
            open=open_backend,
            description="Raft cluster member over gRPC, wire-compatible with upstream",
        )
    )
