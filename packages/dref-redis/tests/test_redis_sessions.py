"""Exactly-once writes on a real redis-server: recorded results, duplicates, expiry, switch off."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis_lost_answers import lose_next_answer
from redis_procs import RedisServer

from dref.errors import BackendUnavailableError
from dref_compat.conformance import eventually
from dref_redis import RedisBackend, sessions
from dref_redis.keys import CHANNEL, fence_key, history_key, is_companion, session_key
from dref_redis.sessions import session_arguments


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=redis_server.port)
    yield client
    await client.aclose()


def element() -> str:
    return f"sessions:{uuid.uuid4().hex}"


# How the record is read and written: one `SET … GET` (Redis >= 6.2, this server) or `GET`
# then `SET` (older servers, or `session_set_get = false`).
RECORD_PATHS = pytest.mark.parametrize("swap", [True, False], ids=["set-get", "get-then-set"])


async def open_with(
    open_backend: Callable[..., Any], url: str, swap: bool, **settings: Any
) -> RedisBackend:
    backend: RedisBackend = await open_backend(url, session_set_get=swap, **settings)
    assert backend._swap_records is swap  # redis-server >= 6.2
    return backend


@RECORD_PATHS
async def test_a_duplicate_request_returns_the_recorded_result_without_applying(
    redis_server: RedisServer, open_backend: Callable[..., Any], raw: aioredis.Redis, swap: bool
) -> None:
    backend = await open_with(open_backend, redis_server.url, swap, history=0)
    name = element()
    key = name.encode()
    session = b"ab" * 16
    script = backend._set_if_not_exist.routed
    record = session_key(key, session)

    async def send(value: bytes, request: int) -> Any:
        # The request is the first incomplete one.
        keys, args = session_arguments(
            [key], [value, b"", b"payload", CHANNEL.encode()], record, request, request
        )
        return await script(keys=keys, args=args)

    assert await send(b"a", 7) == 1
    assert await raw.get(record) == b"7;7=1"
    # The same (session, request) again: the recorded answer, and nothing written.
    assert await send(b"b", 7) == 1
    assert await raw.get(key) == b"a"
    # A new request that does not apply (the element exists) is answered, not recorded...
    assert await send(b"c", 8) == 0
    assert await raw.get(record) == b"7;7=1"
    # ...so its resend is evaluated again: it changed nothing the first time.
    await raw.delete(key)
    assert await send(b"d", 8) == 1
    assert await raw.get(key) == b"d"
    # Request 8 was the first incomplete one: the answered request 7 was dropped.
    assert await raw.get(record) == b"8;8=1"


@RECORD_PATHS
async def test_records_of_open_requests_are_kept_until_answered(
    redis_server: RedisServer, open_backend: Callable[..., Any], raw: aioredis.Redis, swap: bool
) -> None:
    """Requests of one session in flight together on one element: each keeps its record while
    an older one is open, and a resend of any of them is answered from it."""
    backend = await open_with(open_backend, redis_server.url, swap, history=0)
    key = element().encode()
    keys = [key, session_key(key, b"cd" * 16)]
    script = backend._set.routed

    async def send(value: bytes, request: int, first: int) -> Any:
        args = [value, b"", b"payload", CHANNEL.encode()]
        return await script(*session_arguments([key], args, keys[1], request, first))

    assert await send(b"a", 10, 10) == 1
    assert await send(b"b", 11, 10) == 1  # 10 is still open: its record stays
    assert await raw.get(keys[1]) == b"10;10=1;11=1"
    assert await send(b"c", 10, 10) == 1  # a resend of 10: answered, not applied
    assert await raw.get(key) == b"b"
    assert await send(b"d", 12, 11) == 1  # 10 answered: dropped; 11 still open: kept
    assert await raw.get(keys[1]) == b"11;11=1;12=1"


@RECORD_PATHS
async def test_a_request_begun_later_that_ran_first_keeps_its_record(
    redis_server: RedisServer, open_backend: Callable[..., Any], raw: aioredis.Redis, swap: bool
) -> None:
    """Request 11 began while 10 was open but ran first: 10 (which began alone) keeps 11's
    record, so a resend of 11 is answered, not applied again."""
    backend = await open_with(open_backend, redis_server.url, swap, history=0)
    key = element().encode()
    keys = [key, session_key(key, b"ab" * 16)]

    async def send(value: bytes, request: int, first: int) -> Any:
        args = [value, b"", b"payload", CHANNEL.encode()]
        return await backend._set.routed(*session_arguments([key], args, keys[1], request, first))

    assert await send(b"b", 11, 10) == 1
    assert await send(b"a", 10, 10) == 1
    assert await raw.get(keys[1]) == b"10;11=1;10=1"
    assert await send(b"b", 11, 10) == 1  # a resend of 11: answered, not applied
    assert await raw.get(key) == b"a"


@RECORD_PATHS
async def test_a_delayed_copy_of_an_answered_request_is_refused(
    redis_server: RedisServer, open_backend: Callable[..., Any], raw: aioredis.Redis, swap: bool
) -> None:
    """A copy of request 10 that runs after 10 was answered and its record dropped (sent on a
    connection given up on, executed after its resend) applies nothing a second time."""
    backend = await open_with(open_backend, redis_server.url, swap, history=0)
    key = element().encode()
    keys = [key, session_key(key, b"ef" * 16)]
    script = backend._set.routed

    async def send(value: bytes, request: int, first: int) -> Any:
        args = [value, b"", b"payload", CHANNEL.encode()]
        return await script(*session_arguments([key], args, keys[1], request, first))

    assert await send(b"a", 10, 10) == 1
    assert await send(b"b", 11, 11) == 1  # 10 was answered: its record is dropped
    assert await raw.get(keys[1]) == b"11;11=1"
    with pytest.raises(ResponseError, match="DREFSTALE request 10"):
        await send(b"a", 10, 10)  # the delayed copy
    assert await raw.get(key) == b"b"  # not set back to a
    assert await raw.get(keys[1]) == b"11;11=1"


@RECORD_PATHS
async def test_a_write_that_raises_leaves_the_record_as_it_was(
    redis_server: RedisServer, open_backend: Callable[..., Any], raw: aioredis.Redis, swap: bool
) -> None:
    """A write that fails with an error reply (a wrong type) applied nothing: its resend is
    evaluated again, not answered as applied, and the session's older record is kept."""
    backend = await open_with(open_backend, redis_server.url, swap, history=0)
    key = element().encode()
    keys = [key, session_key(key, b"ab" * 16)]

    async def swap_value(expected: bytes, value: bytes, request: int) -> Any:
        args = [expected, value, b"", b"payload", CHANNEL.encode()]
        return await backend._cas.routed(*session_arguments([key], args, keys[1], request, request))

    args = [b"x", b"", b"payload", CHANNEL.encode()]
    await backend._set.routed(*session_arguments([key], args, keys[1], 4, 4))
    await raw.delete(key)
    await raw.hset(key, "field", "value")  # not a string: the swap's GET raises WRONGTYPE
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await swap_value(b"x", b"y", 5)
    assert await raw.get(keys[1]) == b"4;4=1"
    await raw.delete(key)
    await raw.set(key, b"x")
    assert await swap_value(b"x", b"y", 5) == [1]  # the resend: evaluated, and applied now
    assert await raw.get(key) == b"y"
    assert await raw.get(keys[1]) == b"5;5={"


