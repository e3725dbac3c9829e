"""Exactly-once writes on Redis: a per-session record of the writes that applied, kept by scripts.

Every context (`RedisBackend`) is a session with a random 16-byte id (hex) and a request counter.
With `exactly_once` on, each write script is wrapped by `with_session`: it takes two extra
trailing arguments — the session key (last KEYS entry) and the request number (last ARGV
entry) — and, when another request of the session is open, the session's first incomplete
request number (otherwise the request itself) as a third: then the session key is sent twice
(the last two KEYS entries, so the script can tell) and the number comes just before the
request's (`session_arguments`; the idle time is part of the script). Atomically, it:

- if the session key records the request number, returns the recorded answer and applies
  nothing (a duplicate: the answer of the first attempt was lost);
- otherwise runs the write and, when it applied, records its answer under the request number,
  drops the records below the first incomplete request (their answers have arrived) and sets
  the session key to expire after the idle time: one `GET` and one `SET … PX` more per write.

When the write's answer when it applies is known beforehand (`applied`: 1 for a `set`, `{1}`
for a swap; not a lock's fence) and no other request of the session was open when this one
began, the new record usually does not depend on the old one, so the wrapper writes it and
reads the old one in one `SET … PX … GET` (Redis >= 6.2) before the write: one call more per
write instead of two. When the old record holds requests begun after this one that ran first,
the record with them kept is written again after the write. It
puts the old record back (`SET … PX`, or `DEL` when there was none) when the old one shows a
duplicate or a delayed copy, when the write did not apply, and when the write raised an error
(the wrapper runs it under `pcall` and raises the error again), so what it leaves is what the
two-call path leaves, except that a kept record's expiry restarts.

The usual write takes a plain path: no old record, or the record `<f>;<f>=<answer>` of one
request below the first incomplete one (answered: nothing in it to answer, refuse or keep, told
by one `string.match`), and a write that applied with the expected answer returns right after
it. Everything else — duplicates, delayed copies, records kept, other answers, errors — takes
the general path, whose helper functions are built only then.

Only what a duplicate needs is recorded: a write that did not apply (a failed compare, a held
lock, a stale fence) changed nothing, so its resend is evaluated again, which is as valid an
answer as the first one's; nothing is written for it. A write script's result therefore says
whether it applied: a non-zero number (recorded as it is: a lock's fence, `1`), or a table whose
first element is 1 and whose other elements are numbers (recorded as `{` and the others); 0,
false and any other table mean "not applied".

A request below the session's first incomplete request as last recorded (the record's leading
number) is refused with a `DREFSTALE` error and applies nothing: its answer has arrived and
its record may be gone, so it can only be a delayed copy (sent on a connection given up on and
executed after its resend), which must not apply a second time.

The session key is a string named after the element's key, `keys.session_key`, so it is in the
element's Redis Cluster slot: one small key per (element, session) holding
`<first incomplete>` then `;<request>=<answer>`
for each recorded request not yet known to be answered (one, when the session writes the
element from one task), which expires when the session has not written the element for
`session_idle`. The wrapper removes its extra arguments before the write runs, so the write sees
exactly its own KEYS and ARGV (and the history stream of `dref_redis.revisions` stays their last
entry). Upstream's keys and notifications are unchanged; upstream clients never read session
keys.
"""

from __future__ import annotations

import re
import secrets

__all__ = ["WriteSession", "session_arguments", "with_session"]

# The wrapper, in three parts around the write. Python fills in `dref_guess` (the recorded
# answer expected when the write applies, or false), the idle time and `{applied_check}`.
# Helper functions are defined only on the general path: every `local function` costs the
# server a closure on each run, and the usual write takes the plain path above them.
_PROLOGUE = """
local dref_n = #KEYS
local dref_session = KEYS[dref_n]
KEYS[dref_n] = nil
local dref_m = #ARGV
local dref_request = ARGV[dref_m]
ARGV[dref_m] = nil
local dref_first = dref_request
if KEYS[dref_n - 1] == dref_session then
  KEYS[dref_n - 1] = nil
  dref_first = ARGV[dref_m - 1]
  ARGV[dref_m - 1] = nil
end
local dref_record, dref_new
if dref_guess and dref_first == dref_request then
  dref_new = dref_request .. ';' .. dref_request .. '=' .. dref_guess
  dref_record = redis.call('SET', dref_session, dref_new, 'PX', dref_idle, 'GET')
else
  dref_record = redis.call('GET', dref_session)
end
-- Plain: no old record, or the usual `<f>;<f>=<answer>` with f below the first incomplete
-- request (answered: nothing in it to answer, refuse or keep).
local dref_plain = not dref_record
if dref_record then
  local f = string.match(dref_record, '^(%d+);%1=[^;]*$')
  dref_plain = f and (#f < #dref_first or (#f == #dref_first and f < dref_first))
end
local function dref_write()
"""

_FAST = """
end
local dref_ok, dref_result
if dref_plain then
  if dref_new then
    dref_ok, dref_result = pcall(dref_write)
    if dref_ok and {applied_check} then
      return dref_result
    end
  else
    dref_ok, dref_result = true, dref_write()
  end
end
"""

