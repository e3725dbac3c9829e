"""`ref.get(consistency=...)`: what each backend capability serves, and the clear refusals."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest

import dref
import dref.sync
from dref.errors import ElementNotFoundError, UnsupportedOperationError
from dref.spi import Backend


@pytest.fixture
async def ctx() -> AsyncIterator[dref.DRefContext]:
    async with dref.connect("inmemory", namespace=f"rc-{uuid.uuid4().hex}") as c:
        yield c


def _claim(backend: Backend, **caps: bool) -> None:
    backend.capabilities = dataclasses.replace(backend.capabilities, **caps)


async def test_a_linearizable_backend_serves_session_reads_as_linearizable(
    ctx: dref.DRefContext,
) -> None:
    assert ctx.backend.capabilities.linearizable
    assert not ctx.backend.capabilities.session_reads
    ref = ctx.ref("k", type=int)
    await ref.set(7)
    assert await ref.get(consistency="session") == 7
    assert await ref.get(consistency="linearizable") == 7
    await ref.delete()
    with pytest.raises(ElementNotFoundError):
        await ref.get(consistency="session")


async def test_session_reads_use_the_backends_session_path(ctx: dref.DRefContext) -> None:
    backend = ctx.backend
    _claim(backend, session_reads=True)
    calls: list[str] = []

    async def get_session(name: str) -> bytes | None:
        calls.append(name)
        return await type(backend).get(backend, name)

    backend.get_session = get_session  # type: ignore[method-assign]
    ref = ctx.ref("k", type=int)
    await ref.set(3)
    assert await ref.get(consistency="session") == 3
    assert calls == [ref.name]


async def test_a_backend_without_either_capability_refuses_naming_it(
    ctx: dref.DRefContext,
) -> None:
    _claim(ctx.backend, linearizable=False, session_reads=False)
    ref = ctx.ref("k", type=int)
    await ref.set(1)
    assert await ref.get() == 1  # the backend's own read is always there
    with pytest.raises(UnsupportedOperationError) as session:
        await ref.get(consistency="session")
    assert session.value.capability == "session_reads"
    assert ref.name in str(session.value)
    with pytest.raises(UnsupportedOperationError) as linear:
        await ref.get(consistency="linearizable")
    assert linear.value.capability == "linearizable"


async def test_the_default_spi_session_read_is_unsupported(ctx: dref.DRefContext) -> None:
    with pytest.raises(UnsupportedOperationError) as exc:
        await Backend.get_session(ctx.backend, "k")
    assert exc.value.capability == "session_reads"


async def test_an_unknown_consistency_is_a_value_error(ctx: dref.DRefContext) -> None:
    with pytest.raises(ValueError, match="'linearizable' or 'session'"):
        await ctx.ref("k", type=int).get(consistency="eventual")  # type: ignore[arg-type]


def test_the_sync_api_passes_consistency() -> None:
    with dref.sync.connect("inmemory", namespace=f"rc-{uuid.uuid4().hex}") as ctx:
        ref = ctx.ref("k", type=int)
        ref.set(5)
        assert ref.get(consistency="session") == 5
