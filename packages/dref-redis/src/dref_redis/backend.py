"""`RedisBackend`: the dref SPI over Redis, in upstream's key and notification layout."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dref import change_payload
from dref.changes import ChangeHub, Subscription
from dref.clock import Clock, SystemClock
from dref.errors import (
    BackendUnavailableError,
    ClosedError,
    DRefError,
    StaleFenceError,
    UnsupportedOperationError,
)
from dref.spi import Backend, BackendStatus, Capabilities, LockGrant, WriteFence
from dref_redis import revisions, scripts, sessions
from dref_redis.connection import Connections
from dref_redis.errors import map_error
from dref_redis.expiry import expired_channel, set_up_expiry_events
from dref_redis.keys import (
    CHANNEL,
    KeyLayout,
    fence_key,
    history_key,
    is_companion,
    lives_key,
    queue_key,
    session_key,
)
from dref_redis.lane import CommandLane, ScriptCommand, pack
from dref_redis.listener import ChangeListener
from dref_redis.payloads import PayloadEncoder
from dref_redis.settings import RedisSettings

__all__ = ["RedisBackend"]

T = TypeVar("T")

_CHANNEL = CHANNEL.encode()
_WAITER_LIFE_POLLS = 3
_RESEND_FIRST_DELAY = 0.01
_RESEND_MAX_DELAY = 0.25


class _Script(NamedTuple):
    """A script as redis-py runs it (routed by key in Cluster) and as the lane sends it."""

    routed: AsyncScript
    direct: ScriptCommand
    history: bool = False
    """A write recording its change in the element's history (`dref_redis.revisions`)."""
    session: bool = False
    """A write recording its result in the session's key (`dref_redis.sessions`)."""


def _at_least(version: str, oldest: tuple[int, int]) -> bool:
    """Whether a `redis_version` such as "7.0.15" is `oldest` or newer (False when unreadable)."""
    parts = version.split(".")[:2]
    if len(parts) < 2 or not all(part.isdigit() for part in parts):
        return False
    return (int(parts[0]), int(parts[1])) >= oldest


def _px(ttl: float | None) -> bytes:
    """A TTL in seconds as the PX milliseconds argument of the scripts (b"" = no expiry)."""
    if ttl is None:
        return b""
    if not ttl > 0 or math.isinf(ttl):
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    return b"%d" % max(1, math.ceil(ttl * 1000))


