"""Exactly-once writes on Redis: a per-session record of each write's result, kept by the script.

Every context (`RedisBackend`) is a session with a random 16-byte id (hex) and a request counter.
With `exactly_once` on, each write script is wrapped by `with_session`: it takes four extra
trailing arguments — the session key (last KEYS entry), the request number, the session's first
incomplete request number and the idle time in ms (last three ARGV entries) — and, atomically:

- if the session key already records the request number, returns the recorded result and
  applies nothing (a duplicate: the answer of the first attempt was lost);
- otherwise runs the write, records its result (MessagePack) under the request number, drops
  the recorded results below the first incomplete request (their answers have arrived) and
  sets the session key to expire after the idle time.

The session key is a hash named after the element's key, `keys.session_key`, so it is in the
element's Redis Cluster slot: one small hash per (element, session), which expires when the
session has not written the element for `session_idle`. The wrapper removes its extra arguments
before the write runs, so the write sees exactly its own KEYS and ARGV (and the history stream
of `dref_redis.revisions` stays their last entry). Upstream's keys and notifications are
unchanged; upstream clients never read session keys.
"""

from __future__ import annotations

import secrets

__all__ = ["WriteSession", "with_session"]

_PROLOGUE = """
local dref_session = table.remove(KEYS)
local dref_idle = table.remove(ARGV)
local dref_first = tonumber(table.remove(ARGV))
local dref_request = table.remove(ARGV)
local dref_recorded = redis.call('HGET', dref_session, dref_request)
if dref_recorded then
  return cmsgpack.unpack(dref_recorded)
end
local function dref_write()
"""

_EPILOGUE = """
end
local dref_result = dref_write()
redis.call('HSET', dref_session, dref_request, cmsgpack.pack(dref_result))
for _, field in ipairs(redis.call('HKEYS', dref_session)) do
  if tonumber(field) < dref_first then
    redis.call('HDEL', dref_session, field)
  end
end
redis.call('PEXPIRE', dref_session, dref_idle)
return dref_result
"""


def with_session(source: str) -> str:
    """`source` (a write script) that answers a duplicate request with its recorded result."""
    return _PROLOGUE + source + _EPILOGUE


class WriteSession:
    """A context's session id and request numbers; tracks which requests are still open."""

    def __init__(self) -> None:
        self.id = secrets.token_hex(16).encode()
        self._next = 1
        self._open: set[int] = set()

    def begin(self) -> int:
        """A new request number, open until `end`."""
        request = self._next
        self._next += 1
        self._open.add(request)
        return request

    def end(self, request: int) -> None:
        """The request's outcome is known (answered, or given up on)."""
        self._open.discard(request)

    def first_incomplete(self) -> int:
        """The smallest open request number (the next one when none is open): every result
        recorded below it has been answered and may be dropped."""
        return min(self._open) if self._open else self._next
