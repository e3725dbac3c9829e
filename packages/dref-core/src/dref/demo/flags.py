"""Feature flags: a `DRef` of a dataclass; other clients react to every flip as it happens.

One subscriber uses `on_change` (a callback), the other `changes()` (an async iterator). Their
lines are printed in a fixed order once both have seen a flip, so the output does not depend on
which one the scheduler ran first.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from dref.demo._common import CHANGE_TIMEOUT, Connect, DemoFailure, bullet, intro, ok, wait_until
from dref.ref import DRef

__all__ = ["FLIPS", "Flags", "run"]

NAME = "demo:flags"


@dataclass(frozen=True)
class Flags:
    """The application's feature flags, stored as one value."""

    dark_mode: bool = False
    new_checkout: bool = False
    maintenance: bool = False


FLIPS: tuple[tuple[str, bool], ...] = (
    ("dark_mode", True),
    ("new_checkout", True),
    ("dark_mode", False),
)
"""What the admin changes, in order."""

SUBSCRIBERS = {"web-1": "on_change", "web-2": "changes()"}


async def run(connect: Connect, out: Console) -> None:
    """An admin flips flags; two web servers, subscribed in their own contexts, see each flip."""
    intro(
        out,
        f"An admin flips flags in [bold]{NAME}[/]; web-1 (on_change) and web-2 (changes()) react.",
    )
    seen: dict[str, list[Flags]] = {name: [] for name in SUBSCRIBERS}
    arrived = asyncio.Condition()

    async def record(who: str, flags: Flags) -> None:
        async with arrived:
            seen[who].append(flags)
            arrived.notify_all()

    async with connect() as admin, connect() as web1, connect() as web2:
        flags: DRef[Flags] = admin.ref(NAME, type=Flags)
        handle = await web1.ref(NAME, type=Flags).on_change(lambda f: record("web-1", f))
        subscribed = asyncio.get_running_loop().create_future()

        async def stream_consumer() -> None:
            async with web2.ref(NAME, type=Flags).changes() as stream:
                subscribed.set_result(None)
                async for value in stream:
                    await record("web-2", value)

        consumer = asyncio.create_task(stream_consumer(), name="dref-demo:flags:web-2")
        try:
            await _ready(subscribed, consumer)
            # Start from all flags off; the subscribers see that too (so nothing older can follow).
            await flags.set(Flags())
            await wait_until(arrived, _each_has(seen, 1), "the reset", CHANGE_TIMEOUT)
            for i, (flag, on) in enumerate(FLIPS, 1):
                await flags.update(_setting(flag, on))
                bullet(out, "admin", f"turns {flag} [bold]{_onoff(on)}[/]")
                await wait_until(
                    arrived,
                    _each_has(seen, i + 1),
                    f"flip {i} reaching both subscribers",
                    CHANGE_TIMEOUT,
                )
                for who, via in SUBSCRIBERS.items():
                    bullet(out, who, f"({via}) sees {_diff(seen[who][i - 1], seen[who][i])}")
        finally:
            handle.cancel()
            consumer.cancel()
            await asyncio.wait({consumer})
        final = await flags.get()

    expected = _expected()
    for who, values in seen.items():
        if values != expected:
            raise DemoFailure(f"{who} saw {values}, expected {expected}")
    state = ", ".join(
        f"{f.name}={_onoff(getattr(final, f.name))}" for f in dataclasses.fields(final)
    )
    ok(out, f"both subscribers saw all {len(FLIPS)} flips, in order; now {state}")


async def _ready(subscribed: asyncio.Future[None], consumer: asyncio.Task[None]) -> None:
    """Wait until `consumer` has subscribed (or raise what made it fail first)."""
    await asyncio.wait({subscribed, consumer}, return_when=asyncio.FIRST_COMPLETED)
    if not subscribed.done():
        consumer.result()


def _each_has(seen: dict[str, list[Flags]], count: int) -> Callable[[], bool]:
    return lambda: all(len(values) >= count for values in seen.values())


def _setting(flag: str, on: bool) -> Callable[[Flags], Flags]:
    def set_flag(flags: Flags) -> Flags:
        return dataclasses.replace(flags, **{flag: on})

    return set_flag


def _expected() -> list[Flags]:
    current = Flags()
    values = [current]
    for flag, on in FLIPS:
        current = _setting(flag, on)(current)
        values.append(current)
    return values


def _diff(before: Flags, after: Flags) -> str:
    changed = [
        f"{f.name} {_onoff(getattr(before, f.name))} → {_onoff(getattr(after, f.name))}"
        for f in dataclasses.fields(after)
        if getattr(before, f.name) != getattr(after, f.name)
    ]
    return ", ".join(changed) or "no change"


def _onoff(value: Any) -> str:
    return "on" if value else "off"
