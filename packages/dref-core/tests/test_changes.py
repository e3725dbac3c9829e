"""The change hub every backend shares: broadcast, order, bounded buffers, explicit lag."""

from __future__ import annotations

import asyncio

import pytest

from dref.changes import ChangeEvent, ChangeHub
from dref.errors import ChangeStreamLaggedError


async def test_every_subscriber_sees_every_event_in_order() -> None:
    hub = ChangeHub()
    subs = [hub.subscribe("k") for _ in range(3)]
    other = hub.subscribe("other")
    for i in range(5):
        hub.publish(ChangeEvent("k", bytes([i])))
    for sub in subs:
        assert [(await sub.__anext__()).value for _ in range(5)] == [bytes([i]) for i in range(5)]
    assert other.pending() == 0


async def test_consumer_waiting_is_woken() -> None:
    hub = ChangeHub()
    sub = hub.subscribe("k")
    waiter = asyncio.create_task(sub.__anext__())
    await asyncio.sleep(0)
    hub.publish(ChangeEvent("k", None))
    assert (await waiter).deleted


async def test_lag_ends_only_the_slow_subscription_after_its_buffer() -> None:
    hub = ChangeHub(capacity=2)
    slow, fast = hub.subscribe("k"), hub.subscribe("k")
    for i in range(3):
        hub.publish(ChangeEvent("k", bytes([i])))
        await fast.__anext__()
    assert [e.value for e in slow.drain()] == [b"\x00", b"\x01"]
    with pytest.raises(ChangeStreamLaggedError):
        await slow.__anext__()
    hub.publish(ChangeEvent("k", b"\x09"))
    assert (await fast.__anext__()).value == b"\x09"
    assert hub.subscribers("k") == 1


async def test_close_detaches_and_hub_close_ends_streams() -> None:
    hub = ChangeHub()
    a, b = hub.subscribe("k"), hub.subscribe("k")
    await a.aclose()
    assert hub.subscribers("k") == 1
    hub.publish(ChangeEvent("k", b"1"))
    hub.close(ConnectionError("gone"))
    assert (await b.__anext__()).value == b"1"  # buffered events first
    with pytest.raises(ConnectionError):
        await b.__anext__()
    with pytest.raises(StopAsyncIteration):
        await a.__anext__()
    assert hub.names() == set()


async def test_cancelled_wait_loses_nothing() -> None:
    hub = ChangeHub()
    sub = hub.subscribe("k")
    waiter = asyncio.create_task(sub.__anext__())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    hub.publish(ChangeEvent("k", b"1"))
    assert (await sub.__anext__()).value == b"1"
