"""Redis backend for dref, wire-compatible with the Scala and Rust DRef.

Select it with `DREF_BACKEND=redis` and configure it with `DREF_REDIS_*` (see `RedisSettings`).
"""

from dref_redis.backend import RedisBackend
from dref_redis.errors import RedisUnreachableError
from dref_redis.settings import RedisSettings

__all__ = ["RedisBackend", "RedisSettings", "RedisUnreachableError"]
