"""The Lua scripts: every write and its change notification happen in one atomic step.

Running the write and its PUBLISH in one script means notifications leave Redis in commit order,
which two separate commands from concurrent writers cannot promise. Each script is run with
EVALSHA and loaded on NOSCRIPT (redis-py `Script` objects do that). A TTL argument of `""` means
no expiry; otherwise it is milliseconds.
"""

from __future__ import annotations

__all__ = [
    "BARRIER",
    "COMPARE_AND_SET",
    "DELETE",
    "EXPIRE",
    "FAIR_COMPARE_AND_SET",
    "FENCED_COMPARE_AND_SET",
    "FENCED_DELETE",
    "FENCED_SET",
    "LEAVE_LINE",
    "REFRESH_LOCK",
    "RELEASE_LOCK",
    "RESYNC",
    "SET",
    "SET_IF_NOT_EXIST",
    "TRY_LOCK",
]

_SET_VALUE = """
local function set_value(key, value, px)
  if px == '' then
    redis.call('SET', key, value)
  else
    redis.call('SET', key, value, 'PX', px)
  end
end
"""

SET = (
    _SET_VALUE
    + """
-- KEYS: key; ARGV: value, px, payload, channel
set_value(KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[3])
return 1
"""
)

SET_IF_NOT_EXIST = """
-- KEYS: key; ARGV: value, px, payload, channel
local ok
if ARGV[2] == '' then
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX')
else
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
end
if not ok then
  return 0
end
redis.call('PUBLISH', ARGV[4], ARGV[3])
return 1
"""

DELETE = """
-- KEYS: key; ARGV: payload, channel. Upstream publishes the delete even if nothing was deleted.
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 1
"""

COMPARE_AND_SET = (
    _SET_VALUE
    + """
-- KEYS: key; ARGV: expected, value, px, payload, channel. {1} when written, else {0, current}
-- (current absent when the key is missing), so a failed swap needs no extra GET.
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return {0, current}
end
set_value(KEYS[1], ARGV[2], ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[4])
return {1}
"""
)

# The waiters of a lock key, oldest first: a sorted set of tokens scored by their arrival and a
# hash of the same tokens to the time until which each counts as alive (server time in µs, exact
# in a Lua number). A failed attempt joins the queue (or keeps its place) and renews the waiter's
# life; the lock is free only for the oldest live waiter, or for anyone when nobody waits. Dead
# waiters are dropped when they reach the head; both keys expire when nobody has attempted for
# one waiter's life.
_QUEUE = """
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- The oldest live waiter of queue q with lives h (dropping the dead before it), or nil.
local function live_head(q, h, now)
  while true do
    local head = redis.call('ZRANGE', q, 0, 0)[1]
    if not head then
      return nil
    end
    local alive = tonumber(redis.call('HGET', h, head))
    if alive and alive >= now then
      return head
    end
    redis.call('ZREM', q, head)
    redis.call('HDEL', h, head)
  end
end
"""

TRY_LOCK = (
    _QUEUE
    + """
-- KEYS: lock key, fence key, queue, lives; ARGV: token, px, payload, channel, waiter life (ms).
-- Returns the fence, or false when the lock is held or another waiter is first in line.
local token = ARGV[1]
local now, head
if redis.call('EXISTS', KEYS[3]) == 1 then
  now = now_us()
  head = live_head(KEYS[3], KEYS[4], now)
end
if (head == nil or head == token) and redis.call('SET', KEYS[1], token, 'NX', 'PX', ARGV[2]) then
  if head then
    redis.call('ZREM', KEYS[3], token)
    redis.call('HDEL', KEYS[4], token)
  end
  local fence = redis.call('INCR', KEYS[2])
  redis.call('PUBLISH', ARGV[4], ARGV[3])
  return fence
end
now = now or now_us()
redis.call('ZADD', KEYS[3], 'NX', now, token)
redis.call('HSET', KEYS[4], token, now + 1000 * tonumber(ARGV[5]))
redis.call('PEXPIRE', KEYS[3], ARGV[5])
redis.call('PEXPIRE', KEYS[4], ARGV[5])
return false
"""
)

# The element's line of contended swaps: waiter `t` of queue q waits for its turn on the list
# `q .. ':turn:' .. t` (it shares q's hash tag, so q's slot), where the swap or leave that makes
# it the head pushes the value it left.
_TURN = """
local function hand_to_head(q, h, now, value, life)
  local head = live_head(q, h, now)
  if head then
    local turn = q .. ':turn:' .. head
    redis.call('DEL', turn)
    redis.call('RPUSH', turn, value or '')
    redis.call('PEXPIRE', turn, life)
  end
end
"""

