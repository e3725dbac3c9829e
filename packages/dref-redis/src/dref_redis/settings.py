"""`RedisSettings`: how to reach Redis and how the backend behaves (env prefix `DREF_REDIS_`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["RedisSettings", "parse_address"]

_SCHEMES = ("redis", "rediss", "unix")


class RedisSettings(BaseSettings):
    """Settings of the `redis` backend; each field reads `DREF_REDIS_<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix="DREF_REDIS_", extra="forbid", validate_default=True
    )

    url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="redis://[user:pass@]host[:port][/db], rediss://… (TLS) or unix:///path?db=N.",
    )
    username: str | None = Field(None, description="ACL user name (overrides the URL's).")
    password: SecretStr | None = Field(None, description="Password (overrides the URL's).")
    db: int | None = Field(None, ge=0, description="Database number (overrides the URL's).")
    key_prefix: str = Field("", description="Prepended to every element name; empty = upstream.")
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to establish a connection.")
    op_timeout: float = Field(5.0, gt=0, description="Seconds to wait for a reply.")
    max_connections: int = Field(64, ge=1, description="Size of the command connection pool.")
    tls_ca_certs: str | None = Field(None, description="CA bundle (PEM) to verify the server.")
    tls_certfile: str | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    tls_keyfile: str | None = Field(None, description="Client private key (PEM) for mutual TLS.")
    tls_verify: Literal["required", "optional", "none"] = Field(
        "required", description="Server certificate verification."
    )
    tls_check_hostname: bool = Field(True, description="Check the server certificate's name.")
    sentinel_master: str | None = Field(None, description="Sentinel: the monitored master name.")
    sentinel_addresses: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Sentinel addresses host:port (comma-separated in env)."
    )
    sentinel_username: str | None = Field(None, description="ACL user for the sentinels.")
    sentinel_password: SecretStr | None = Field(None, description="Password for the sentinels.")
    cluster: bool = Field(False, description="Redis Cluster; the URL names one seed node.")
    modify_strategy: Literal["cas", "lock"] = Field(
        "cas", description="cas: native compare-and-set; lock: upstream's lock protocol."
    )
    default_ttl: float = Field(20.0, gt=0, description="Lock TTL in seconds (upstream: 20).")
    poll_interval: float = Field(
        1.0, gt=0, description="Fallback poll of lock waiters and stolen detection (seconds)."
    )
    payload_flavor: Literal["scala", "rust"] = Field(
        "scala", description="MsgPack form of bytes >= 0x80 in change payloads we publish."
    )
    reconnect_max_delay: float = Field(
        5.0, gt=0, description="Upper bound of the pub/sub reconnect backoff (seconds)."
    )
    ping_interval: float = Field(
        5.0, gt=0, description="Idle pub/sub connections are PINGed this often (seconds)."
    )
    expiry_events: Literal["detect", "configure", "off"] = Field(
        "detect",
        description=(
            "Delete events for keys that expire: detect = when the server's "
            "notify-keyspace-events already publishes expired events (E and x); configure = "
            "also add Ex to it at open (CONFIG SET); off = never. Not in cluster mode."
        ),
    )
    history: int = Field(
        256,
        ge=0,
        description="Changes of each element kept (a `<key>:dref-rev` stream) for revisions "
        "and `changes(since=...)`; 0: no revisions, writes exactly as upstream.",
    )
    exactly_once: bool = Field(
        True,
        description="Each write (expire and lock operations included) records its answer in a "
        "per-session key, so a write whose answer was lost is resent and applied once "
        "(docs/redis.md#exactly-once-writes); off: writes exactly as before, not resent.",
    )
    session_idle: float = Field(
        60.0,
        gt=0,
        description="Seconds a session's record of results on an element lives after its last "
        "write there (longer than any resend: at least op_timeout).",
    )

    session_set_get: bool = Field(
        True,
        description="Read and write a session record in one SET … GET where the server has it "
        "(Redis >= 6.2); off: GET before and SET after each write, as on older servers.",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in _SCHEMES:
            raise ValueError(
                f"scheme {parts.scheme or '(none)'!r} is not supported; use redis://, "
                "rediss:// (TLS) or unix://"
            )
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError("a unix:// URL needs a socket path, e.g. unix:///run/redis.sock")
            return value
        if not parts.hostname:
            raise ValueError("the URL has no host name")
        try:
            parts.port  # noqa: B018 - raises on an invalid port
        except ValueError as exc:
            raise ValueError(f"invalid port: {exc}") from None
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValueError(f"the path must be a database number, got {parts.path!r}")
        return value

    @field_validator("sentinel_addresses", mode="before")
    @classmethod
    def _split_addresses(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("sentinel_addresses")
    @classmethod
    def _check_addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            parse_address(address)
        return value

    @model_validator(mode="after")
    def _check_topology(self) -> Self:
        if bool(self.sentinel_master) != bool(self.sentinel_addresses):
            raise ValueError(
                "sentinel_master and sentinel_addresses must be set together "
                f"(got master {self.sentinel_master!r}, addresses {self.sentinel_addresses!r})"
            )
        if self.cluster and self.sentinel_master:
            raise ValueError("cluster and sentinel_master exclude each other")
        if self.cluster and self.scheme == "unix":
            raise ValueError("cluster needs a redis:// or rediss:// seed URL, not unix://")
        if self.cluster and self.database != 0:
            raise ValueError(f"Redis Cluster has only database 0, got db {self.database}")
        return self

    # -- derived values ---------------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    @property
    def database(self) -> int:
        """The effective database: `db`, else the URL's (path or `?db=`), else 0."""
        if self.db is not None:
            return self.db
        parts = urlsplit(self.url)
        if self.scheme == "unix":
            for item in parts.query.split("&"):
                key, _, val = item.partition("=")
                if key == "db" and val.isdigit():
                    return int(val)
            return 0
        path = parts.path.strip("/")
        return int(path) if path else 0

    @property
    def effective_username(self) -> str | None:
        user = urlsplit(self.url).username
        return self.username if self.username is not None else (unquote(user) if user else None)

    @property
    def effective_password(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        secret = urlsplit(self.url).password
        return unquote(secret) if secret else None

    @property
    def address(self) -> tuple[str, int]:
        """Host and port of the URL (6379 by default); not meaningful for unix://."""
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 6379

    @property
    def unix_path(self) -> str | None:
        return urlsplit(self.url).path if self.scheme == "unix" else None

    def describe(self) -> str:
        """Where we connect, without secrets (for error messages)."""
        if self.sentinel_master:
            via = ",".join(self.sentinel_addresses)
            return f"sentinel master {self.sentinel_master!r} via {via}"
        if self.unix_path is not None:
            where = f"unix:{self.unix_path}"
        else:
            host, port = self.address
            where = f"{self.scheme}://{host}:{port}"
        kind = "cluster seed " if self.cluster else ""
        return f"{kind}{where} db {self.database}"


def parse_address(address: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:26379`) → (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address {address!r} is not host:port")
    return host.strip("[]"), int(port)
