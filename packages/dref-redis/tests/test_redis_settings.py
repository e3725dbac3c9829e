"""`RedisSettings`: parsing, derived values and error messages; the plugin entry point."""

from __future__ import annotations

from typing import Any

import pytest
from redis_procs import RedisServer

import dref
from dref.errors import ConfigurationError
from dref.plugins import installed
from dref.settings import load_settings
from dref_redis import RedisBackend, RedisSettings


def load(**options: Any) -> RedisSettings:
    return load_settings(RedisSettings, options, table="redis")


def test_defaults_match_upstream() -> None:
    s = load()
    assert (s.address, s.database, s.key_prefix, s.default_ttl) == (("127.0.0.1", 6379), 0, "", 20)
    assert s.modify_strategy == "cas"
    assert s.payload_flavor == "scala"


def test_url_parts_and_overrides() -> None:
    s = load(url="rediss://alice:p%40ss@cache.example:6380/3")
    assert s.tls
    assert s.address == ("cache.example", 6380)
    assert (s.effective_username, s.effective_password, s.database) == ("alice", "p@ss", 3)
    s = load(url="redis://alice:x@h/3", username="bob", password="y", db=5)
    assert (s.effective_username, s.effective_password, s.database) == ("bob", "y", 5)
    s = load(url="unix:///run/redis.sock?db=2")
    assert (s.unix_path, s.database) == ("/run/redis.sock", 2)
    assert "secret" not in load(url="redis://:secret@h").describe()


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREF_REDIS_URL", "redis://10.0.0.1:7000")
    monkeypatch.setenv("DREF_REDIS_SENTINEL_MASTER", "primary")
    monkeypatch.setenv("DREF_REDIS_SENTINEL_ADDRESSES", "10.0.0.2:26379, [::1]:26380")
    monkeypatch.setenv("DREF_REDIS_MODIFY_STRATEGY", "lock")
    s = load()
    assert s.sentinel_addresses == ["10.0.0.2:26379", "[::1]:26380"]
    assert s.modify_strategy == "lock"
    assert "sentinel master 'primary'" in s.describe()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "http://h"}, r"url \(DREF_REDIS_URL\) = 'http://h': .*scheme 'http'"),
        ({"url": "redis://h/x"}, "must be a database number"),
        ({"url": "redis://h:99999"}, "invalid port"),
        ({"url": "unix://"}, "needs a socket path"),
        ({"db": -1}, r"db \(DREF_REDIS_DB\) = -1"),
        ({"default_ttl": 0}, r"default_ttl \(DREF_REDIS_DEFAULT_TTL\) = 0"),
        ({"modify_strategy": "fast"}, r"modify_strategy .*'fast'.*'cas' or 'lock'"),
        ({"payload_flavor": "java"}, "payload_flavor"),
        ({"sentinel_master": "m"}, "must be set together"),
        ({"sentinel_master": "m", "sentinel_addresses": "h"}, "'h' is not host:port"),
        ({"cluster": True, "db": 2}, "only database 0"),
        ({"cluster": True, "sentinel_master": "m", "sentinel_addresses": "h:1"}, "exclude"),
        ({"password": "hunter2", "db": "x"}, r"db \(DREF_REDIS_DB\) = 'x'"),
        ({"colour": "blue"}, "colour.*unknown setting"),
    ],
)
def test_invalid_settings_name_field_value_and_reason(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        load(**options)
    assert "hunter2" not in str(info.value)


def test_capabilities_follow_the_topology() -> None:
    plain = RedisBackend(RedisSettings())
    assert plain.capabilities.linearizable
    assert plain.capabilities.native_cas
    assert plain.capabilities.fencing
    assert plain.capabilities.owner_checked_locks
    assert not plain.capabilities.exact_events
    assert not plain.capabilities.durable
    assert plain.capabilities.fenced_writes
    assert plain.capabilities.fair_updates
    lock = RedisBackend(RedisSettings(modify_strategy="lock"))
    assert not lock.capabilities.native_cas
    assert not lock.capabilities.fair_updates  # no compare-and-swap: modify takes lock:<name>
    sentinel = RedisBackend(RedisSettings(sentinel_master="m", sentinel_addresses=["h:1"]))
    assert not sentinel.capabilities.linearizable


def test_entry_point_is_declared() -> None:
    names = {p.name: p.target for p in installed("dref.backends")}
    assert names.get("redis") == "dref_redis.plugin"


async def test_connect_through_the_plugin_and_environment(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DREF_BACKEND", "redis")
    monkeypatch.setenv("DREF_REDIS_URL", redis_server.url)
    monkeypatch.setenv("DREF_REDIS_DEFAULT_TTL", "7.5")
    async with dref.connect() as ctx:
        assert isinstance(ctx.backend, RedisBackend)
        assert ctx.backend.default_ttl == 7.5
        ref = await ctx.make("hi", "plugin:env")
        assert await ref.get() == "hi"


def test_cluster_fenced_writes_need_a_common_hash_tag() -> None:
    from dref.errors import UnsupportedOperationError
    from dref.spi import WriteFence

    backend = RedisBackend(RedisSettings(cluster=True))
    with pytest.raises(UnsupportedOperationError, match="hash tag"):
        backend._fence_keys("order:42", WriteFence("lock:42", b"t", 1))
    # A common hash tag puts the value and the lock's fence counter in one slot.
    key, fence = backend._fence_keys("order:{42}", WriteFence("lock:{42}", b"t", 1))
    assert (key, fence) == (b"order:{42}", b"lock:{42}:dref-fence")