async def test_an_applied_answer_other_than_the_expected_one_is_recorded(
    raw: aioredis.Redis,
) -> None:
    """A write expected to answer {1, 0} when it applies that answers {1, 5} (a fair swap with
    waiters ahead) records {1, 5}; a failed one leaves the old record."""
    script = raw.register_script(
        sessions.with_session(
            "return {tonumber(ARGV[1]), tonumber(ARGV[2])}", b"60000", applied="{0"
        )
    )
    key = element().encode()
    keys = [key, session_key(key, b"ab" * 16)]

    async def send(applied: bytes, ahead: bytes, request: int) -> Any:
        return await script(*session_arguments([key], [applied, ahead], keys[1], request, request))

    assert await send(b"1", b"0", 3) == [1, 0]
    assert await raw.get(keys[1]) == b"3;3={0"
    assert await send(b"1", b"5", 4) == [1, 5]
    assert await raw.get(keys[1]) == b"4;4={5"
    assert await send(b"1", b"0", 4) == [1, 5]  # a duplicate: the recorded answer
    assert await send(b"0", b"0", 5) == [0, 0]  # not applied: nothing recorded
    assert await raw.get(keys[1]) == b"4;4={5"
    with pytest.raises(ValueError, match="applied"):
        sessions.with_session("return 1", b"60000", applied="0")