_GENERAL = """
local function dref_recorded(result)
  if type(result) == 'number' then
    if result ~= 0 then
      return string.format('%d', result)
    end
  elseif type(result) == 'table' and result[1] == 1 then
    local rest = {}
    for i = 2, #result do
      rest[i - 1] = string.format('%d', result[i])
    end
    return '{' .. table.concat(rest, ',')
  end
  return nil
end
local function dref_restore()
  if dref_record then
    redis.call('SET', dref_session, dref_record, 'PX', dref_idle)
  else
    redis.call('DEL', dref_session)
  end
end
local dref_kept = ''
local dref_floor = dref_first
if not dref_plain then
  -- Decimal numbers without leading zeros, compared without converting them (strtod).
  local function below(a, b)
    return #a < #b or (#a == #b and a < b)
  end
  local at = string.find(dref_record, ';' .. dref_request .. '=', 1, true)
  if at then
    if dref_new then
      dref_restore()
    end
    local record = string.match(dref_record, '=([^;]*)', at)
    if string.sub(record, 1, 1) ~= '{' then
      return tonumber(record)
    end
    local result = {1}
    for n in string.gmatch(record, '-?%d+') do
      result[#result + 1] = tonumber(n)
    end
    return result
  end
  local floor = string.match(dref_record, '^%d+')
  if floor then
    if below(dref_request, floor) then
      if dref_new then
        dref_restore()
      end
      return redis.error_reply('DREFSTALE request ' .. dref_request ..
        ' of this session was answered already (a delayed copy): not applied')
    end
    if below(dref_first, floor) then
      dref_floor = floor
    end
  end
  -- Keep the records from the first incomplete request up (requests begun after this one may
  -- have run first).
  local first = tonumber(dref_first)
  for request, answer in string.gmatch(dref_record, ';(%d+)=([^;]*)') do
    if tonumber(request) >= first then
      dref_kept = dref_kept .. ';' .. request .. '=' .. answer
    end
  end
  if dref_new then
    dref_ok, dref_result = pcall(dref_write)
  else
    dref_ok, dref_result = true, dref_write()
  end
end
if not dref_ok then
  dref_restore()
  error(dref_result, 0)
end
local dref_answer_now = dref_recorded(dref_result)
if dref_answer_now ~= (dref_new and dref_guess) or (dref_answer_now and dref_kept ~= '') then
  if dref_answer_now then
    local record = dref_floor .. dref_kept .. ';' .. dref_request .. '=' .. dref_answer_now
    redis.call('SET', dref_session, record, 'PX', dref_idle)
  elseif dref_new then
    dref_restore()
  end
end
return dref_result
"""

_ANSWER = re.compile(r"\{?(-?\d+(,-?\d+)*)?")


def _applied_check(applied: str) -> str:
    """A Lua condition: `dref_result` is the answer recorded as `applied`."""
    if not applied.startswith("{"):
        return f"dref_result == {applied}"
    parts = ["type(dref_result) == 'table'", "dref_result[1] == 1"]
    numbers = applied[1:].split(",") if len(applied) > 1 else []
    parts += [f"dref_result[{i}] == {n}" for i, n in enumerate(numbers, start=2)]
    parts.append(f"dref_result[{len(numbers) + 2}] == nil")
    return " and ".join(parts)


def with_session(source: str, idle: bytes, applied: str | None = None) -> str:
    """`source` (a write script) that answers a duplicate of an applied request with its
    recorded answer; a record lives `idle` (milliseconds, as `PX` takes them) after the
    session's last write of the element.

    `applied` is the recorded form of the answer `source` gives when it applies (`"1"` for
    1, `"{"` for `{1}`, `"{0"` for `{1, 0}`), when that is (nearly) always the same: then the
    record is written and the old one read in one `SET … PX … GET` (Redis ≥ 6.2) before the
    write, put back when the write did not apply and rewritten when it applied with another
    answer. `None`: one `GET` before and one `SET … PX` after the write."""
    if not idle.isdigit():
        raise ValueError(f"idle: {idle!r} is not a number of milliseconds")
    if applied is None:
        guess, check = "false", "false"
    elif _ANSWER.fullmatch(applied) and applied not in ("", "0"):
        guess, check = f"'{applied}'", _applied_check(applied)
    else:
        raise ValueError(f"applied: {applied!r} is not a recorded answer of a write that applied")
    head = f"local dref_guess, dref_idle = {guess}, '{idle.decode()}'"
    return head + _PROLOGUE + source + _FAST.replace("{applied_check}", check) + _GENERAL


def session_arguments(
    keys: list[bytes], args: list[bytes], session: bytes, request: int, first: int
) -> tuple[list[bytes], list[bytes]]:
    """`keys` and `args` of a write with the session's extra arguments (for the request
    `request` whose session's first incomplete request is `first`) appended, as `with_session`
    takes them (`RedisBackend._run`)."""
    number = b"%d" % request
    if first == request:
        return [*keys, session], [*args, number]
    return [*keys, session, session], [*args, b"%d" % first, number]


class WriteSession:
    """A context's session id and request numbers; tracks which requests are still open."""

    def __init__(self) -> None:
        self.id = secrets.token_hex(16).encode()
        self._next = 1
        self._open: set[int] = set()

    def begin(self) -> tuple[int, int]:
        """A new request number, open until `end`, and the first incomplete request number
        (the smallest open one): every result recorded below it has been answered and may be
        dropped."""
        request = self._next
        self._next = request + 1
        opened = self._open
        opened.add(request)
        return request, (min(opened) if len(opened) > 1 else request)

    def end(self, request: int) -> None:
        """The request's outcome is known (answered, or given up on)."""
        self._open.discard(request)

    def first_incomplete(self) -> int:
        """The smallest open request number (the next one when none is open)."""
        return min(self._open) if self._open else self._next
