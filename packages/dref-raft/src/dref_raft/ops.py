"""Operation helpers shared by the member backend (`member/backend.py`) and client mode
(`client/backend.py`): compare-and-set paths, fenced `try_lock`, TTL arithmetic, and what
`dref ls` / `dref status` read (names page by page over `DRefExt/Names`, the members'
`DRefExt/Status` answers)."""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from dref.errors import (
    BackendTimeoutError,
    BackendUnavailableError,
    ConsensusError,
    DRefError,
    StaleFenceError,
)
from dref.spi import Backend, BackendStatus, LockGrant, WriteFence
from dref_raft.commands import (
    FENCE_COMPARE,
    FENCE_IF_ABSENT,
    FENCE_SET,
    Command,
    CompareAndDelete,
    CompareAndExpire,
    CompareAndSet,
    CompareResult,
    FairSwap,
    FencedWrite,
    LeaveLine,
    MemberStatus,
    NamesPage,
)
from dref_raft.errors import CompareUnsupportedError
from dref_raft.sessions import WriteSession
from dref_raft.transport.base import LeaderApi
from dref_raft.transport.grpc_client import LeaderClient
from dref_raft.transport.memory import MemoryNetwork
from dref_raft.transport.security import PLAINTEXT, TransportSecurity

__all__ = [
    "CompareOps",
    "cluster_status",
    "create_if_not_exist",
    "expire_at_ms",
    "fenced_try_lock",
    "open_leader_client",
    "paged_names",
    "remote_expire",
    "wall_clock_ms",
]

logger = logging.getLogger("dref_raft.ops")

_FIRST_RETRY = 0.02
_MAX_RETRY = 0.5
"""Pauses (s) between sends of a write whose outcome is unknown (doubling)."""


def wall_clock_ms() -> int:
    """Unix epoch milliseconds (upstream's TTL clock, docs/protocol.md#ttl-expiry)."""
    return int(time.time() * 1000)


def expire_at_ms(now_ms: int, ttl: float | None) -> int | None:
    """Absolute epoch-ms expiry of a TTL in seconds (at least 1 ms ahead); None for no TTL."""
    return None if ttl is None else now_ms + max(1, round(ttl * 1000))


async def remote_expire(client: LeaderApi, name: str, expire_at: int, timeout: float) -> bool:
    """`expire` over `DRefRaft`: re-arm, then whether the element exists (two round trips)."""
    await client.expire_element(name, expire_at, timeout=timeout)
    return await client.get_element(name, timeout=timeout) is not None


def open_leader_client(
    address: str,
    node_id: str,
    timeout: float,
    network: MemoryNetwork | None,
    source: str,
    security: TransportSecurity = PLAINTEXT,
    stream_window: int | None = None,
    *,
    channel: bool = False,
) -> LeaderApi:
    """A `DRefRaft` client to `address`: gRPC (secured per `security`; over `DRefStream` when
    `stream_window` is set and the member serves it; over its TCP channel when `channel` and
    the member announces one), or from `source` on an in-memory `network`."""
    if network is not None:
        return network.leader_client(source, address)
    return LeaderClient(
        address,
        target_id=node_id,
        timeout=timeout,
        security=security,
        stream_window=stream_window,
        channel=channel,
    )


async def fenced_try_lock(
    acquire: Callable[[], Awaitable[bool]],
    created: asyncio.Future[int],
    timeout: float,
    where: str,
) -> LockGrant | None:
    """`try_lock` with a fence: `acquire()` is `set_if_not_exist(name, token, ttl)`.

    `created` resolves to the log seq at which this node saw `name` hold the token (armed
    before `acquire`, so a retried request that won earlier still counts). It is cancelled
    on return.
    """
    try:
        if not await acquire() and not created.done():
            return None
        try:
            async with asyncio.timeout(timeout):
                fence = await asyncio.shield(created)
        except TimeoutError:
            raise BackendTimeoutError(f"lock acquired but not seen {where} in time") from None
        return LockGrant(fence=fence)
    finally:
        created.cancel()


