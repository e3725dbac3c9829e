"""Entry point of the `redis` backend (`dref.backends` → `redis = "dref_redis.plugin"`)."""

from __future__ import annotations

from dref.clock import Clock
from dref.hookspecs import hookimpl
from dref.registries import BackendRegistry
from dref.settings import DRefSettings
from dref.spi import Backend, BackendSpec
from dref_redis.backend import RedisBackend
from dref_redis.settings import RedisSettings

__all__ = ["dref_register_backends", "open_backend"]


async def open_backend(settings: RedisSettings, core: DRefSettings, clock: Clock) -> Backend:
    """Open a `RedisBackend`; fails with a clear error if Redis rejects us or is unreachable."""
    return await RedisBackend.open(settings, clock=clock, change_buffer=core.change_buffer)


@hookimpl
def dref_register_backends(registry: BackendRegistry) -> None:
    registry.add(
        BackendSpec(
            name="redis",
            settings=RedisSettings,
            open=open_backend,
            description="Redis (standalone, Sentinel or Cluster), wire-compatible with upstream",
        )
    )