@pytest.mark.parametrize(
    ("info", "swap"),
    [
        ({"redis_version": "6.0.16"}, False),
        ({"redis_version": "6.2.0"}, True),
        ({"redis_version": "7.4.1"}, True),
        ({"redis_version": "unknown"}, False),
        ({"a:1": {"redis_version": "7.0.15"}, "b:2": {"redis_version": "6.0.9"}}, False),
        ({"a:1": {"redis_version": "7.0.15"}, "b:2": {"redis_version": "7.2.4"}}, True),
        (ResponseError("unknown command 'INFO'"), False),
    ],
)
async def test_records_are_swapped_in_one_call_only_where_the_server_has_set_get(
    backend: RedisBackend, info: object, swap: bool
) -> None:
    """`SET … GET` needs Redis 6.2; older servers (or one that hides its version) get the
    two-call path."""

    async def server_command(*args: str) -> Any:
        assert args == ("INFO", "server")
        if isinstance(info, Exception):
            raise info
        return info

    backend._server_command = server_command  # type: ignore[method-assign]
    assert await backend._server_has_set_get() is swap


async def test_recorded_answers_keep_fences_and_tables(
    backend: RedisBackend, raw: aioredis.Redis
) -> None:
    """A lock's fence and a swap's table come back from the record as the script returned them."""
    name = element()
    lost = lose_next_answer(backend)
    grant = await backend.try_lock(name, b"\x00" * 7 + b"\x01", 5)
    assert lost() == 1
    assert grant is not None
    assert grant.fence == int(await raw.get(fence_key(name.encode())))
    await backend.set(name + ":v", b"\x00")
    lost = lose_next_answer(backend)
    assert await backend.fair_compare_and_swap(name + ":v", b"\x00", b"\x01", b"t1") == (
        True,
        b"\x01",
        0,
    )
    assert lost() == 1


async def test_a_lost_answer_is_resent_and_the_write_applied_once(
    backend: RedisBackend, raw: aioredis.Redis
) -> None:
    name = element()
    await backend.set(name, b"\x00")
    lost = lose_next_answer(backend)
    assert await backend.compare_and_set(name, b"\x00", b"\x01")  # not "0 ≠ 1: failed"
    assert lost() == 1
    assert await raw.get(name) == b"\x01"
    keys = [k async for k in raw.scan_iter(match=b"{" + name.encode() + b"}:dref-session:*")]
    assert keys == [session_key(name.encode(), backend._session.id)]
    # Only the last request's answer is kept: the swap's table {1}, recorded as "{".
    last = backend._session.first_incomplete() - 1
    assert await raw.get(keys[0]) == b"%d;%d={" % (last, last)


