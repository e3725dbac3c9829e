"""A third-party dref backend in one module: values in a per-process dict.

It implements only the required SPI methods, so dref core supplies the rest: `modify`/`update`
run upstream's lock protocol, and locks use the portable (non-atomic) owner checks. Expired
entries are dropped lazily, so lock waiters rely on core's bounded poll.
"""

from __future__ import annotations

import time

from pydantic_settings import BaseSettings, SettingsConfigDict

import dref
from dref.changes import ChangeEvent, ChangeHub, Subscription
from dref.clock import Clock
from dref.registries import BackendRegistry

_DATA: dict[str, tuple[bytes, float | None]] = {}
_HUB = ChangeHub()


class ExampleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DREF_EXAMPLE_DICT_", extra="forbid")
    poll_interval: float = 0.05


class DictBackend(dref.Backend):
    capabilities = dref.Capabilities(linearizable=True, exact_events=True)
    default_ttl = 5.0

    def __init__(self, settings: ExampleSettings) -> None:
        self.poll_interval = settings.poll_interval

    def _live(self, name: str) -> bytes | None:
        entry = _DATA.get(name)
        if entry is not None and entry[1] is not None and entry[1] <= time.monotonic():
            del _DATA[name]
            return None
        return None if entry is None else entry[0]

    async def get(self, name: str) -> bytes | None:
        return self._live(name)

    async def set(self, name: str, value: bytes, ttl: float | None = None) -> None:
        _DATA[name] = (value, None if ttl is None else time.monotonic() + ttl)
        _HUB.publish(ChangeEvent(name, value))

    async def set_if_not_exist(self, name: str, value: bytes, ttl: float | None = None) -> bool:
        if self._live(name) is not None:
            return False
        await self.set(name, value, ttl)
        return True

    async def delete(self, name: str) -> None:
        _DATA.pop(name, None)
        _HUB.publish(ChangeEvent(name, None))

    async def expire(self, name: str, ttl: float) -> bool:
        value = self._live(name)
        if value is None:
            return False
        _DATA[name] = (value, time.monotonic() + ttl)
        return True

    async def subscribe(self, name: str) -> Subscription:
        return _HUB.subscribe(name)


async def open_backend(
    settings: ExampleSettings, core: dref.DRefSettings, clock: Clock
) -> DictBackend:
    return DictBackend(settings)


@dref.hookimpl
def dref_register_backends(registry: BackendRegistry) -> None:
    registry.add(dref.BackendSpec("example-dict", ExampleSettings, open_backend))