class RedisBackend(Backend):
    """Elements are Redis strings; writes and their notifications are Lua scripts."""

    def __init__(
        self,
        settings: RedisSettings,
        *,
        clock: Clock | None = None,
        change_buffer: int = 1024,
    ) -> None:
        self.settings = settings
        self.default_ttl = settings.default_ttl
        self.poll_interval = settings.poll_interval
        self.capabilities = Capabilities(
            # Reads and writes go to one primary; with Sentinel or Cluster a failover can lose
            # acknowledged writes (replication is asynchronous), so we do not claim it there.
            linearizable=not (settings.cluster or settings.sentinel_master),
            durable=False,
            distributed=True,
            fencing=True,
            native_cas=settings.modify_strategy == "cas",
            owner_checked_locks=True,
            exact_events=False,
            expiry_events=False,
            lock_queue=True,
            names=True,
            fenced_writes=True,
            fair_updates=settings.modify_strategy == "cas",
            revisions=settings.history > 0,
            exactly_once=settings.exactly_once,
        )
        self.keys = KeyLayout(settings.key_prefix)
        self.hub = ChangeHub(change_buffer)
        self._payloads = PayloadEncoder(settings.payload_flavor)
        # How long a lock waiter keeps its place in line without trying again (it tries at least
        # every poll interval).
        self._waiter_life = _px(_WAITER_LIFE_POLLS * settings.poll_interval)
        # Longest wait for an update's turn before trying again (keeps its place alive).
        self._turn_wait = b"%.3f" % min(settings.poll_interval, settings.op_timeout / 2)
        self._conns = Connections(settings)
        self._where = self._conns.where
        self._deadline = settings.connect_timeout + settings.op_timeout
        client = self._conns.client
        self._client: Redis | RedisCluster = client
        # Commands go through the lane, except in Cluster (routed to shards by redis-py). The
        # lane keeps one pooled connection fewer than the pool has, for the listener's pub/sub.
        self._lane = (
            None
            if isinstance(client, RedisCluster)
            else CommandLane(client.connection_pool, keep=settings.max_connections - 1)
        )
        self._history = b"%d" % settings.history
        self._session = sessions.WriteSession()
        self._session_idle = _px(settings.session_idle)
        session_id = self._session.id
        self._session_key: Callable[[bytes], bytes] = functools.lru_cache(maxsize=4096)(
            lambda key: session_key(key, session_id)
        )
        # Whether session records are swapped in one `SET … GET` (Redis >= 6.2, found at open).
        self._swap_records = False
        self._build_writes()
        self._leave_line = self._script(scripts.LEAVE_LINE)
        self._get_with_revision = self._script(revisions.GET_WITH_REVISION)
        self._resync_since_script = self._script(revisions.RESYNC_SINCE)
        self._base_script = self._script(revisions.BASE)
        self._resync_script = self._script(scripts.RESYNC)
        self._barrier_script = self._script(scripts.BARRIER)
        self.listener = ChangeListener(
            connections=self._conns,
            hub=self.hub,
            keys=self.keys,
            decode=change_payload.decode,
            resync=self._resync,
            resync_since=self._resync_since if settings.history > 0 else None,
            base=self._base if settings.history > 0 else None,
            route_barrier=self._barrier if settings.cluster else None,
            clock=clock or SystemClock(),
            ping_interval=settings.ping_interval,
            reconnect_max_delay=settings.reconnect_max_delay,
            subscribe_timeout=settings.connect_timeout + settings.op_timeout,
        )
        self._closed = False

    @classmethod
    async def open(
        cls, settings: RedisSettings, *, clock: Clock | None = None, change_buffer: int = 1024
    ) -> RedisBackend:
        """Connect and check credentials and database (notifications start on first subscribe)."""
        backend = cls(settings, clock=clock, change_buffer=change_buffer)
        try:
            await backend._call("connect", None, backend._conns.initialize)
            set_get = settings.exactly_once and settings.session_set_get
            if set_get and await backend._server_has_set_get():
                backend._swap_records = True
                backend._build_writes()
            if await set_up_expiry_events(settings, backend._server_command):
                backend.capabilities = dataclasses.replace(backend.capabilities, expiry_events=True)
                backend.listener.expired_channel = expired_channel(settings.database)
        except BaseException:
            await backend.aclose()
            raise
        return backend

    # -- plumbing ---------------------------------------------------------------------------------
    async def _call(self, what: str, name: str | None, op: Callable[[], Awaitable[T]]) -> T:
        """Run `op` within the deadline, mapping redis-py's errors to dref's."""
        if self._closed:
            raise ClosedError("the redis backend is closed")
        try:
            async with asyncio.timeout(self._deadline):
                return await op()
        except DRefError:
            raise
        except (RedisError, OSError) as exc:
            raise map_error(exc, where=self._where, what=what, name=name) from exc

    def _script(self, source: str, *, history: bool = False, session: bool = False) -> _Script:
        routed = self._client.register_script(source)
        return _Script(routed, ScriptCommand(source, routed.sha), history, session)

    def _write_script(
        self, source: str, *, publishes: bool = True, applied: str | None = None
    ) -> _Script:
        """A write (of an element, a lock or a TTL): recording the changes it publishes while
        revisions are on, and its answer in the session while exactly-once writes are on
        (`applied`: its answer whenever it applies, if always the same, see `with_session`)."""
        history = publishes and self.settings.history > 0
        if history:
            source = revisions.with_history(source)
        session = self.settings.exactly_once
        if session:
            guess = applied if self._swap_records else None
            source = sessions.with_session(source, self._session_idle, guess)
        return self._script(source, history=history, session=session)

    def _build_writes(self) -> None:
        """The write scripts, as `_write_script` builds them with the current settings."""
        write = self._write_script
        self._set = write(scripts.SET, applied="1")
        self._set_if_not_exist = write(scripts.SET_IF_NOT_EXIST, applied="1")
        self._delete = write(scripts.DELETE, applied="1")
        self._cas = write(scripts.COMPARE_AND_SET, applied="{")
        # {1, waiters ahead}: {1, 0} when nobody waits (another answer is recorded after it).
        self._fair_cas = write(scripts.FAIR_COMPARE_AND_SET, applied="{0")
        self._fenced_set = write(scripts.FENCED_SET, applied="{")
        self._fenced_cas = write(scripts.FENCED_COMPARE_AND_SET, applied="{")
        self._fenced_delete = write(scripts.FENCED_DELETE, applied="{")
        self._try_lock = write(scripts.TRY_LOCK)  # the fence
        self._refresh_lock = write(scripts.REFRESH_LOCK, publishes=False, applied="1")
        self._release_lock = write(scripts.RELEASE_LOCK, applied="1")
        # Without sessions `expire` is upstream's plain PEXPIRE; with them, a recording script.
        exactly_once = self.settings.exactly_once
        self._expire = write(scripts.EXPIRE, publishes=False, applied="1") if exactly_once else None

    async def _server_has_set_get(self) -> bool:
        """Whether the server runs `SET … GET` (Redis >= 6.2), from `INFO server`; no when that
        cannot be told (INFO refused, several differing nodes)."""
        try:
            info = await self._server_command("INFO", "server")
        except ResponseError:
            return False
        nodes = [info] if isinstance(info, dict) and "redis_version" in info else []
        if isinstance(info, dict) and not nodes:  # Cluster: {node: its INFO}
            nodes = [node for node in info.values() if isinstance(node, dict)]
        versions = [str(node.get("redis_version", "")) for node in nodes]
        return bool(versions) and all(_at_least(version, (6, 2)) for version in versions)

    async def _run(
        self, script: _Script, what: str, name: str, keys: list[bytes], args: list[bytes]
    ) -> Any:
        """Run a script within the deadline. A session write is sent once, and again (same
        request number) only while its outcome is unknown (`_resend`)."""
        if script.history:
            keys = [*keys, history_key(keys[0])]
            args = [*args, self._history]
        if not script.session:
            return await self._call(what, name, lambda: self._send(script, keys, args))
        if self._closed:
            raise ClosedError("the redis backend is closed")
        session = self._session
        request, first = session.begin()
        try:
            session_key = self._session_key(keys[0])
            keys, args = sessions.session_arguments(keys, args, session_key, request, first)
            async with asyncio.timeout(self._deadline) as deadline:
                try:
                    return await self._send(script, keys, args)
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    unknown = exc
                # The deadline is `connect_timeout + op_timeout` after the first attempt began.
                give_up = deadline.when() - self.settings.connect_timeout  # type: ignore[operator]
                return await self._resend(script, keys, args, give_up, unknown)
        except DRefError:
            raise
        except (RedisError, OSError) as exc:
            raise map_error(exc, where=self._where, what=what, name=name) from exc
        finally:
            session.end(request)

    def _send(self, script: _Script, keys: list[bytes], args: list[bytes]) -> Awaitable[Any]:
        """Run the script once: through the lane, or routed by redis-py's client in Cluster."""
        lane = self._lane
        if lane is None:
            return script.routed(keys=keys, args=args)
        return lane.run_script(script.direct, script.direct.call(keys, args))

    async def _resend(
        self,
        script: _Script,
        keys: list[bytes],
        args: list[bytes],
        give_up: float,
        unknown: BaseException,
    ) -> Any:
        """Send a session write whose outcome is `unknown` (after a connection error or timeout
        it may or may not have been applied) again until its answer arrives: the script answers
        a repeat with the recorded result. Raises the last such error at `give_up` (loop time,
        `op_timeout` after the first attempt) or once closed; other errors are not resent."""
        loop = asyncio.get_running_loop()
        delay = _RESEND_FIRST_DELAY
        while not (self._closed or loop.time() + delay > give_up):
            await asyncio.sleep(delay)  # back-off before resending to a dropped server
            delay = min(delay * 2, _RESEND_MAX_DELAY)
            try:
                return await self._send(script, keys, args)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                unknown = exc
        raise unknown

    async def _command(self, what: str, name: str, command: str, *args: bytes) -> Any:
        """A plain command: through the lane, or routed by redis-py's client in Cluster."""
        lane = self._lane
        if lane is None:
            client = self._client
            return await self._call(what, name, lambda: client.execute_command(command, *args))
        packed = pack(command.encode(), *args)
        return await self._call(what, name, lambda: lane.execute(packed))

    async def _server_command(self, *args: str) -> Any:
        """A command about the server, not an element (`CONFIG`), through redis-py's client;
        an error reply (refused, unknown command) is raised as redis-py's `ResponseError`."""
        try:
            async with asyncio.timeout(self._deadline):
                return await self._client.execute_command(*args)
        except ResponseError:
            raise
        except (RedisError, OSError) as exc:
            raise map_error(exc, where=self._where, what=args[0]) from exc

    def _payload(self, key: bytes, value: bytes | None) -> bytes:
        payloads = self._payloads
        return payloads.delete(key) if value is None else payloads.set(key, value)

    async def _resync(self, key: bytes, channel: str) -> object:
        return await self._run(
            self._resync_script, "resync", key.decode(), [key], [channel.encode()]
        )

    async def _resync_since(self, key: bytes, channel: str, since: int) -> object:
        keys = [key, history_key(key)]
        args = [channel.encode(), b"%d" % since]
        return await self._run(self._resync_since_script, "resync", key.decode(), keys, args)

    async def _base(self, key: bytes, channel: str) -> object:
        keys = [key, history_key(key)]
        return await self._run(
            self._base_script, "subscribe", key.decode(), keys, [channel.encode()]
        )

    async def _barrier(self, key: bytes, channel: str, message: bytes) -> object:
        args = [channel.encode(), message]
        return await self._run(self._barrier_script, "subscribe", key.decode(), [key], args)

    # -- required ---------------------------------------------------------------------------------
    async def get(self, name: str) -> bytes | None:
        value = await self._command("get", name, "GET", self.keys.key(name))
        assert value is None or isinstance(value, bytes)  # decode_responses is off
        return value

    async def set(self, name: str, value: bytes, ttl: float | None = None) -> None:
        key = self.keys.key(name)
        args = [value, _px(ttl), self._payload(key, value), _CHANNEL]
        await self._run(self._set, "set", name, [key], args)

    async def set_if_not_exist(self, name: str, value: bytes, ttl: float | None = None) -> bool:
        key = self.keys.key(name)
        args = [value, _px(ttl), self._payload(key, value), _CHANNEL]
        return bool(await self._run(self._set_if_not_exist, "set_if_not_exist", name, [key], args))

    async def delete(self, name: str) -> None:
        key = self.keys.key(name)
        await self._run(self._delete, "delete", name, [key], [self._payload(key, None), _CHANNEL])

    async def expire(self, name: str, ttl: float) -> bool:
        key = self.keys.key(name)
        if self._expire is None:
            return bool(await self._command("expire", name, "PEXPIRE", key, _px(ttl)))
        return bool(await self._run(self._expire, "expire", name, [key], [_px(ttl)]))

    async def subscribe(self, name: str) -> Subscription:
        if self._closed:
            raise ClosedError("the redis backend is closed")
        if not self.listener.started:
            await self._call("subscribe", name, self.listener.ensure_started)
        timeout = self.settings.connect_timeout + self.settings.op_timeout
        if not await self.listener.wait_connected(timeout):
            raise BackendUnavailableError(
                f"redis at {self._where}: change notifications are not connected "
                f"(waited {timeout:g} s to subscribe to {name!r})"
            )
        self.listener.prepare(name)
        sub = self.hub.subscribe(name)
        try:
            await self.listener.barrier(sub)
            await self.listener.learn_revision(name)
        except BaseException:
            await sub.aclose()
            raise
        return sub

    async def get_with_revision(self, name: str) -> tuple[bytes | None, int]:
        """The value and the revision of the element's last recorded change, in one script."""
        self._require_history()
        key = self.keys.key(name)
        keys = [key, history_key(key)]
        value, revision = await self._run(self._get_with_revision, "get", name, keys, [])
        return value, int(revision)

    async def subscribe_since(self, name: str, since: int) -> Subscription:
        """A live subscription (as `subscribe`), then the history after `since` read with
        XRANGE and put ahead of the live events it already covers."""
        self._require_history()
        sub = await self.subscribe(name)
        try:
            key = history_key(self.keys.key(name))
            start = b"0-%d" % (since + 1)
            entries = await self._command("subscribe", name, "XRANGE", key, start, b"+")
            events = revisions.replay(name, since, entries, change_payload.decode)
        except BaseException:
            await sub.aclose()
            raise
        sub.preload(events, since)
        return sub

    def _require_history(self) -> None:
        if self.settings.history <= 0:
            raise UnsupportedOperationError(
                "redis backend: revisions are off (history = 0)", capability="revisions"
            )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.listener.aclose()
        finally:
            self.hub.close()
            if self._lane is not None:
                await self._lane.aclose()
            await self._conns.aclose()

    # -- tools ------------------------------------------------------------------------------------
    async def names(self, prefix: str = "") -> AsyncIterator[str]:
        """SCAN with a MATCH of the key prefix (every primary in Cluster); fence, queue and lives
        keys are skipped, so are keys that are not UTF-8. Redis never returns an expired key."""
        pattern = _glob_escape(self.keys.key(prefix)) + b"*"
        seen: set[str] = set()
        client = self._client
        if isinstance(client, RedisCluster):
            targets: list[Any] = list(
                await self._call("names", prefix, _async(client.get_primaries))
            )
        else:
            targets = [None]
        for node in targets:
            cursor = b"0"
            while True:
                cursor, keys = await self._scan(node, cursor, pattern)
                for key in keys:
                    name = self.keys.name_of(key)
                    if name is None or name in seen or is_companion(key):
                        continue
                    seen.add(name)
                    yield name
                if cursor in (b"0", 0):
                    break

    async def _scan(self, node: Any, cursor: bytes, pattern: bytes) -> tuple[bytes, list[bytes]]:
        lane = self._lane
        if lane is None:
            client = self._client
            reply: Any = await self._call(
                "names",
                None,
                lambda: client.scan(int(cursor), match=pattern, count=1000, target_nodes=node),
            )
        else:
            packed = pack(b"SCAN", cursor, b"MATCH", pattern, b"COUNT", b"1000")
            reply = await self._call("names", None, lambda: lane.execute(packed))
        next_cursor: Any = reply[0]
        if isinstance(next_cursor, dict):  # redis-py's Cluster reply: node name → cursor
            (next_cursor,) = next_cursor.values()
        if isinstance(next_cursor, int):
            next_cursor = b"%d" % next_cursor
        return bytes(next_cursor), [bytes(key) for key in reply[1]]

    async def status(self) -> BackendStatus:
        """Each server: its address, role and version, and the round trip of one PING."""
        client = self._client
        rows: list[dict[str, object]] = []
        if isinstance(client, RedisCluster):
            await self._call("status", None, _async(client.get_nodes))
            for node in client.get_nodes():
                address = f"{node.host}:{node.port}"
                try:
                    latency, info = await self._call("status", None, _probe(client, node))
                except DRefError as exc:
                    rows.append(_server_row(address, None, None, str(exc)))
                else:
                    rows.append(_server_row(address, _info(info), latency))
        else:
            started = time.perf_counter()
            await self._command("status", "", "PING")
            latency = time.perf_counter() - started
            info = await self._command("status", "", "INFO")
            rows.append(_server_row(self._where, _info(info), latency))
        kind = (
            "Cluster"
            if self.settings.cluster
            else ("Sentinel" if self.settings.sentinel_master else "single server")
        )
        return BackendStatus(f"redis ({kind}) at {self._where}", tuple(rows))

    # -- native paths -----------------------------------------------------------------------------
    async def compare_and_set(
        self, name: str, expected: bytes, value: bytes, ttl: float | None = None
    ) -> bool:
        swapped, _ = await self._swap(name, expected, value, ttl)
        return swapped

    async def compare_and_swap(
        self, name: str, expected: bytes, value: bytes
    ) -> tuple[bool, bytes | None]:
        return await self._swap(name, expected, value, None)

    async def _swap(
        self, name: str, expected: bytes, value: bytes, ttl: float | None
    ) -> tuple[bool, bytes | None]:
        """One script: write iff the value is `expected`; otherwise return the current value."""
        key = self.keys.key(name)
        args = [expected, value, _px(ttl), self._payload(key, value), _CHANNEL]
        reply = await self._run(self._cas, "compare_and_set", name, [key], args)
        if reply[0] == 1:
            return True, value
        current = reply[1] if len(reply) > 1 else None
        assert current is None or isinstance(current, bytes)  # decode_responses is off
        return False, current

    async def fair_compare_and_swap(
        self, name: str, expected: bytes, value: bytes, ticket: bytes, *, rejoin: bool = False
    ) -> tuple[bool, bytes | None, int]:
        """The element's line lives beside it like a lock's (`{k}:dref-queue`, `{k}:dref-lives`):
        one script checks the line, compares, swaps (and, with `rejoin`, queues the ticket again)
        or queues (scripts.FAIR_COMPARE_AND_SET)."""
        key = self.keys.key(name)
        args = [
            expected,
            value,
            self._payload(key, value),
            _CHANNEL,
            ticket,
            self._waiter_life,
            b"1" if rejoin else b"",
        ]
        keys = [key, queue_key(key), lives_key(key)]
        reply = await self._run(self._fair_cas, "compare_and_set", name, keys, args)
        if reply[0] == 1:
            return True, value, int(reply[1]) if len(reply) > 1 else 0
        current = reply[2] if len(reply) > 2 else None
        assert current is None or isinstance(current, bytes)  # decode_responses is off
        return False, current, int(reply[1])

    async def leave_line(self, name: str, ticket: bytes) -> None:
        key = self.keys.key(name)
        keys = [queue_key(key), lives_key(key), key]
        await self._run(self._leave_line, "leave_line", name, keys, [ticket, self._waiter_life])

    async def wait_turn(self, name: str, ticket: bytes) -> bytes | None:
        """BLPOP of the ticket's turn list (`{k}:dref-queue:turn:<ticket>`), which the swap or
        leave that makes it the head fills; at most one poll interval, on a pooled connection
        the lane's or the pool's to itself while it blocks."""
        turn = queue_key(self.keys.key(name)) + b":turn:" + ticket
        reply = await self._command("wait_turn", name, "BLPOP", turn, self._turn_wait)
        if not reply:
            return None
        value = reply[1]
        assert isinstance(value, bytes)  # decode_responses is off
        return value or None

    def _fence_keys(self, name: str, fence: WriteFence) -> list[bytes]:
        """The element's key and its lock's fence key; in Cluster both must share a slot."""
        key = self.keys.key(name)
        fkey = fence_key(self.keys.key(fence.lock))
        if self.settings.cluster and key_slot(key) != key_slot(fkey):
            raise UnsupportedOperationError(
                f"redis cluster: a fenced write to {name!r} checks lock {fence.lock!r} in the "
                "same script, so both must hash to one slot; give them a common hash tag "
                "(e.g. 'order:{42}' and 'lock:{42}')",
                capability="fenced_writes",
            )
        return [key, fkey]

    def _check_fence(self, reply: Any, name: str, fence: WriteFence) -> Any:
        if reply[0] == -1:
            raise StaleFenceError(fence.lock, name, fence.fence, int(reply[1]))
        return reply

    async def fenced_set(
        self,
        name: str,
        value: bytes,
        ttl: float | None,
        fence: WriteFence,
        *,
        if_absent: bool = False,
    ) -> bool:
        keys = self._fence_keys(name, fence)
        args = [
            value,
            _px(ttl),
            self._payload(keys[0], value),
            _CHANNEL,
            b"%d" % fence.fence,
            b"1" if if_absent else b"",
        ]
        reply = await self._run(self._fenced_set, "set", name, keys, args)
        return bool(self._check_fence(reply, name, fence)[0] == 1)

    async def fenced_compare_and_swap(
        self, name: str, expected: bytes, value: bytes, fence: WriteFence
    ) -> tuple[bool, bytes | None]:
        keys = self._fence_keys(name, fence)
        args = [expected, value, self._payload(keys[0], value), _CHANNEL, b"%d" % fence.fence]
        reply = self._check_fence(
            await self._run(self._fenced_cas, "compare_and_set", name, keys, args), name, fence
        )
        if reply[0] == 1:
            return True, value
        current = reply[1] if len(reply) > 1 else None
        assert current is None or isinstance(current, bytes)  # decode_responses is off
        return False, current

    async def fenced_delete(self, name: str, fence: WriteFence) -> None:
        keys = self._fence_keys(name, fence)
        args = [self._payload(keys[0], None), _CHANNEL, b"%d" % fence.fence]
        reply = await self._run(self._fenced_delete, "delete", name, keys, args)
        self._check_fence(reply, name, fence)

    async def try_lock(self, name: str, token: bytes, ttl: float) -> LockGrant | None:
        """Acquire with fencing: SET NX PX, INCR of the fence key and PUBLISH in one script.

        Waiters queue: a failed attempt joins the lock's line (or keeps its place), and the lock
        goes to the oldest waiter that is still trying, first come, first served (see
        scripts.TRY_LOCK). A waiter that gives up leaves the line through `release_lock`.
        """
        key = self.keys.key(name)
        args = [token, _px(ttl), self._payload(key, token), _CHANNEL, self._waiter_life]
        keys = [key, fence_key(key), queue_key(key), lives_key(key)]
        fence = await self._run(self._try_lock, "try_lock", name, keys, args)
        return None if fence is None else LockGrant(fence=int(fence))

    async def refresh_lock(self, name: str, token: bytes, ttl: float) -> bool:
        key = self.keys.key(name)
        return bool(
            await self._run(self._refresh_lock, "refresh_lock", name, [key], [token, _px(ttl)])
        )

    async def release_lock(self, name: str, token: bytes) -> bool:
        key = self.keys.key(name)
        args = [token, self._payload(key, None), _CHANNEL]
        keys = [key, queue_key(key), lives_key(key)]
        return bool(await self._run(self._release_lock, "release_lock", name, keys, args))


