"""`CommandLane`: commands sent straight to pooled connections that stay checked out while idle.

redis-py's client layer and its connection pool cost about 35 µs per command on a small machine
(a condition variable, a timeout context and observability records on every checkout and
return, and a general argument encoder), a tenth of a lock's acquire and release. The lane
keeps the connections it has finished with and hands them out again without the pool. It gives
a connection back to the pool when a caller is waiting there or redis-py asks for a reconnect,
and after a failure or cancellation, which also drops it first, since a reply may still be in
flight. Every connection handed out is first checked without I/O for unread data or a stream
the server closed, and is reconnected if either is found (redis-py's pool skips that check when
maintenance notifications are on, redis-py 8's default with RESP3). Commands are packed by
`pack`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

__all__ = ["CommandLane", "ScriptCommand", "pack"]

# redis-py 8 renamed the stale-connection check (the old name still works, with a warning).
_STALE_CHECK = "can_read" if hasattr(AbstractConnection, "can_read") else "can_read_destructive"


def _bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


# The `$<length>\r\n` of every bulk string shorter than 1 KiB: a lookup and one concatenation
# cost a third of formatting each argument (`b"%d" %` is slow in CPython).
_HEADS = [b"$%d\r\n" % n for n in range(1024)]


def _command(head: bytes, words: int, args: Sequence[bytes]) -> bytes:
    """A RESP array: `head` holds its first `words` bulk strings already encoded, then `args`."""
    if not args:
        return b"*%d\r\n%s" % (words, head)
    try:
        bulks = b"\r\n".join([_HEADS[len(arg)] + arg for arg in args])
    except IndexError:  # an argument of 1 KiB or more
        bulks = b"\r\n".join([b"$%d\r\n%s" % (len(arg), arg) for arg in args])
    return b"*%d\r\n%s%s\r\n" % (words + len(args), head, bulks)


def pack(*args: bytes) -> bytes:
    """One RESP command of bulk strings."""
    return _command(b"", 0, args)


async def _is_stale(conn: AbstractConnection) -> bool:
    """A reply nobody read or a stream the server closed, found without I/O, as the pool does."""
    try:
        return bool(await getattr(conn, _STALE_CHECK)())
    except (RedisConnectionError, OSError):  # a closed parser buffer
        return True


class ScriptCommand:
    """A Lua script's EVALSHA, and its SCRIPT LOAD for a server that lacks it."""

    def __init__(self, source: str, sha: str) -> None:
        self.load = pack(b"SCRIPT", b"LOAD", source.encode())
        self._head = _bulk(b"EVALSHA") + _bulk(sha.encode())

    def call(self, keys: Sequence[bytes], args: Sequence[bytes]) -> bytes:
        return _command(self._head, 2, [b"%d" % len(keys), *keys, *args])


class CommandLane:
    """Runs packed commands on connections of `pool`, keeping up to `keep` of them idle."""

    def __init__(self, pool: ConnectionPool, keep: int) -> None:
        self._pool = pool
        self._keep = keep
        self._idle: list[AbstractConnection] = []
        self._waiting = 0  # callers inside pool.get_connection()

    async def execute(self, command: bytes) -> Any:
        """Send `command` and return its reply; an error reply is raised as redis-py raises it."""
        conn = await self._checkout()
        try:
            await conn.send_packed_command(command, check_health=False)
            reply = await conn.read_response()
        except ResponseError:
            await self._checkin(conn)  # the whole reply was read: the connection is in sync
            raise
        except BaseException:
            try:
                await conn.disconnect(nowait=True)
            finally:
                await self._pool.release(conn)
            raise
        await self._checkin(conn)
        return reply

    async def run_script(self, script: ScriptCommand, command: bytes) -> Any:
        """EVALSHA `command`; on NOSCRIPT (a restarted or flushed server) load it and retry."""
        try:
            return await self.execute(command)
        except NoScriptError:
            pass
        await self.execute(script.load)
        return await self.execute(command)

    async def _checkout(self) -> AbstractConnection:
        if self._idle:
            conn = self._idle.pop()
        else:
            self._waiting += 1
            try:
                conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]
            finally:
                self._waiting -= 1
            assert isinstance(conn, AbstractConnection)
        if conn.is_connected and await _is_stale(conn):
            await conn.disconnect()  # send_packed_command connects it again
        return conn

    async def _checkin(self, conn: AbstractConnection) -> None:
        reconnect = getattr(conn, "should_reconnect", None)
        if self._waiting or len(self._idle) >= self._keep or (reconnect and reconnect()):
            await self._pool.release(conn)
        else:
            self._idle.append(conn)

    async def aclose(self) -> None:
        """Give every idle connection back to the pool (before the pool is closed)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._pool.release(conn)