async def test_a_write_sends_the_first_incomplete_request_only_while_another_is_open(
    backend: RedisBackend, raw: aioredis.Redis
) -> None:
    """Alone, a write sends its request number only; while an older request of the session is
    open, that one's number too (and the session key twice), and its record is kept above it."""
    name = element()
    record = session_key(name.encode(), backend._session.id)
    sent: list[tuple[list[bytes], list[bytes]]] = []
    real = backend._send

    async def spy(script: Any, keys: list[bytes], args: list[bytes]) -> Any:
        sent.append((keys, args))
        return await real(script, keys, args)

    backend._send = spy  # type: ignore[method-assign]
    older, _ = backend._session.begin()  # still open
    await backend.set(name, b"\x01")
    assert sent[-1][0][-3:] == [history_key(name.encode()), record, record]
    assert sent[-1][1][-2:] == [b"%d" % older, b"%d" % (older + 1)]
    assert await raw.get(record) == b"%d;%d=1" % (older, older + 1)
    backend._session.end(older)
    await backend.set(name, b"\x02")
    assert sent[-1][0][-2:] == [history_key(name.encode()), record]
    assert sent[-1][1][-1] == b"%d" % (older + 2)
    assert await raw.get(record) == b"%d;%d=1" % (older + 2, older + 2)


async def test_the_session_record_expires_after_session_idle(
    redis_server: RedisServer, open_backend: Callable[..., Any], raw: aioredis.Redis
) -> None:
    backend: RedisBackend = await open_backend(redis_server.url, session_idle=0.3)
    name = element()
    await backend.set(name, b"\x01")
    record = session_key(name.encode(), backend._session.id)
    assert 0 < await raw.pttl(record) <= 300

    async def gone() -> bool:
        return not await raw.exists(record)

    await eventually(gone, timeout=5.0, what="the session record expired")
    assert await raw.get(name) == b"\x01"


async def test_an_unknown_outcome_is_resent_until_op_timeout_then_raised(
    redis_server: RedisServer, open_backend: Callable[..., Any]
) -> None:
    backend: RedisBackend = await open_backend(redis_server.url, op_timeout=0.3)
    attempts: list[list[bytes]] = []

    async def unreachable(script: Any, keys: list[bytes], args: list[bytes]) -> Any:
        attempts.append(args)
        raise RedisConnectionError("test: connection dropped")

    backend._send = unreachable  # type: ignore[method-assign]
    with pytest.raises(BackendUnavailableError, match="connection dropped"):
        await backend.set(element(), b"\x01")
    assert len(attempts) > 1
    assert all(args == attempts[0] for args in attempts)  # the same request number each time


async def test_other_errors_are_not_resent(backend: RedisBackend) -> None:
    attempts = 0
    real = backend._send

    async def refused(script: Any, keys: list[bytes], args: list[bytes]) -> Any:
        nonlocal attempts
        attempts += 1
        return await real(script, keys[:1], args)  # wrong arity: the script raises an error

    backend._send = refused  # type: ignore[method-assign]
    with pytest.raises(Exception, match="set"):
        await backend.set(element(), b"\x01")
    assert attempts == 1


async def test_without_exactly_once_writes_are_as_before(
    redis_server: RedisServer, open_backend: Callable[..., Any], raw: aioredis.Redis
) -> None:
    backend: RedisBackend = await open_backend(redis_server.url, exactly_once=False)
    assert not backend.capabilities.exactly_once
    name = element()
    await backend.set(name, b"\x01")
    assert await backend.set_if_not_exist(element(), b"\x01")
    assert await backend.compare_and_set(name, b"\x01", b"\x02")
    assert await backend.expire(name, 30)  # upstream's plain PEXPIRE
    assert 0 < await raw.pttl(name) <= 30_000
    assert await backend.try_lock(name + ":lock", b"\x00" * 7 + b"\x01", 5) is not None
    assert await backend.release_lock(name + ":lock", b"\x00" * 7 + b"\x01")
    await backend.delete(name)
    assert [k async for k in raw.scan_iter(match=b"*" + name.encode() + b"*dref-session*")] == []


@pytest.mark.parametrize("key", [b"a", b"{tag}b", b"c}d", b""])
def test_session_keys_are_companions_not_elements(key: bytes) -> None:
    record = session_key(key, b"0f" * 16)
    assert is_companion(record)
    assert not is_companion(record[:-1])  # not a session id: an element's name
    assert not is_companion(b"x:dref-session:" + b"0f" * 16)