def _glob_escape(raw: bytes) -> bytes:
    """`raw` as a literal in a Redis glob pattern (MATCH)."""
    out = bytearray()
    for byte in raw:
        if byte in b"*?[]\\^-":
            out += b"\\"
        out.append(byte)
    return bytes(out)


def _async(fn: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    async def call() -> T:
        return fn()

    return call


def _probe(client: RedisCluster, node: Any) -> Callable[[], Awaitable[tuple[float, object]]]:
    """PING `node` (timed), then INFO."""

    async def probe() -> tuple[float, object]:
        started = time.perf_counter()
        await client.execute_command("PING", target_nodes=node)
        latency = time.perf_counter() - started
        return latency, await client.execute_command("INFO", target_nodes=node)

    return probe


def _info(reply: object) -> dict[str, str]:
    """INFO's reply as a dict (redis-py parses it in Cluster; the lane gives the raw text)."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            out[key.strip()] = value.strip()
    return out


def _server_row(
    address: str, info: dict[str, str] | None, latency: float | None, error: str = ""
) -> dict[str, object]:
    info = info or {}
    return {
        "server": address,
        "role": info.get("role", "unreachable" if error else "?"),
        "version": info.get("redis_version", ""),
        "latency_ms": None if latency is None else round(latency * 1000, 3),
        "error": error,
    }
