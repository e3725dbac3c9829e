"""The change listener: one pub/sub connection, reconnect with backoff, resynchronise after.

The listener subscribes to `dref-change` (upstream's channel), to a private resync channel and,
where the server publishes them, to expired-key events (`dref_redis.expiry`), when the first
change subscription is made (a context that never subscribes pays nothing).
Pub/sub drops whatever is published while the connection is down, so after every reconnect each
name with subscribers is re-read by a script that publishes the value as a marker on the private
channel. The marker is ordered with the key's notifications on our connection: notifications
before it are older than the value it carries, those after it newer. A marker whose value differs
from the last one delivered for its name is delivered as a change (None → a delete), so streams
stay ordered and end on the latest value.

A new subscription only goes live after a barrier: a PING on the pub/sub connection, whose reply
Redis queues behind every notification already on its way to us. Notifications that arrive before
the reply were committed before the subscription and are dropped from it. In Redis Cluster a
notification may still be travelling from the key's shard, so there the barrier is a message that
a script publishes from that shard instead.

With revisions on (`dref_redis.revisions`) the listener also subscribes to `dref-rev`, pairs each
`[key, revision]` there with the key's next notification (which then carries its revision), and
learns each newly subscribed name's current revision from a base marker published on the
private channel. After a reconnect, a name whose revision is known resumes from it: a script
re-publishes the recorded changes after it on the private channel (live notifications of that
name are held until the replay ends, then delivered unless the replay covered them), or, when
the history no longer reaches back, its subscriptions end with `ChangeStreamLaggedError`.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import random
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from dref.changes import ChangeEvent, ChangeHub, Subscription
from dref.clock import Clock
from dref.errors import ChangeStreamLaggedError, CodecError, DRefError
from dref_redis.connection import Connections
from dref_redis.keys import CHANNEL, KeyLayout
from dref_redis.revisions import REVISION_CHANNEL

__all__ = ["ChangeListener"]

log = logging.getLogger("dref_redis.listener")

_RESYNC_CONCURRENCY = 16
_FIRST_DELAY = 0.05
_MAX_LOGGED_REASONS = 64


class _Unknown(enum.Enum):
    TOKEN = 0


_UNKNOWN = _Unknown.TOKEN


class ChangeListener:
    """Reads change notifications into a `ChangeHub`; see the module docstring."""

    def __init__(
        self,
        *,
        connections: Connections,
        hub: ChangeHub,
        keys: KeyLayout,
        decode: Callable[[bytes], ChangeEvent],
        resync: Callable[[bytes, str], Awaitable[object]],
        route_barrier: Callable[[bytes, str, bytes], Awaitable[object]] | None,
        clock: Clock,
        ping_interval: float,
        reconnect_max_delay: float,
        subscribe_timeout: float,
        resync_since: Callable[[bytes, str, int], Awaitable[object]] | None = None,
        base: Callable[[bytes, str], Awaitable[object]] | None = None,
    ) -> None:
        self.resync_channel = f"dref-resync:{uuid.uuid4().hex}"
        self.reconnects = 0
        """How many times the connection was re-established (for tests and metrics)."""
        self.bad_payloads = 0
        """How many notifications could not be decoded and were skipped."""
        self._connections = connections
        self._hub = hub
        self._keys = keys
        self._decode = decode
        self._resync = resync
        self._route_barrier = route_barrier
        self._clock = clock
        self._ping_interval = ping_interval
        self._max_delay = reconnect_max_delay
        self._subscribe_timeout = subscribe_timeout
        self._last: dict[str, bytes | _Unknown | None] = {}
        self._connected = asyncio.Event()
        self._starting = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._resync_task: asyncio.Task[None] | None = None
        self._logged_reasons: set[str] = set()
        self._pubsub: PubSub | None = None
        self._barrier_ids = itertools.count()
        self._barriers: dict[bytes, tuple[asyncio.Future[None], Subscription]] = {}
        self.expired_channel: str | None = None
        """Redis's key-event channel of expired keys, when the backend listens to it
        (`dref_redis.expiry`): each key of ours named there is delivered as a delete."""
        # Revisions (None: off): the re-publishing script, the base-marker script, the
        # revisions read on `dref-rev` awaiting their key's notification, the last revision
        # delivered per name, and the live events held while a name's history is replayed.
        self._resync_since = resync_since
        self._base = base
        self._pending: dict[bytes, deque[int]] = {}
        self._revs: dict[str, int] = {}
        self._held: dict[str, list[ChangeEvent]] = {}

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._task is not None

    async def ensure_started(self) -> None:
        """Start on first use: a context that never subscribes never reads notifications."""
        async with self._starting:
            if self._task is None:
                await self.start()

    async def start(self) -> None:
        """Connect and subscribe; raises redis-py's error if the first attempt fails."""
        conn = await self._connect()
        self._pubsub = conn[0]  # now, not when the task first runs: barriers need it at once
        self._connected.set()
        self._task = asyncio.create_task(self._run(conn), name="dref-redis-listener")

    async def aclose(self) -> None:
        self._connected.clear()
        for task in (self._resync_task, self._task):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task})
        self._task = self._resync_task = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> bool:
        """True once subscribed (at once if already), False if `timeout` passes first."""
        if self._connected.is_set():
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    def prepare(self, name: str) -> None:
        """Call before a subscription to `name` is added to the hub."""
        if self._hub.subscribers(name) == 0:
            # Whatever was delivered before is unknown to the new subscriber.
            self._last[name] = _UNKNOWN
            self._revs.pop(name, None)
        if len(self._last) > 2 * len(self._hub.names()) + 256:
            live = self._hub.names() | {name}
            self._last = {n: v for n, v in self._last.items() if n in live}
            self._revs = {n: v for n, v in self._revs.items() if n in live}

    async def learn_revision(self, name: str) -> None:
        """After a new subscription's barrier: have the element's current revision published
        as a base marker, so that a reconnect can resume `name` from it (revisions only)."""
        if self._base is None or self._pubsub is None or name in self._revs:
            return
        try:
            async with asyncio.timeout(self._subscribe_timeout):
                await self._base(self._keys.key(name), self.resync_channel)
        except (DRefError, RedisError, OSError, TimeoutError) as exc:
            log.debug("dref-redis: base revision of %r not learnt: %s", name, exc)

    async def barrier(self, sub: Subscription) -> None:
        """Wait until notifications sent before this call are dispatched; drop them from `sub`.

        Without a connection there is nothing to wait for: the resync after the reconnect
        brings `sub` the current value.
        """
        pubsub = self._pubsub
        if pubsub is None:
            return
        token = b"dref-barrier-%d" % next(self._barrier_ids)
        done = asyncio.get_running_loop().create_future()
        self._barriers[token] = (done, sub)
        try:
            async with asyncio.timeout(self._subscribe_timeout):
                if self._route_barrier is None:
                    await pubsub.ping(token)
                else:
                    message = msgpack.packb([token])
                    await self._route_barrier(
                        self._keys.key(sub.name), self.resync_channel, message
                    )
                await done
        except (DRefError, RedisError, OSError, TimeoutError) as exc:
            log.debug("dref-redis: subscription barrier failed: %s", exc)
        finally:
            self._barriers.pop(token, None)

    def _release_barriers(self) -> None:
        for done, _ in self._barriers.values():
            if not done.done():
                done.set_result(None)

    # -- the connection loop ----------------------------------------------------------------------
    async def _connect(self) -> tuple[PubSub, Redis | None]:
        pubsub, node = await self._connections.open_pubsub()
        try:
            async with asyncio.timeout(self._subscribe_timeout):
                channels = [CHANNEL, self.resync_channel]
                if self.expired_channel is not None:
                    channels.append(self.expired_channel)
                if self._resync_since is not None:
                    channels.append(REVISION_CHANNEL)
                await pubsub.subscribe(*channels)
                pending = {channel.encode() for channel in channels}
                while pending:
                    msg = await pubsub.get_message(timeout=self._subscribe_timeout)
                    if msg is not None and msg["type"] == "subscribe":
                        pending.discard(msg["channel"])
        except BaseException:
            await _close(pubsub, node)
            raise
        return pubsub, node

    async def _run(self, conn: tuple[PubSub, Redis | None] | None) -> None:
        delay = _FIRST_DELAY
        while True:
            if conn is None:
                try:
                    conn = await self._connect()
                except Exception as exc:
                    log.warning(
                        "dref-redis: change notifications unavailable (%s); retrying in %.2f s",
                        exc or type(exc).__name__,
                        delay,
                    )
                    await self._clock.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, self._max_delay)
                    continue
                self.reconnects += 1
                log.info("dref-redis: change notifications reconnected; resynchronising")
                self._connected.set()
                self._resync_task = asyncio.create_task(
                    self._resync_all(), name="dref-redis-resync"
                )
            delay = _FIRST_DELAY
            self._pubsub = conn[0]
            try:
                await self._read(conn[0])
            except Exception as exc:
                log.warning(
                    "dref-redis: change notifications interrupted (%s); reconnecting",
                    exc or type(exc).__name__,
                )
            finally:
                self._pubsub = None
                self._connected.clear()
                self._release_barriers()
                self._pending.clear()
                if self._resync_task is not None:
                    self._resync_task.cancel()
                    await asyncio.wait({self._resync_task})
                    self._resync_task = None
                await _close(*conn)
                conn = None

    async def _read(self, pubsub: PubSub) -> None:
        awaiting_pong = False
        while True:
            msg = await pubsub.get_message(timeout=self._ping_interval)
            if msg is None:
                if awaiting_pong:
                    raise ConnectionError(f"no reply to PING within {self._ping_interval:g} s")
                await pubsub.ping()
                awaiting_pong = True
                continue
            awaiting_pong = False
            if msg["type"] == "message":
                self._dispatch(msg["channel"], msg["data"])
            elif msg["type"] == "pong":
                self._pass_barrier(msg["data"])

    async def _resync_all(self) -> None:
        """Re-read every subscribed name through a marker; retried until done or cancelled."""
        delay = _FIRST_DELAY
        names = sorted(self._hub.names())
        gate = asyncio.Semaphore(_RESYNC_CONCURRENCY)
        while names:

            async def one(name: str) -> str | None:
                async with gate:
                    try:
                        since = self._revs.get(name)
                        if since is not None and self._resync_since is not None:
                            self._held.setdefault(name, [])
                            await self._resync_since(
                                self._keys.key(name), self.resync_channel, since
                            )
                        else:
                            await self._resync(self._keys.key(name), self.resync_channel)
                    except Exception as exc:
                        log.warning(
                            "dref-redis: resync of %r failed: %s",
                            name,
                            exc,
                            extra={"dref_element": name},
                        )
                        return name
                    return None

            results = await asyncio.gather(*(one(n) for n in names))
            names = [n for n in results if n is not None and self._hub.subscribers(n)]
            if names:
                await self._clock.sleep(delay)
                delay = min(delay * 2, self._max_delay)

    # -- dispatch ---------------------------------------------------------------------------------
    def _dispatch(self, channel: bytes, data: bytes) -> None:
        if channel == CHANNEL.encode():
            if not self._hub.names() and not self._pending:
                return  # nobody listens: skip decoding (a bad payload then goes unnoticed)
            try:
                event = self._decode(data)
            except CodecError as exc:
                self._skip(str(exc), data)
                return
            key = event.name.encode()
            revision = 0
            waiting = self._pending.get(key)
            if waiting:
                revision = waiting.popleft()
                if not waiting:
                    del self._pending[key]
            name = self._keys.name_of(key)
            if name is not None:
                self._deliver(name, event.value, revision)
        elif self.expired_channel is not None and channel == self.expired_channel.encode():
            name = self._keys.name_of(data)
            if name is not None:
                self._deliver(name, None)  # no revision: Redis expired it, no script ran
        elif channel == REVISION_CHANNEL.encode():
            if not self._hub.names():
                return  # its notification then finds nothing pending either
            try:
                key, revision = _unpack_revision(data)
            except (ValueError, TypeError) as exc:
                self._skip(f"bad revision message: {exc}", data)
                return
            self._pending.setdefault(key, deque()).append(revision)
        elif channel == self.resync_channel.encode():
            try:
                marker = _unpack_marker(data)
            except (ValueError, TypeError) as exc:
                self._skip(f"bad resync marker: {exc}", data)
                return
            if isinstance(marker, bytes):
                self._pass_barrier(marker)
                return
            if len(marker) == 3:
                self._replayed(*marker)
                return
            key, value = marker
            name = self._keys.name_of(key)
            if name is not None and self._last.get(name, _UNKNOWN) != value:
                self._deliver(name, value)

    def _pass_barrier(self, token: bytes) -> None:
        entry = self._barriers.pop(token, None)
        if entry is not None:
            done, sub = entry
            if sub.drain():  # committed before the subscription: not for this subscriber
                self._last[sub.name] = _UNKNOWN
            if not done.done():
                done.set_result(None)

    def _deliver(self, name: str, value: bytes | None, revision: int = 0) -> None:
        if self._hub.subscribers(name) == 0:
            self._last.pop(name, None)
            self._revs.pop(name, None)
            self._held.pop(name, None)
            return
        held = self._held.get(name)
        if held is not None:  # its history is being replayed: after it, unless it covers this
            held.append(ChangeEvent(name, value, revision))
            if len(held) > self._hub.capacity:
                self._lagged(name, self._revs.get(name, 0))
            return
        if revision:
            if revision <= self._revs.get(name, 0):
                return  # replayed already
            self._revs[name] = revision
        self._last[name] = value
        self._hub.publish(ChangeEvent(name, value, revision))

    def _replayed(self, key: bytes, revision: int, payload: bytes | int | None) -> None:
        """A marker of `RESYNC_SINCE` (a recorded change, the end, or a gap) or of the base."""
        name = self._keys.name_of(key)
        if name is None:
            return
        if revision == -2:  # base: every notification of `name` before it is at most this
            if isinstance(payload, int) and payload > self._revs.get(name, 0):
                self._revs[name] = payload
            return
        if isinstance(payload, bytes):
            try:
                value = self._decode(payload).value
            except CodecError as exc:
                self._skip(str(exc), payload)
                return
            held = self._held.pop(name, None)
            self._deliver(name, value, revision)
            if held is not None:
                self._held[name] = held
            return
        held = self._held.pop(name, None)
        if revision == -1:  # the end of a replay: the held live events follow
            for event in held or ():
                self._deliver(name, event.value, event.revision)
        else:  # a gap: the history no longer reaches back to `revision`
            self._lagged(name, revision)

    def _lagged(self, name: str, since: int) -> None:
        self._held.pop(name, None)
        self._revs.pop(name, None)
        self._last[name] = _UNKNOWN
        self._hub.end(name, ChangeStreamLaggedError(name, 0, since=since))

    def _skip(self, reason: str, data: bytes) -> None:
        self.bad_payloads += 1
        if reason in self._logged_reasons or len(self._logged_reasons) >= _MAX_LOGGED_REASONS:
            log.debug("dref-redis: skipped undecodable notification: %s", reason)
            return
        self._logged_reasons.add(reason)
        log.warning(
            "dref-redis: skipped a notification on %r that cannot be decoded: %s (payload %s%s)",
            CHANNEL,
            reason,
            data[:32].hex(),
            "…" if len(data) > 32 else "",
        )


