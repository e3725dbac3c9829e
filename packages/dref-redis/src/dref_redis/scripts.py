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
