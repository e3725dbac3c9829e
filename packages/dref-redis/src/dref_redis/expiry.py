"""Delete events for keys that expire by TTL: Redis keyspace notifications, never turned on
behind the user's back.

Redis publishes `__keyevent@<db>__:expired` (the expired key's name) only when the server's
`notify-keyspace-events` holds `E` (key-event channels) and `x` (expired events; `A` includes
it). That is a server-wide setting that costs every client some CPU, so dref does not change it
unless told to (`RedisSettings.expiry_events`):

- `"detect"` (default): read it at open (`CONFIG GET`); where it already publishes expired events
  the backend listens and claims `expiry_events`; elsewhere (or where `CONFIG` is refused, as on
  many managed services) it claims nothing and changes nothing;
- `"configure"`: as detect, but add `Ex` to the flags (keeping the others) when they lack it,
  logged as a warning; a server that refuses `CONFIG` is a `ConfigurationError`;
- `"off"`: never listen, never claim.

Redis Cluster publishes keyspace notifications on the node that owns the key only, and the
listener reads one node: there the backend never claims `expiry_events`. Upstream's keys and its
`dref-change` channel are untouched: the event is produced by each dref listener for its own
subscribers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ResponseError

from dref.errors import ConfigurationError
from dref_redis.settings import RedisSettings

__all__ = ["SETTING", "expired_channel", "publishes_expired", "set_up_expiry_events"]

log = logging.getLogger("dref_redis.expiry")

SETTING = "notify-keyspace-events"


def expired_channel(db: int) -> str:
    """The key-event channel on which Redis publishes the names of keys that expired."""
    return f"__keyevent@{db}__:expired"


def publishes_expired(flags: str) -> bool:
    """Whether `notify-keyspace-events` flags publish expired events on key-event channels."""
    return "E" in flags and ("x" in flags or "A" in flags)


async def set_up_expiry_events(
    settings: RedisSettings, command: Callable[..., Awaitable[Any]]
) -> bool:
    """Detect (or, with `"configure"`, enable) expired key events; True when they are on.

    `command(*args)` runs one Redis command and returns its reply.
    """
    mode = settings.expiry_events
    if mode == "off" or settings.cluster:
        return False
    where = settings.describe()
    try:
        reply = await command("CONFIG", "GET", SETTING)
    except ResponseError as exc:
        if mode == "configure":
            raise ConfigurationError(
                f"redis expiry_events='configure': {where} refuses CONFIG GET {SETTING} ({exc}); "
                f"set {SETTING} to include 'Ex' on the server and use expiry_events='detect'"
            ) from exc
        log.info("dref-redis: %s refuses CONFIG GET (%s): no expiry events", where, exc)
        return False
    flags = _flags_of(reply)
    if publishes_expired(flags):
        return True
    if mode == "detect":
        return False
    wanted = flags + "".join(f for f in "Ex" if f not in flags)
    try:
        await command("CONFIG", "SET", SETTING, wanted)
    except ResponseError as exc:
        raise ConfigurationError(
            f"redis expiry_events='configure': {where} refuses CONFIG SET {SETTING} ({exc})"
        ) from exc
    log.warning(
        "dref-redis: expiry_events='configure': set %s on %s from %r to %r",
        SETTING,
        where,
        flags,
        wanted,
    )
    return True


def _flags_of(reply: Any) -> str:
    """`CONFIG GET` answers a flat list (RESP2) or a map (RESP3) of name and value."""
    values = list(reply.values()) if isinstance(reply, dict) else list(reply)[1::2]
    value = values[0] if values else b""
    return value.decode() if isinstance(value, bytes) else str(value)
