"""Entry point of the `raft` backend (`dref.backends` → `raft = "dref_raft.plugin"`)."""

from __future__ import annotations

from dref.clock import Clock
from dref.hookspecs import hookimpl
from dref.registries import BackendRegistry
from dref.settings import DRefSettings
from dref.spi import Backend, BackendSpec
from dref_raft.client.backend import open_client_backend
from dref_raft.member.backend import open_backend
from dref_raft.settings import RaftSettings

__all__ = ["dref_register_backends", "open_raft"]


async def open_raft(settings: RaftSettings, core: DRefSettings, clock: Clock) -> Backend:
    """`mode="member"`: run (or join) a member here; `mode="client"`: talk to the members."""
    if settings.mode == "client":
        return await open_client_backend(settings, core, clock)
    return await open_backend(settings, core, clock)


@hookimpl
def dref_register_backends(registry: BackendRegistry) -> None:
    registry.add(
        BackendSpec(
            name="raft",
            settings=RaftSettings,
            open=open_raft,
            description="Raft cluster member (or client of one) over gRPC, wire-compatible "
            "with upstream",
        )
    )