def _unpack_revision(data: bytes) -> tuple[bytes, int]:
    """A `dref-rev` message: `[key, revision]`."""
    item: Any = msgpack.unpackb(data, raw=True)
    if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], bytes):
        raise ValueError("expected [key, revision]")
    if not isinstance(item[1], int) or item[1] < 1:
        raise TypeError(f"revision is {item[1]!r}")
    return item[0], item[1]


def _unpack_marker(
    data: bytes,
) -> bytes | tuple[bytes, bytes | None] | tuple[bytes, int, bytes | int | None]:
    """A barrier token (`[token]`), a resync marker (`[key, value or false]`) or a revision
    marker (`[key, revision, payload]`, `[key, -1, false]` end, `[key, since, false]` gap,
    `[key, -2, base revision]`)."""
    item: Any = msgpack.unpackb(data, raw=True)
    if isinstance(item, list) and len(item) == 1 and isinstance(item[0], bytes):
        return item[0]
    if isinstance(item, list) and len(item) == 3 and isinstance(item[0], bytes):
        key, revision, payload = item
        if not isinstance(revision, int) or not isinstance(payload, bytes | int | bool):
            raise TypeError("expected [key, revision, payload]")
        return key, revision, None if payload is False else payload
    if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], bytes):
        raise ValueError("expected [key, value] or [token]")
    key, value = item
    if value is False:
        return key, None
    if not isinstance(value, bytes):
        raise TypeError(f"value is {type(value).__name__}")
    return key, value


async def _close(pubsub: PubSub, node: Redis | None) -> None:
    """Close without letting a failure or a hung socket escape (bounded)."""
    try:
        async with asyncio.timeout(1.0):
            await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            if node is not None:
                await node.aclose()
    except Exception as exc:
        log.debug("dref-redis: closing the pub/sub connection: %s", exc)
