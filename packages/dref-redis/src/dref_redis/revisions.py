"""Per-element revisions on Redis: a bounded change history beside upstream's keys and channel.

With `history = N > 0`, every write script that publishes a change also, in the same atomic
step, appends the change to the element's history stream `<key>:dref-rev` (a companion key in
the key's cluster slot, `keys.history_key`) with the explicit id `0-<revision>`, where the
revision counts the element's changes from 1, trims the stream to its last N entries, and
publishes `[key, revision]` on the dref-only channel `dref-rev` just before upstream's
notification on `dref-change`. The element's key and upstream's notification stay byte for
byte what upstream writes; upstream clients ignore the stream and the extra channel.

Readers pair each `dref-rev` message with the next `dref-change` notification of the same key
(a script runs atomically, so the two are adjacent for that key), which gives live events
their revision; `replay` reads the stream to resume from a revision, and `RESYNC_SINCE`
re-publishes it on a listener's private channel after a reconnect, ordered with the key's
notifications. A change written by an upstream client has no revision (0) and is not in the
history.
"""

from __future__ import annotations

from typing import Any

from dref.changes import ChangeEvent
from dref.errors import ChangeStreamLaggedError

__all__ = [
    "BASE",
    "GET_WITH_REVISION",
    "RESYNC_SINCE",
    "REVISION_CHANNEL",
    "replay",
    "revision_of",
    "with_history",
]

REVISION_CHANNEL = "dref-rev"

_PUBLISH = "redis.call('PUBLISH', "

_LAST_REVISION = """
local function dref_last_revision(stream)
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if last then
    return tonumber(string.sub(last[1], 3))
  end
  return 0
end
"""

_HELPER = (
    _LAST_REVISION
    + """
-- The last KEYS entry is the element's history stream, the last ARGV entry its length.
local function dref_publish(channel, payload)
  local stream = KEYS[#KEYS]
  local revision = dref_last_revision(stream) + 1
  redis.call('XADD', stream, 'MAXLEN', ARGV[#ARGV], '0-' .. revision, 'p', payload)
  redis.call('PUBLISH', '"""
    + REVISION_CHANNEL
    + """', cmsgpack.pack({KEYS[1], revision}))
  redis.call('PUBLISH', channel, payload)
end
"""
)


def with_history(source: str) -> str:
    """`source` (a write script whose KEYS[1] is the element) recording its changes: each
    `redis.call('PUBLISH', channel, payload)` becomes `dref_publish(channel, payload)`. Run it
    with the history stream appended to KEYS and the history length appended to ARGV."""
    if _PUBLISH not in source:
        raise ValueError("not a write script: it publishes no change")
    return _HELPER + source.replace(_PUBLISH, "dref_publish(")


GET_WITH_REVISION = (
    _LAST_REVISION
    + """
-- KEYS: key, history stream. {value or false, the revision of the element's last change}.
return {redis.call('GET', KEYS[1]), dref_last_revision(KEYS[2])}
"""
)

BASE = (
    _LAST_REVISION
    + """
-- KEYS: key, history stream; ARGV: private channel. Publishes [key, -2, revision]: every
-- notification of the key before it is at most that revision, every later one above it.
redis.call('PUBLISH', ARGV[1], cmsgpack.pack({KEYS[1], -2, dref_last_revision(KEYS[2])}))
return 1
"""
)

RESYNC_SINCE = """
-- KEYS: key, history stream; ARGV: private channel, since. Publishes, ordered with the key's
-- notifications, [key, revision, payload] for every recorded change after `since`, the end
-- marker [key, -1, false] and a plain resync marker [key, value or false] (which catches a
-- write of an upstream client, not in the history); or, when the history no longer reaches
-- back to `since`, only the gap marker [key, since, false].
local since = tonumber(ARGV[2])
local entries = redis.call('XRANGE', KEYS[2], '0-' .. (since + 1), '+')
local first = entries[1]
if first and tonumber(string.sub(first[1], 3)) > since + 1 then
  redis.call('PUBLISH', ARGV[1], cmsgpack.pack({KEYS[1], since, false}))
  return 0
end
for _, entry in ipairs(entries) do
  local revision = tonumber(string.sub(entry[1], 3))
  redis.call('PUBLISH', ARGV[1], cmsgpack.pack({KEYS[1], revision, entry[2][2]}))
end
redis.call('PUBLISH', ARGV[1], cmsgpack.pack({KEYS[1], -1, false}))
redis.call('PUBLISH', ARGV[1], cmsgpack.pack({KEYS[1], redis.call('GET', KEYS[1])}))
return #entries
"""


def revision_of(entry_id: bytes) -> int:
    """The revision of a history entry id `0-<revision>`."""
    return int(entry_id.split(b"-", 1)[1])


def replay(
    name: str,
    since: int,
    entries: list[Any],
    decode: Any,
) -> list[ChangeEvent]:
    """The changes of `name` after `since` from an `XRANGE <stream> 0-<since+1> +` reply, as
    events named `name`; `ChangeStreamLaggedError` when the stream was trimmed past `since`."""
    events: list[ChangeEvent] = []
    for entry_id, fields in entries:
        revision = revision_of(entry_id)
        if not events and revision > since + 1:
            raise ChangeStreamLaggedError(name, 0, since=since)
        payload = _field(fields, b"p")
        events.append(ChangeEvent(name, decode(payload).value, revision))
    return events


def _field(fields: Any, wanted: bytes) -> bytes:
    if isinstance(fields, dict):
        value = fields[wanted]
    else:
        pairs = list(fields)
        value = dict(zip(pairs[::2], pairs[1::2], strict=True))[wanted]
    assert isinstance(value, bytes)
    return value
