"""`TurnWaiters`: callers waiting for their turn in an element's line of contended writers
(`wait_turn`, docs/raft.md#the-fair-line).

A waiter is woken by the member's driver when an applied entry makes its ticket the head of the
line (`ApplyResult.turns`), with the element's value as that entry left it, or when a snapshot
install changes the lines; nothing polls the log. A wait that is not woken within its timeout
answers "not yet" and the caller tries again (which renews its place in line).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from dref_raft.fsm import StateMachine

__all__ = ["TurnWaiters"]


_NOT_YET: tuple[bool, bytes | None] = (False, None)


class TurnWaiters:
    """(name, ticket) → the future of its waiting caller, woken from the applied state."""

    def __init__(self, machine: StateMachine) -> None:
        self._machine = machine
        self._waiters: dict[tuple[str, bytes], asyncio.Future[tuple[bool, bytes | None]]] = {}

    def __len__(self) -> int:
        return len(self._waiters)

    def _value(self, name: str) -> bytes | None:
        element = self._machine.element(name)
        return None if element is None else element.value

    async def wait(self, name: str, ticket: bytes, timeout: float) -> tuple[bool, bytes | None]:
        """Wait up to `timeout` s until `ticket` heads `name`'s line in the applied state:
        `(True, value)` then (None value: the element is absent), `(False, None)` when the
        timeout passed first or `ticket` is not in the line."""
        position = self._machine.lines.position(name, ticket)
        if position == 0:
            return True, self._value(name)
        if position is None:
            return _NOT_YET
        key = (name, ticket)
        earlier = self._waiters.get(key)
        if earlier is not None and not earlier.done():
            earlier.set_result(_NOT_YET)  # one waiter per ticket: the newer one waits
        future: asyncio.Future[tuple[bool, bytes | None]]
        future = self._waiters[key] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            return _NOT_YET
        finally:
            if self._waiters.get(key) is future:
                del self._waiters[key]

    def applied(self, turns: Iterable[tuple[str, bytes]]) -> None:
        """An applied entry made these tickets the heads of their lines: wake their waiters
        with the value the entry left."""
        for key in turns:
            future = self._waiters.pop(key, None)
            if future is not None and not future.done():
                future.set_result((True, self._value(key[0])))

    def installed(self) -> None:
        """A snapshot replaced the state: wake the waiters whose ticket is now a head."""
        lines = self._machine.lines
        self.applied([key for key in self._waiters if lines.position(*key) == 0])

    def close(self) -> None:
        """The member stops: every waiter answers "not yet" (its caller gives up or retries)."""
        waiters, self._waiters = self._waiters, {}
        for future in waiters.values():
            if not future.done():
                future.set_result(_NOT_YET)
