"""In-memory specifics: shared namespaces, injected clock, lag errors, exact expiry events."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest

import dref
from dref.errors import ChangeStreamLaggedError, ConfigurationError, LockStolenError
from dref_compat.error_tree import check_error_module, exception_classes
from dref_inmemory import reset


@pytest.fixture
def namespace() -> str:
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
def clock() -> dref.ManualClock:
    return dref.ManualClock()


@pytest.fixture
async def ctx(namespace: str, clock: dref.ManualClock) -> AsyncIterator[dref.DRefContext]:
    async with dref.connect("inmemory", namespace=namespace, clock=clock) as c:
        yield c
    reset(namespace)


async def until(predicate: object, turns: int = 1000) -> None:
    """Yield to the loop until `predicate()` holds (bounded in turns)."""
    for _ in range(turns):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def test_contexts_of_one_namespace_share_state(namespace: str) -> None:
    async with (
        dref.connect("inmemory", namespace=namespace) as a,
        dref.connect("inmemory", namespace=namespace) as b,
    ):
        await (await a.make(1, "k")).set(2)
        assert await b.ref("k", type=int).get() == 2
    async with dref.connect("inmemory", namespace=f"{namespace}-other") as c:
        assert await c.backend.get("k") is None
    reset(namespace)


async def test_nothing_configured_means_inmemory() -> None:
    async with dref.connect() as ctx:
        assert ctx.settings.backend == "inmemory"
        assert type(ctx.backend).__module__ == "dref_inmemory.backend"


async def test_namespace_refuses_a_second_clock(namespace: str, clock: dref.ManualClock) -> None:
    async with dref.connect("inmemory", namespace=namespace, clock=clock):
        with pytest.raises(ConfigurationError, match="one clock"):
            await dref.connect("inmemory", namespace=namespace, clock=dref.ManualClock())
    reset(namespace)


async def test_expiry_follows_the_injected_clock(
    ctx: dref.DRefContext, clock: dref.ManualClock
) -> None:
    async with await ctx.backend.subscribe("k") as events:
        await ctx.backend.set("k", b"v", ttl=10)
        clock.advance(9.999)
        assert await ctx.backend.get("k") == b"v"
        assert not await ctx.backend.set_if_not_exist("k", b"w")
        clock.advance(0.001)
        assert await ctx.backend.get("k") is None
        assert [e.value for e in events.drain()] == [b"v", None]
        assert await ctx.backend.set_if_not_exist("k", b"w")


async def test_reaper_publishes_expiry_without_any_call(
    ctx: dref.DRefContext, clock: dref.ManualClock
) -> None:
    async with await ctx.backend.subscribe("k") as events:
        await ctx.backend.set("k", b"v", ttl=1)
        await until(lambda: clock.sleepers > 0)
        clock.advance(1)
        await until(lambda: events.pending() == 2)
        assert [e.value for e in events.drain()] == [b"v", None]


async def test_subscriber_that_falls_behind_gets_an_explicit_error(namespace: str) -> None:
    async with dref.connect("inmemory", namespace=namespace, change_buffer=4) as ctx:
        ref = await ctx.make(0, "k")
        async with ref.changes() as slow, ref.changes() as fast:
            for i in range(1, 4):
                await ref.set(i)
            assert [await fast.__anext__() for _ in range(3)] == [1, 2, 3]
            for i in range(4, 7):
                await ref.set(i)
            assert [await fast.__anext__() for _ in range(3)] == [4, 5, 6]
            # `slow` has 4 buffered (1..4); 5 overflowed: it drains what it has, then errors.
            assert [await slow.__anext__() for _ in range(4)] == [1, 2, 3, 4]
            with pytest.raises(ChangeStreamLaggedError, match="subscribe again"):
                await slow.__anext__()
    reset(namespace)


async def test_lock_is_renewed_on_the_injected_clock(
    ctx: dref.DRefContext, clock: dref.ManualClock
) -> None:
    async with ctx.lock("job", ttl=3) as guard:
        for _ in range(120):  # ten TTLs of virtual time, in steps of a quarter period
            await until(lambda: clock.sleepers > 1)  # the reaper and the watchdog both wait
            clock.advance(0.25)
            await asyncio.sleep(0)
        assert await ctx.backend.get("job") == guard.token
        assert guard.held
    assert not guard.held
    assert await ctx.backend.get("job") is None


async def test_lock_lost_when_renewals_fail_until_the_lease_ends(
    ctx: dref.DRefContext, clock: dref.ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(name: str, token: bytes, ttl: float) -> bool:
        raise dref.errors.BackendUnavailableError("store unreachable")

    lost: list[str] = []
    with pytest.raises(LockStolenError, match="lease ran out") as info:
        async with ctx.lock("job", ttl=3) as guard:
            monkeypatch.setattr(ctx.backend, "refresh_lock", unreachable)
            try:
                for _ in range(100):  # 25 s of virtual time at most
                    # advance only while the reaper and the watchdog both sleep
                    await until(lambda: clock.sleepers > 1)
                    clock.advance(0.25)
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                lost.append("cancelled")
                raise
    assert lost == ["cancelled"]
    # The body was stopped before the store could expire the key: margin of half a period.
    assert clock.now() < 3
    assert info.value.token == guard.token_int


async def test_context_closes_its_on_change_consumers(namespace: str) -> None:
    ctx = await dref.connect("inmemory", namespace=namespace)
    ref = await ctx.make(0, "k")
    handle = await ref.on_change(lambda v: None)
    await ctx.aclose()
    assert handle.done
    with pytest.raises(dref.errors.ClosedError):
        await ref.get()
    reset(namespace)


async def test_waiters_get_the_lock_first_come_first_served(ctx: dref.DRefContext) -> None:
    order: list[int] = []
    hub = ctx.backend.store.hub  # type: ignore[attr-defined]

    async def waiter(i: int) -> None:
        async with ctx.lock("fifo", ttl=30):
            order.append(i)

    async with ctx.lock("fifo", ttl=30):
        tasks = []
        for i in range(5):
            tasks.append(asyncio.create_task(waiter(i)))
            waiting = i + 1  # (the holder's watchdog waits for the clock before subscribing)
            await until(lambda n=waiting: hub.subscribers("fifo") == n)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("queue", [False, True])
async def test_a_waiter_that_gives_up_releases_only_where_waiters_queue(
    ctx: dref.DRefContext, monkeypatch: pytest.MonkeyPatch, queue: bool
) -> None:
    """Core gives a cancelled waiter's token back only to a backend that keeps a line of
    waiters (`lock_queue`); elsewhere the extra write (a Raft proposal) would be waste."""
    backend = ctx.backend
    released: list[bytes] = []
    release = backend.release_lock

    async def counting_release(name: str, token: bytes) -> bool:
        released.append(token)
        return await release(name, token)

    monkeypatch.setattr(backend, "release_lock", counting_release)
    caps = dataclasses.replace(backend.capabilities, lock_queue=queue)
    monkeypatch.setattr(backend, "capabilities", caps)
    hub = backend.store.hub  # type: ignore[attr-defined]
    async with ctx.lock("given-up", ttl=30) as held:
        task = asyncio.create_task(_hold(ctx, "given-up"))
        await until(lambda: hub.subscribers("given-up") == 1)  # waiting, after a failed try
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(lambda: len(released) == int(queue))
        assert await backend.get("given-up") == held.token  # the holder keeps its lock
    await until(lambda: len(released) == int(queue) + 1)  # the holder's own release
    assert released[-1] == held.token
    assert held.token not in released[:-1]


async def _hold(ctx: dref.DRefContext, name: str) -> None:
    async with ctx.lock(name, ttl=30):
        pass


def test_defines_no_exception_outside_the_dref_errors_tree() -> None:
    assert exception_classes("dref_inmemory") == []  # it raises core's errors only
    assert check_error_module("dref_inmemory") == []