async def create_if_not_exist(
    set_if_not_exist: Callable[[], Awaitable[bool]],
    get: Callable[[], Awaitable[bytes | None]],
    pause: float,
    timeout: float,
) -> bool:
    """`set_if_not_exist` over `SetIfNotExist`, where an expired element counts as absent.

    `SetIfNotExist` refuses while an expired element waits for the leader's reaper; then the
    (linearizable) `get` reads None, and the create is retried every `pause` seconds until it
    wins, someone else's value appears (False), or `timeout` passes (`BackendTimeoutError`).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await set_if_not_exist():
        if await get() is not None:
            return False
        if loop.time() + pause > deadline:
            raise BackendTimeoutError(f"an expired element was not reaped within {timeout:g} s")
        await asyncio.sleep(pause)  # the reaper deletes it within one reaper period
    return True


class CompareOps(Backend):
    """The compare-based paths shared by the member backend and client mode.

    `set_if_not_exist`, `compare_and_set`, `compare_and_swap`, `refresh_lock` and `release_lock` are
    one committed compare command each (`CompareAndSet` / `CompareAndExpire` /
    `CompareAndDelete`), evaluated by the leader's state machine, so they are atomic. A subclass
    says how a compare command reaches the leader (`_compare`: a local proposal when this member
    leads, else `DRefExt/Compare` over `with_leader`), how a TTL becomes an absolute expiry
    (`_expire_at`), and how to create without compare commands (`_set_if_not_exist`: upstream's
    `SetIfNotExist`). Without `native_cas` / `owner_checked_locks` (`mixed_cluster`: upstream
    nodes would apply compare commands as no-ops) the SPI's portable defaults are used.
    """

    @abc.abstractmethod
    async def _compare(self, command: Command) -> CompareResult:
        """Commit `command` on the leader and return its outcome."""

    _session: WriteSession | None = None
    """The context's session (exactly-once writes); None when off (`mixed_cluster`, or
    `exactly_once = false`): every write is then sent once, as upstream does."""

    async def _write(self, command: Command) -> CompareResult:
        """`_compare`, exactly once: in the context's session, and sent again with the same
        request number while its outcome is unknown (a lost leader, a timeout, a dropped
        connection), until it is known or `op_timeout` has passed."""
        session = self._session
        if session is None:
            return await self._compare(command)
        request = session.start()
        try:
            deadline = time.monotonic() + self._op_timeout()
            pause = _FIRST_RETRY
            while True:
                try:
                    return await self._compare(session.wrap(command, request))
                except (BackendUnavailableError, BackendTimeoutError, ConsensusError) as exc:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise
                    logger.debug("write %s: outcome unknown (%s); sending it again", request, exc)
                    await asyncio.sleep(min(pause, left))
                    pause = min(pause * 2, _MAX_RETRY)
        finally:
            session.finish(request)

    async def _session_write(self, command: Command) -> CompareResult | None:
        """An upstream write (set, delete, expire) exactly once in the session; None when
        sessions are off, or when the leader turns out not to serve `DRefExt` (an upstream
        node): sessions are then switched off and the caller sends the plain upstream call."""
        if self._session is None:
            return None
        try:
            return await self._write(command)
        except CompareUnsupportedError:
            logger.warning("the leader does not serve DRefExt: writes are no longer exactly-once")
            self._session = None
            self.capabilities = dataclasses.replace(self.capabilities, exactly_once=False)
            return None

    def _op_timeout(self) -> float:
        timeout: float = self.settings.op_timeout  # type: ignore[attr-defined]
        return timeout

    @abc.abstractmethod
    def _expire_at(self, ttl: float | None) -> int | None:
        """Absolute epoch-ms expiry of `ttl` seconds from now; None for no TTL."""

    @abc.abstractmethod
    async def _set_if_not_exist(self, name: str, value: bytes, expire_at: int | None) -> bool:
        """`set_if_not_exist` without compare commands (upstream's `SetIfNotExist`)."""

    async def set_if_not_exist(self, name: str, value: bytes, ttl: float | None = None) -> bool:
        expire_at = self._expire_at(ttl)
        if self.capabilities.native_cas:
            # An expired element counts as absent (SPI); upstream's SetIfNotExist would keep it
            # until the reaper deletes it (docs/protocol.md#weak-consensus-unreaped-expiry).
            return (await self._write(CompareAndSet(name, None, value, expire_at))).matched
        return await self._set_if_not_exist(name, value, expire_at)

    async def compare_and_set(
        self, name: str, expected: bytes, value: bytes, ttl: float | None = None
    ) -> bool:
        if not self.capabilities.native_cas:
            return await super().compare_and_set(name, expected, value, ttl)
        result = await self._write(CompareAndSet(name, expected, value, self._expire_at(ttl)))
        return result.matched

    async def compare_and_swap(
        self, name: str, expected: bytes, value: bytes
    ) -> tuple[bool, bytes | None]:
        if not self.capabilities.native_cas:
            return await super().compare_and_swap(name, expected, value)
        result = await self._write(CompareAndSet(name, expected, value))
        return (True, value) if result.matched else (False, result.current)

    async def _fenced(self, command: FencedWrite, fence: WriteFence) -> CompareResult:
        """One committed `FencedWrite`: the leader's state machine checks that the lock still
        holds the guard's token (so no later acquisition happened) and writes, atomically."""
        result = await self._write(command)
        if result.stale:
            raise StaleFenceError(fence.lock, command.name, fence.fence)
        return result

    async def fenced_set(
        self,
        name: str,
        value: bytes,
        ttl: float | None,
        fence: WriteFence,
        *,
        if_absent: bool = False,
    ) -> bool:
        condition = FENCE_IF_ABSENT if if_absent else FENCE_SET
        command = FencedWrite(fence.lock, fence.token, name, value, self._expire_at(ttl), condition)
        return (await self._fenced(command, fence)).matched

    async def fenced_compare_and_swap(
        self, name: str, expected: bytes, value: bytes, fence: WriteFence
    ) -> tuple[bool, bytes | None]:
        command = FencedWrite(fence.lock, fence.token, name, value, None, FENCE_COMPARE, expected)
        result = await self._fenced(command, fence)
        return (True, value) if result.matched else (False, result.current)

    async def fenced_delete(self, name: str, fence: WriteFence) -> None:
        await self._fenced(FencedWrite(fence.lock, fence.token, name, None), fence)

    # -- fair updates (docs/raft.md#the-fair-line) --------------------------------------------
    waiter_life: float = 2.0
    """Seconds a place of this context in a line lives without another attempt (log time)."""

    def _waiter_life(self) -> float:
        return self.waiter_life

    async def fair_compare_and_swap(
        self, name: str, expected: bytes, value: bytes, ticket: bytes, *, rejoin: bool = False
    ) -> tuple[bool, bytes | None, int]:
        """One committed `FairSwap`: the state machine swaps or queues `ticket` in `name`'s
        line, whose places live `waiter_life` seconds of log time without another attempt."""
        life_ms = round(self._waiter_life() * 1000)
        result = await self._write(FairSwap(name, expected, value, ticket, None, rejoin, life_ms))
        if result.matched:
            return True, value, result.ahead
        return False, result.current, result.ahead

    async def leave_line(self, name: str, ticket: bytes) -> None:
        await self._write(LeaveLine(name, ticket))

    async def wait_turn(self, name: str, ticket: bytes) -> bytes | None:
        """Woken by a member when an applied entry makes `ticket` the head of the line (see
        `_wait_turn`); None after a quarter of `waiter_life`, well before the place lapses."""
        turn, value = await self._wait_turn(name, ticket, self._waiter_life() / 4)
        return value if turn else None

    @abc.abstractmethod
    async def _wait_turn(self, name: str, ticket: bytes, wait: float) -> tuple[bool, bytes | None]:
        """Wait up to `wait` s for `ticket` to head `name`'s line in a member's applied state:
        `(True, value left by the entry that made it the head)`, else `(False, None)`."""

    async def _acquire_lock(self, name: str, token: bytes, ttl: float) -> bool:
        """`try_lock`'s attempt: with `lock_queue` a `FairSwap` creating the lock in its line
        (the token is the ticket: a failed attempt queues it, or renews its place), else
        `set_if_not_exist`."""
        if not self.capabilities.lock_queue:
            return await self.set_if_not_exist(name, token, ttl)
        life_ms = round(self._waiter_life() * 1000)
        attempt = FairSwap(name, None, token, token, self._expire_at(ttl), False, life_ms)
        return (await self._write(attempt)).matched

    async def refresh_lock(self, name: str, token: bytes, ttl: float) -> bool:
        if not self.capabilities.owner_checked_locks:
            return await super().refresh_lock(name, token, ttl)
        expire_at = self._expire_at(ttl)
        assert expire_at is not None
        return (await self._write(CompareAndExpire(name, token, expire_at))).matched

    async def release_lock(self, name: str, token: bytes) -> bool:
        if not self.capabilities.owner_checked_locks:
            return await super().release_lock(name, token)
        if self.capabilities.lock_queue:  # leaves the line too (a waiter giving up)
            return (await self._write(LeaveLine(name, token, release=True))).matched
        return (await self._write(CompareAndDelete(name, token))).matched


async def paged_names(
    page: Callable[[str], Awaitable[NamesPage]],
) -> AsyncIterator[str]:
    """Every name of the pages `page(after)` returns, starting after "" and then after the last
    name of the previous page, until a page says no more follow."""
    after = ""
    while True:
        answer = await page(after)
        for name in answer.names:
            yield name
        if not answer.more or not answer.names:
            return
        after = answer.names[-1]


async def cluster_status(
    summary: str,
    members: dict[str, str],
    fetch: Callable[[str], Awaitable[MemberStatus]],
) -> BackendStatus:
    """Ask every member (id → address) for its status at once; a row per member.

    `lag` is how many committed entries the member has still to apply, counted from the highest
    commit index any member reported (the leader's, when it answered). A member that does not
    answer gets the role `unreachable` and the error.
    """

    async def one(node_id: str) -> MemberStatus | DRefError:
        try:
            return await fetch(node_id)
        except DRefError as exc:
            return exc

    answers = await asyncio.gather(*(one(node_id) for node_id in members))
    commit = max((a.commit for a in answers if isinstance(a, MemberStatus)), default=0)
    rows = []
    for (node_id, address), answer in zip(members.items(), answers, strict=True):
        if isinstance(answer, MemberStatus):
            contact = answer.last_contact_ms
            rows.append(
                {
                    "node": node_id,
                    "address": address,
                    "role": answer.role,
                    "term": answer.term,
                    "commit": answer.commit,
                    "applied": answer.applied,
                    "lag": max(0, commit - answer.applied),
                    "leader": answer.leader,
                    "last_contact_s": None if contact is None else round(contact / 1000, 3),
                    "error": "",
                }
            )
        else:
            rows.append(
                {
                    "node": node_id,
                    "address": address,
                    "role": "unreachable",
                    "term": None,
                    "commit": None,
                    "applied": None,
                    "lag": None,
                    "leader": None,
                    "last_contact_s": None,
                    "error": " ".join(str(answer).split()),
                }
            )
    return BackendStatus(summary, tuple(rows))
