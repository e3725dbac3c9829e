"""Building redis-py asyncio clients from `RedisSettings`: standalone, Sentinel or Cluster.

Commands use a pooled client. Change notifications use one dedicated pub/sub connection, opened
afresh by `Connections.open_pubsub()` after every failure so that the listener always knows that a
reconnect happened (redis-py's silent resubscription would hide lost messages).
"""

from __future__ import annotations

import itertools
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from dref_redis.settings import RedisSettings, parse_address

__all__ = ["Connections"]

Client = Redis | RedisCluster


def _retry() -> Retry:
    # No hidden retries: a retried write could be applied twice, and every retry would stretch
    # the configured timeouts. Stale pooled connections are detected by the pool before use.
    return Retry(NoBackoff(), 0)


def _tls_kwargs(s: RedisSettings) -> dict[str, Any]:
    if not s.tls:
        return {}
    return {
        "ssl_ca_certs": s.tls_ca_certs,
        "ssl_certfile": s.tls_certfile,
        "ssl_keyfile": s.tls_keyfile,
        "ssl_cert_reqs": s.tls_verify,
        "ssl_check_hostname": s.tls_check_hostname and s.tls_verify != "none",
    }


def _common_kwargs(s: RedisSettings) -> dict[str, Any]:
    # No socket_timeout: redis-py applies it to writes with asyncio.wait_for, which on Python 3.11
    # can swallow a cancellation (the caller's task then keeps running). The backend bounds every
    # operation with asyncio.timeout instead, and the listener PINGs its idle connection.
    return {
        "username": s.effective_username,
        "password": s.effective_password,
        "socket_connect_timeout": s.connect_timeout,
        "socket_timeout": None,
        "retry": _retry(),
    }


class Connections:
    """The command client and a factory of pub/sub connections for one backend."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.where = settings.describe()
        self._sentinel: Sentinel | None = None
        self._attempts = itertools.count()
        self.client: Client = self._build()

    def _build(self) -> Client:
        s = self.settings
        common = _common_kwargs(s)
        if s.unix_path is None:
            common["socket_keepalive"] = True
        if s.cluster:
            host, port = s.address
            return RedisCluster(
                host=host,
                port=port,
                max_connections=s.max_connections,
                ssl=s.tls,
                **_tls_kwargs(s),
                **common,
            )
        if s.sentinel_master:
            sentinel_kwargs: dict[str, Any] = {
                "socket_connect_timeout": s.connect_timeout,
                "socket_timeout": None,
                "retry": _retry(),
            }
            if s.sentinel_username is not None:
                sentinel_kwargs["username"] = s.sentinel_username
            if s.sentinel_password is not None:
                sentinel_kwargs["password"] = s.sentinel_password.get_secret_value()
            if s.tls:
                sentinel_kwargs.update(ssl=True, **_tls_kwargs(s))
            self._sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
                [parse_address(a) for a in s.sentinel_addresses],
                sentinel_kwargs=sentinel_kwargs,
                **({"ssl": True, **_tls_kwargs(s)} if s.tls else {}),
                **common,
            )
            client: Redis = self._sentinel.master_for(s.sentinel_master, db=s.database)
            return client
        kwargs: dict[str, Any] = {
            **common,
            "db": s.database,
            "max_connections": s.max_connections,
            "timeout": s.connect_timeout + s.op_timeout,
        }
        if s.unix_path is not None:
            kwargs.update(connection_class=UnixDomainSocketConnection, path=s.unix_path)
        else:
            host, port = s.address
            kwargs.update(host=host, port=port)
            if s.tls:
                kwargs.update(connection_class=SSLConnection, **_tls_kwargs(s))
            else:
                kwargs.update(connection_class=Connection)
        return Redis(connection_pool=BlockingConnectionPool(**kwargs))

    async def initialize(self) -> None:
        """Connect once and check that the server accepts our credentials and database."""
        if isinstance(self.client, RedisCluster):
            await self.client.initialize()
        await self.client.ping()

    async def open_pubsub(self) -> tuple[PubSub, Redis | None]:
        """A fresh pub/sub object, and the node client to close with it (Cluster mode only)."""
        if isinstance(self.client, RedisCluster):
            # Regular PUBLISH is broadcast to every node, so any node will do.
            nodes = [(str(n.host), int(n.port)) for n in self.client.get_nodes()]
            nodes = nodes or [self.settings.address]
            host, port = nodes[next(self._attempts) % len(nodes)]
            s = self.settings
            node = Redis(
                host=host,
                port=port,
                ssl=s.tls,
                socket_keepalive=True,
                **_tls_kwargs(s),
                **_common_kwargs(s),
            )
            return node.pubsub(), node
        return self.client.pubsub(), None

    async def aclose(self) -> None:
        if isinstance(self.client, RedisCluster):
            await self.client.aclose()
        else:
            await self.client.aclose(close_connection_pool=True)
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                await sentinel.aclose()
