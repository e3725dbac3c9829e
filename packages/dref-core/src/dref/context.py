"""`dref.connect(...)` and the context it opens: the entry point of the public API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine, Generator
from types import TracebackType
from typing import Any, TypeVar, overload

from dref._aio import cancel_and_wait
from dref._combine import UpdateLines
from dref.clock import Clock, SystemClock
from dref.codecs import Codec
from dref.errors import ClosedError, ConfigurationError, UnsupportedOperationError
from dref.ids import IdLike, resolve_name
from dref.lock import Lock
from dref.plugins import PluginManager
from dref.ref import DRef, check_ttl
from dref.resources import AsyncResource
from dref.settings import DRefSettings, load_settings, split_options
from dref.spi import Backend, BackendSpec

__all__ = ["Connector", "DRefContext", "connect"]

T = TypeVar("T")

log = logging.getLogger("dref")


class DRefContext(AsyncResource):
    """An open connection to one backend: makes refs, takes locks; close with `aclose()`."""

    def __init__(
        self,
        *,
        settings: DRefSettings,
        backend_settings: Any,
        backend: Backend,
        plugins: PluginManager,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.backend_settings = backend_settings
        self.backend = backend
        self.plugins = plugins
        self.clock = clock
        self.codec: Codec = plugins.codecs.create(settings.codec, settings)
        self._tasks: set[asyncio.Task[Any]] = set()
        # Elements with contended `modify` calls of this context in flight (dref._combine).
        self._update_lines = UpdateLines()
        self._closed = False

    # -- refs -------------------------------------------------------------------------------------
    @overload
    def make(
        self,
        initial: T,
        id: IdLike = None,
        *,
        codec: Codec | str | None = None,
        ttl: float | None = None,
    ) -> Coroutine[Any, Any, DRef[T]]: ...

    @overload
    def make(
        self,
        initial: Any,
        id: IdLike = None,
        *,
        codec: Codec | str | None = None,
        type: type[T],
        ttl: float | None = None,
    ) -> Coroutine[Any, Any, DRef[T]]: ...

    def make(
        self,
        initial: Any,
        id: IdLike = None,
        *,
        codec: Codec | str | None = None,
        type: Any = None,
        ttl: float | None = None,
    ) -> Coroutine[Any, Any, DRef[Any]]:
        """A `DRef` seeded with `initial` if the element does not exist yet (as upstream).

        `id` is a name (`str` or `ManualId`) or `AutoId`/None for a name derived from this call
        site. Values decode as `type`, by default the type of `initial`. `ttl`: seconds until
        the seeded initial value expires (None: never; an existing element is left as it is).
        """
        name = resolve_name(id, depth=1)
        ref = self.ref(name, type=type if type is not None else _type_of(initial), codec=codec)
        check_ttl(ttl)
        return self._seed(ref, initial, ttl)

    async def _seed(self, ref: DRef[T], initial: T, ttl: float | None) -> DRef[T]:
        await ref.set_if_not_exist(initial, ttl=ttl)
        return ref

    def ref(self, name: str, *, type: Any = None, codec: Codec | str | None = None) -> DRef[Any]:
        """A `DRef` for an element that may already exist, without seeding it."""
        self._check_open()
        return DRef(self, resolve_name(name, depth=1), self._codec(codec), type)

    def _codec(self, codec: Codec | str | None) -> Codec:
        if codec is None:
            return self.codec
        if isinstance(codec, str):
            return self.plugins.codecs.create(codec, self.settings)
        return codec

    async def names(self, prefix: str = "") -> AsyncIterator[str]:
        """`async for name in ctx.names("user:")`: the names of the live elements starting with
        `prefix` (every element when empty), each once, in no particular order. Expired elements
        are never listed. `UnsupportedOperationError` when the backend cannot list names."""
        self._check_open()
        if not self.backend.capabilities.names:
            raise UnsupportedOperationError(
                f"backend {self.settings.backend!r} cannot list element names"
            )
        async for name in self.backend.names(prefix):
            yield name

    # -- locks ------------------------------------------------------------------------------------
    def lock(
        self, id: IdLike = None, *, ttl: float | None = None, timeout: float | None = None
    ) -> Lock:
        """`async with ctx.lock("name") as guard:` — distributed mutual exclusion.

        `ttl` bounds how long a crashed holder blocks others (default: `DREF_LOCK_TTL` or the
        backend's); `timeout` bounds the wait (`LockTimeoutError`); None waits forever.
        """
        return self._lock_named(resolve_name(id, depth=1), ttl=ttl, timeout=timeout)

    def _lock_named(
        self, name: str, *, ttl: float | None = None, timeout: float | None = None
    ) -> Lock:
        self._check_open()
        return Lock(
            backend=self.backend,
            clock=self.clock,
            plugins=self.plugins,
            name=name,
            ttl=ttl or self.settings.lock_ttl or self.backend.default_ttl,
            timeout=timeout,
            refresh_fraction=self.settings.lock_refresh_fraction,
            backend_name=self.settings.backend,
        )

    # -- lifecycle --------------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        self._check_open()
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this dref context is closed")

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        """Stop background consumers and close the backend; idempotent."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            await cancel_and_wait(task)
        await self.backend.aclose()


class Connector:
    """What `dref.connect()` returns: `async with` it, or `await` it for a context."""

    def __init__(
        self,
        settings: DRefSettings,
        spec: BackendSpec,
        backend_settings: Any,
        plugins: PluginManager,
        clock: Clock | None,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.backend_settings = backend_settings
        self._plugins = plugins
        self._clock = clock
        self._ctx: DRefContext | None = None

    async def open(self) -> DRefContext:
        clock = self._clock or SystemClock()
        backend = await self.spec.open(self.backend_settings, self.settings, clock)
        try:
            return DRefContext(
                settings=self.settings,
                backend_settings=self.backend_settings,
                backend=backend,
                plugins=self._plugins,
                clock=clock,
            )
        except BaseException:
            await backend.aclose()
            raise

    def __await__(self) -> Generator[Any, None, DRefContext]:
        return self.open().__await__()

    async def __aenter__(self) -> DRefContext:
        self._ctx = await self.open()
        return self._ctx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ctx is not None:
            await self._ctx.aclose()
            self._ctx = None


def connect(backend: str | None = None, *, clock: Clock | None = None, **options: Any) -> Connector:
    """Configure a backend: `async with dref.connect("redis", url=...) as ctx:`.

    Options override environment variables (`DREF_*`, `DREF_<BACKEND>_*`) and the `DREF_CONFIG`
    TOML file. Everything is validated here, before anything starts: invalid configuration raises
    `ConfigurationError`, an unknown backend `BackendNotFoundError`. `clock` injects time (tests).
    """
    core_fields = DRefSettings.model_fields
    core_options = {k: v for k, v in options.items() if k in core_fields}
    if backend is not None:
        core_options["backend"] = backend
    settings = load_settings(DRefSettings, core_options)
    plugins = PluginManager(settings)
    spec = plugins.backend(settings.backend)
    routed = split_options(
        {"backend": spec.settings},
        {k: v for k, v in options.items() if k not in core_fields},
    )
    backend_settings = load_settings(spec.settings, routed["backend"], table=spec.name)
    plugins.codecs.create(settings.codec, settings)  # fail now on an unknown codec
    if clock is not None and not isinstance(clock, Clock):
        raise ConfigurationError(f"clock must implement dref.clock.Clock, got {clock!r}")
    return Connector(settings, spec, backend_settings, plugins, clock)


def _type_of(value: Any) -> Any:
    return None if value is None else type(value)