FAIR_COMPARE_AND_SET = (
    _QUEUE
    + _TURN
    + """
-- KEYS: key, queue, lives (the element's line, as a lock's); ARGV: expected, value, payload,
-- channel, ticket, waiter life (ms), rejoin ('1' or ''). Swaps iff the value is `expected` and
-- nobody waits or the ticket is the oldest live waiter; then the new head's turn comes and,
-- with rejoin, the ticket goes back in line behind everyone still waiting: {1, waiters ahead
-- of it (0: not in line)}. Otherwise the ticket joins the line (or keeps its place, alive for
-- one more waiter life): {0, waiters ahead of it, current value}.
local ticket = ARGV[5]
local now, head
if redis.call('EXISTS', KEYS[2]) == 1 then
  now = now_us()
  head = live_head(KEYS[2], KEYS[3], now)
end
local current = redis.call('GET', KEYS[1])
if (head == nil or head == ticket) and current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  local ahead = 0
  if head then
    redis.call('ZREM', KEYS[2], ticket)
    redis.call('HDEL', KEYS[3], ticket)
    redis.call('DEL', KEYS[2] .. ':turn:' .. ticket)
    hand_to_head(KEYS[2], KEYS[3], now, ARGV[2], ARGV[6])
    if ARGV[7] == '1' then
      local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
      if last[2] then
        redis.call('ZADD', KEYS[2], math.max(now, tonumber(last[2]) + 1), ticket)
        redis.call('HSET', KEYS[3], ticket, now + 1000 * tonumber(ARGV[6]))
        redis.call('PEXPIRE', KEYS[2], ARGV[6])
        redis.call('PEXPIRE', KEYS[3], ARGV[6])
        ahead = redis.call('ZRANK', KEYS[2], ticket)
      end
    end
  end
  redis.call('PUBLISH', ARGV[4], ARGV[3])
  return {1, ahead}
end
now = now or now_us()
redis.call('ZADD', KEYS[2], 'NX', now, ticket)
redis.call('HSET', KEYS[3], ticket, now + 1000 * tonumber(ARGV[6]))
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('PEXPIRE', KEYS[3], ARGV[6])
return {0, redis.call('ZRANK', KEYS[2], ticket), current}
"""
)

LEAVE_LINE = (
    _QUEUE
    + _TURN
    + """
-- KEYS: queue, lives, key; ARGV: ticket, waiter life (ms). A waiter of the element's line that
-- stops trying; if it was the head, the next one's turn comes.
local now = now_us()
local head = live_head(KEYS[1], KEYS[2], now)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1] .. ':turn:' .. ARGV[1])
if head == ARGV[1] then
  hand_to_head(KEYS[1], KEYS[2], now, redis.call('GET', KEYS[3]), ARGV[2])
end
return 1
"""
)

# Fenced writes: the lock's fence counter (`{lock}:dref-fence`, INCR'd by every acquisition)
# must still be the caller's fence, checked in the script that writes. A stale fence returns
# {-1, the counter} and writes nothing.
_FENCE = """
local function stale(fence_key, fence)
  local current = tonumber(redis.call('GET', fence_key) or '0')
  if current ~= tonumber(fence) then
    return current
  end
  return nil
end
"""

FENCED_SET = (
    _SET_VALUE
    + _FENCE
    + """
-- KEYS: key, lock's fence key; ARGV: value, px, payload, channel, fence, if absent ('1' or '').
-- {1} written, {0} not written (it exists and `if absent`), {-1, newer fence}.
local newer = stale(KEYS[2], ARGV[5])
if newer then
  return {-1, newer}
end
if ARGV[6] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  return {0}
end
set_value(KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[3])
return {1}
"""
)

FENCED_COMPARE_AND_SET = (
    _FENCE
    + """
-- KEYS: key, lock's fence key; ARGV: expected, value, payload, channel, fence.
-- {1} written, {0, current} when the value is not `expected`, {-1, newer fence}.
local newer = stale(KEYS[2], ARGV[5])
if newer then
  return {-1, newer}
end
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return {0, current}
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[3])
return {1}
"""
)

FENCED_DELETE = (
    _FENCE
    + """
-- KEYS: key, lock's fence key; ARGV: payload, channel, fence. {1} deleted, {-1, newer fence}.
local newer = stale(KEYS[2], ARGV[3])
if newer then
  return {-1, newer}
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return {1}
"""
)

EXPIRE = """
-- KEYS: key; ARGV: px. 1 when the key exists and its TTL was set, else 0 (as PEXPIRE; a script
-- only so that exactly-once writes can record it, `dref_redis.sessions`).
return redis.call('PEXPIRE', KEYS[1], ARGV[1])
"""

REFRESH_LOCK = """
-- KEYS: lock key; ARGV: token, px. 1 iff the lock is still ours and was extended.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

RELEASE_LOCK = """
-- KEYS: lock key, queue, lives; ARGV: token, payload, channel. 1 if the lock was ours and is
-- deleted; else 0, and the token leaves the queue (a waiter that gives up releases this way).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1
"""

RESYNC = """
-- KEYS: key; ARGV: private channel. Publishes [key, value or false] as a marker that is ordered
-- with the key's change notifications on the subscriber's connection.
local value = redis.call('GET', KEYS[1])
redis.call('PUBLISH', ARGV[1], cmsgpack.pack({KEYS[1], value}))
return 1
"""

BARRIER = """
-- KEYS: key (only to run on its shard); ARGV: private channel, message. In Redis Cluster the
-- message then travels to the subscriber's node behind the key's earlier notifications.
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""
