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
    "SET_IF_ABSENT",
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

SET_IF_ABSENT = """
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

TRY_LOCK = """
-- KEYS: lock key, fence key, wanted key; ARGV: token, px, payload, channel, wanted px. Returns
-- the fence, or nil when the lock is held (then marks it wanted, for the holder's release).
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[5])
  return false
end
local fence = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[4], ARGV[3])
return fence
"""

REFRESH_LOCK = """
-- KEYS: lock key; ARGV: token, px. 1 iff the lock is still ours and was extended.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

RELEASE_LOCK = """
-- KEYS: lock key, wanted key; ARGV: token, payload, channel. 0 if the lock was not ours; else it
-- is deleted with its wanted mark: 2 if a waiter had marked it, 1 if nobody had.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local deleted = redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[3], ARGV[2])
return deleted
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
