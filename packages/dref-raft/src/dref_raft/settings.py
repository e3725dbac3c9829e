"""`RaftSettings`: how a `raft` node joins its cluster (env prefix `DREF_RAFT_`).

Upstream's environment names are read too, below ours: `DREF_PORT` (the port when
`DREF_RAFT_PORT` is unset or 0), `DREF_NODE_ADDRESSES` and `DREF_NODE_SERVICES` (address
discovery, `dref_raft.member.discovery`: the voter set is fixed once, at bootstrap).

TLS, client authentication and limits (docs/security.md) are checked here and their files read
once, at validation: `security` is what every server and channel of the node is made from.
"""

from __future__ import annotations

import ipaddress
import os
import random
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from dref.settings import RawEnvSource
from dref_raft.transport.security import (
    DEFAULT_MAX_CONCURRENT_STREAMS,
    PLAINTEXT,
    ClientAuth,
    TransportSecurity,
    load_security,
)
from dref_raft.wire.messages import DEFAULT_MAX_MESSAGE_BYTES

__all__ = [
    "DEFAULT_PORT",
    "WILDCARD_HOSTS",
    "RaftSettings",
    "format_address",
    "parse_endpoint",
    "random_node_id",
]

DEFAULT_PORT = 8082
#: Upstream's environment variable → our field.
UPSTREAM_ENV = {
    "DREF_PORT": "port",
    "DREF_NODE_ADDRESSES": "node_addresses",
    "DREF_NODE_SERVICES": "node_services",
}


def random_node_id() -> str:
    """Upstream's default node id: a random integer in [0, 99999) in decimal."""
    return str(random.randrange(0, 99_999))


def parse_endpoint(text: str) -> tuple[str, str]:
    """`id=host:port` → (id, "host:port"); ValueError naming the problem."""
    node_id, sep, address = text.strip().partition("=")
    node_id, address = node_id.strip(), address.strip()
    if not sep or not node_id or not address:
        raise ValueError(f"endpoint {text!r} is not id=host:port")
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {text!r}: address {address!r} is not host:port")
    return node_id, address


WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]"})
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*\.?$"
)


def format_address(host: str, port: int) -> str:
    """host:port, an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_discovery_entry(text: str, field: str) -> str:
    """An IP literal (v6 with or without brackets) or a DNS name, without a port."""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if field == "node_addresses" and ":" in text:
        raise ValueError(
            f"{text!r} is not an address: list addresses without a port (every member "
            "listens on port / DREF_PORT)"
        )
    if not _HOST_NAME.match(text):
        raise ValueError(f"{text!r} is neither an IP address nor a host name")
    return text


def _same_address(listed: str, host: str, port: int) -> bool:
    """Whether the endpoint address `listed` is where a node binding host:port listens (a
    wildcard bind host listens on every address: only the port must match)."""
    listed_host, _, listed_port = listed.rpartition(":")
    if int(listed_port) != port:
        return False
    return host in WILDCARD_HOSTS or listed_host == host


class RaftSettings(BaseSettings):
    """Settings of the `raft` backend; each field reads `DREF_RAFT_<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix="DREF_RAFT_", extra="forbid", validate_default=True
    )

    mode: Literal["member", "client"] = Field(
        "member", description="member: run a voting node in this process; client: use one."
    )
    node_id: str = Field(
        default_factory=random_node_id,
        min_length=1,
        description="This node's id (upstream default: random decimal in [0, 99999)).",
    )
    host: str = Field("127.0.0.1", min_length=1, description="Address the node binds to.")
    port: int = Field(0, ge=0, lt=65536, description="gRPC port; 0: DREF_PORT or 8082 (upstream).")
    endpoints: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Static members id=host:port (comma-separated in env); self may be listed.",
    )
    node_addresses: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Static discovery: every member's IP or host name (comma-separated in env; "
        "upstream DREF_NODE_ADDRESSES); each listens on port.",
    )
    node_services: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="DNS discovery: names whose A/AAAA records are the members (upstream "
        "DREF_NODE_SERVICES); each listens on port.",
    )
    expected_size: int | None = Field(
        None,
        ge=1,
        description="Voters of the cluster, self included: required with discovery (bootstrap "
        "waits for exactly that many); with endpoints a check.",
    )
    discovery_timeout: float = Field(
        60.0,
        gt=0,
        description="Discovery: bootstrap waits this long for expected_size identified members.",
    )
    address_poll_interval: float = Field(
        3.0,
        gt=0,
        description="Discovery: re-resolve the addresses this often; changes are only logged.",
    )
    transport: Literal["grpc", "memory"] = Field(
        "grpc", description="grpc: real network; memory: in-process cluster (tests)."
    )
    storage_dir: Path | None = Field(None, description="Directory of the node's files; None: RAM.")
    snapshot_every: int = Field(1000, ge=0, description="Snapshot after N applies; 0: never.")
    heartbeat_interval: float = Field(0.08, gt=0, description="Leader heartbeat (s, Scala's).")
    election_timeout: float = Field(0.4, gt=0, description="Election timeout (s, Scala's).")
    rpc_timeout: float = Field(0.5, gt=0, description="Per-RPC deadline between nodes (s).")
    default_ttl: float = Field(10.0, gt=0, description="Lock TTL in seconds (upstream: 10).")
    leader_wait: float = Field(10.0, ge=0, description="connect waits this long for a leader.")
    op_timeout: float = Field(
        10.0, gt=0, description="Deadline of one operation, retries included."
    )
    reaper_interval: float = Field(0.2, gt=0, description="Leader's TTL reaper period (s).")
    max_pending: int = Field(
        1024, ge=1, description="Proposals in flight per node; more callers wait (backpressure)."
    )
    stream: bool = Field(
        True,
        description="dref-only DRefStream and DRefPeer: serve them (member) and send client "
        "calls, follower forwarding and consensus messages over them, batched, one stream per "
        "member; false: unary DRefRaft / DRefConsensus only (a member without them is always "
        "called unary).",
    )
    stream_window: int = Field(
        1024, ge=1, description="DRefStream: calls in flight per stream; more callers wait."
    )
    channel: bool = Field(
        True,
        description="dref-only TCP channel (with stream): a member serves DRefStream and "
        "DRefPeer sessions on channel_port too and announces it; clients and peers use it when "
        "announced (else, or when it fails, the gRPC stream). false: neither served nor used.",
    )
    channel_port: int = Field(
        0, ge=0, lt=65536, description="Port of the TCP channel (0: a free port, announced)."
    )
    watch_history: int = Field(
        4096, ge=1, description="Committed change events a member keeps to resume DRefWatch."
    )
    join: bool = Field(
        False,
        description="Start as a new member of a running cluster: no voter set of its own; "
        "the leader adds it (dref raft member add) as a learner, then promotes it. With "
        "discovery it asks the leader to add it itself.",
    )
    learner_promotion_lag: int = Field(
        64,
        ge=-1,
        description="The leader promotes a learner to voter once it is at most this many "
        "entries behind; -1: never automatically.",
    )
    read_mode: Literal["read_index", "lease"] = Field(
        "read_index",
        description="Linearizable reads: read_index (a majority round per batch of reads) or "
        "lease (the leader answers without a round while its lease holds; relies on clocks, "
        "docs/raft.md#read-modes).",
    )
    read_from: Literal["leader", "any"] = Field(
        "leader",
        description="Which member serves this context's reads: leader (linearizable reads "
        "run ReadIndex there) or any (one follower per context, kept while it answers; it "
        "serves a linearizable read after asking the leader for its read index, a session read "
        "from its own state; docs/raft.md#read-modes).",
    )
    max_clock_drift: float = Field(
        0.1,
        ge=0,
        description="Lease reads: how far two members' clocks may drift apart over one "
        "election timeout (s); the lease is the election timeout minus this.",
    )
    mixed_cluster: bool = Field(
        False,
        description="Upstream nodes may vote: no dref-only commands (no native CAS, "
        "no owner-checked locks).",
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate of this node (member) or client (mTLS)."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_ca_file: Path | None = Field(
        None, description="PEM cluster CA: set, every connection is TLS and verified by it."
    )
    auth_token_file: Path | None = Field(
        None,
        description="File holding a bearer token: a client sends it; a member with "
        "client_auth = 'token' accepts it.",
    )
    client_auth: ClientAuth | None = Field(
        None,
        description="How members authenticate clients: mtls (a CA-signed certificate), token, "
        "none; default mtls with TLS, none without.",
    )
    client_port: int | None = Field(
        None,
        ge=1,
        lt=65536,
        description="TLS members: a second port for clients without a certificate "
        "(client_auth token or none).",
    )
    max_message_bytes: int = Field(
        DEFAULT_MAX_MESSAGE_BYTES,
        ge=64 * 1024,
        description="Largest gRPC message sent or received, on every server and channel.",
    )
    max_name_bytes: int = Field(
        4096, ge=1, description="Largest element name (UTF-8 bytes) a member accepts."
    )
    max_value_bytes: int = Field(
        4 * 1024 * 1024, ge=1, description="Largest element value (bytes) a member accepts."
    )
    max_concurrent_streams: int = Field(
        DEFAULT_MAX_CONCURRENT_STREAMS,
        ge=1,
        description="Calls and watch streams one client connection may have open at once.",
    )
    _security: TransportSecurity = PrivateAttr(default=PLAINTEXT)
    exactly_once: bool = Field(
        True,
        description="Writes carry the context's session and request number and are resent "
        "while their outcome is unknown; the state machine applies each once (off with "
        "mixed_cluster).",
    )
    fair_updates: bool = Field(
        True,
        description="Contended modify/update calls of this context are served first come, "
        "first served in a line kept by the state machine (off: compare-and-set with "
        "backoff; always off with mixed_cluster).",
    )
    waiter_life: float = Field(
        2.0,
        gt=0,
        le=60,
        description="How long a waiter keeps its place in an element's line of contended "
        "writers without trying again (s, log time); a dead waiter blocks the line this long.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _RaftEnv(settings_cls), file_secret_settings)

    @field_validator("endpoints", "node_addresses", "node_services", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("node_addresses", "node_services")
    @classmethod
    def _check_discovery(cls, value: list[str], info: ValidationInfo) -> list[str]:
        field = str(info.field_name)
        checked = [_check_discovery_entry(text, field) for text in value]
        duplicates = sorted({a for a in checked if checked.count(a) > 1})
        if duplicates:
            raise ValueError(f"listed more than once: {', '.join(duplicates)}")
        return checked

    @field_validator("port")
    @classmethod
    def _default_port(cls, value: int) -> int:
        """0: `DREF_PORT` (upstream's name), else `DEFAULT_PORT`."""
        if value != 0:
            return value
        raw = os.environ.get("DREF_PORT", "").strip()
        if not raw:
            return DEFAULT_PORT
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise ValueError(f"DREF_PORT = {raw!r} is not a port number")
        return int(raw)

    @field_validator("endpoints")
    @classmethod
    def _check_endpoints(cls, value: list[str], info: ValidationInfo) -> list[str]:
        seen: dict[str, str] = {}
        for text in value:
            node_id, address = parse_endpoint(text)
            if node_id in seen and seen[node_id] != address:
                raise ValueError(f"node id {node_id!r} is listed with two addresses")
            seen[node_id] = address
        # A member must bind where the others will dial it (mode, node_id, host and port are
        # validated before endpoints; a client binds nothing, so its id is not checked).
        data = info.data
        if data.get("mode") == "member" and {"node_id", "host", "port"} <= data.keys():
            own = seen.get(data["node_id"])
            binds = f"{data['host']}:{data['port']}"
            if own is not None and not _same_address(own, data["host"], data["port"]):
                raise ValueError(
                    f"endpoints list this node ({data['node_id']}) at {own}, but it binds {binds}"
                )
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.election_timeout < 2 * self.heartbeat_interval:
            raise ValueError(
                f"election_timeout ({self.election_timeout:g} s) must be at least twice "
                f"heartbeat_interval ({self.heartbeat_interval:g} s)"
            )
        self._check_security()
        if self.read_mode == "lease" and self.max_clock_drift >= self.election_timeout / 2:
            raise ValueError(
                f"read_mode 'lease': max_clock_drift ({self.max_clock_drift:g} s) must be below "
                f"half the election_timeout ({self.election_timeout:g} s)"
            )
        if self.discovers:
            self._check_discovery_settings()
            return self
        members = self.members
        if self.expected_size is not None and self.expected_size != len(members):
            raise ValueError(
                f"expected_size is {self.expected_size} but {len(members)} members are configured "
                f"({', '.join(sorted(members))}): a cluster never starts with a different quorum"
            )
        return self

    def _check_security(self) -> None:
        """TLS files, client_auth, client_port and limits agree; the files are read."""
        if self.max_name_bytes + self.max_value_bytes >= self.max_message_bytes:
            raise ValueError(
                f"max_name_bytes ({self.max_name_bytes}) + max_value_bytes "
                f"({self.max_value_bytes}) must stay below max_message_bytes "
                f"({self.max_message_bytes})"
            )
        cert, key, ca = self.tls_cert_file, self.tls_key_file, self.tls_ca_file
        if (cert is None) != (key is None):
            raise ValueError("tls_cert_file and tls_key_file are set together or not at all")
        if any(f is not None for f in (cert, ca, self.auth_token_file)) and (
            self.transport != "grpc"
        ):
            raise ValueError("TLS and tokens need transport = 'grpc'")
        tls = ca is not None
        if self.mode == "client":
            if not tls and (cert is not None or self.auth_token_file is not None):
                raise ValueError(
                    "a client with tls_cert_file or auth_token_file needs tls_ca_file (the "
                    "cluster CA) to verify the members: a token or certificate is never sent "
                    "in plaintext"
                )
        else:
            self._check_member_security(tls)
        self._security = load_security(
            cert_file=cert,
            key_file=key,
            ca_file=ca,
            token_file=self.auth_token_file,
            client_auth=self.client_auth or "none",
            member=self.mode == "member",
            max_message_bytes=self.max_message_bytes,
            max_concurrent_streams=self.max_concurrent_streams,
        )

    def _check_member_security(self, tls: bool) -> None:
        files = {
            "tls_cert_file": self.tls_cert_file,
            "tls_key_file": self.tls_key_file,
            "tls_ca_file": self.tls_ca_file,
        }
        missing = [name for name, path in files.items() if path is None]
        if missing and len(missing) < len(files):
            raise ValueError(
                f"a TLS member needs tls_cert_file, tls_key_file and tls_ca_file: "
                f"{', '.join(missing)} missing"
            )
        auth = self.client_auth or ("mtls" if tls else "none")
        self.client_auth = auth
        if not tls and auth != "none":
            raise ValueError(
                f"client_auth = {auth!r} needs TLS (tls_cert_file, tls_key_file, tls_ca_file)"
            )
        if auth == "token" and self.auth_token_file is None:
            raise ValueError("client_auth = 'token' needs auth_token_file: the token to accept")
        if auth != "token" and self.auth_token_file is not None:
            raise ValueError(
                f"auth_token_file is set but client_auth is {auth!r}: set client_auth = 'token' "
                "to accept the token"
            )
        if tls and auth != "mtls" and self.client_port is None:
            raise ValueError(
                f"client_auth = {auth!r} needs client_port: the member port requires a "
                "certificate signed by the cluster CA on every connection (gRPC cannot make it "
                "optional), so clients without one connect to client_port"
            )
        if self.client_port is not None and (not tls or auth == "mtls"):
            raise ValueError(
                "client_port is only for TLS members with client_auth = 'token' or 'none' "
                "(clients without a certificate)"
            )
        if self.client_port is not None and self.client_port == self.port:
            raise ValueError(f"client_port and port are both {self.port}")
        if (
            self.channel
            and self.channel_port
            and self.channel_port in (self.port, self.client_port)
        ):
            raise ValueError(f"channel_port {self.channel_port} is taken by port or client_port")

    def _check_discovery_settings(self) -> None:
        what = (
            "node_addresses (DREF_NODE_ADDRESSES)"
            if self.node_addresses
            else "node_services (DREF_NODE_SERVICES)"
        )
        if self.node_addresses and self.node_services:
            raise ValueError(
                "node_addresses (DREF_NODE_ADDRESSES) and node_services (DREF_NODE_SERVICES) "
                "are both set: choose one discovery"
            )
        if self.endpoints:
            raise ValueError(
                f"endpoints (DREF_RAFT_ENDPOINTS) and {what} are both set: list the members "
                "statically or discover them, not both"
            )
        if self.mode == "client":
            raise ValueError(
                f"{what} is for members; mode = 'client' needs endpoints (DREF_RAFT_ENDPOINTS)"
            )
        if self.transport != "grpc":
            raise ValueError(f"{what} needs transport = 'grpc'")
        if self.expected_size is None and not self.join:
            raise ValueError(
                f"{what} needs expected_size (DREF_RAFT_EXPECTED_SIZE): the number of voters, "
                "self included, that bootstrap waits for, so a cluster starts once and never "
                "as two"
            )
        if (
            self.node_addresses
            and self.expected_size is not None
            and len(self.node_addresses) != self.expected_size
        ):
            raise ValueError(
                f"expected_size (DREF_RAFT_EXPECTED_SIZE) is {self.expected_size} but "
                f"node_addresses (DREF_NODE_ADDRESSES) lists {len(self.node_addresses)}: "
                f"{', '.join(self.node_addresses)}"
            )
        own = self.own_address
        if self.node_services and own is not None and not _is_ip(own):
            raise ValueError(
                f"host (DREF_RAFT_HOST) {self.host} is not an IP address: with node_services "
                "(DREF_NODE_SERVICES) it must be the address this node's DNS record holds"
            )
        if self.node_addresses and own is not None and own not in self.node_addresses:
            raise ValueError(
                f"host (DREF_RAFT_HOST) {self.host} is not among node_addresses "
                f"(DREF_NODE_ADDRESSES): {', '.join(self.node_addresses)}"
            )

    # -- derived ----------------------------------------------------------------------------------
    @property
    def security(self) -> TransportSecurity:
        """TLS material, token, client_auth and limits for every server and channel."""
        return self._security

    @property
    def discovers(self) -> bool:
        """Whether the members come from discovery (node_addresses / node_services)."""
        return bool(self.node_addresses or self.node_services)

    @property
    def own_address(self) -> str | None:
        """Discovery: this node's address when `host` names it (set and not a wildcard)."""
        if "host" not in self.model_fields_set or self.host in WILDCARD_HOSTS:
            return None
        return _check_discovery_entry(self.host, "host")

    @property
    def address(self) -> str:
        """The address other nodes reach this one at: host:port."""
        return f"{self.host}:{self.port}"

    @property
    def members(self) -> dict[str, str]:
        """Every voter id → address, this node included (upstream: drop entries at our address)."""
        out: dict[str, str] = {}
        for text in self.endpoints:
            node_id, address = parse_endpoint(text)
            if address == self.address and node_id != self.node_id:
                continue  # upstream drops configured endpoints at its own bind address
            out[node_id] = address
        out[self.node_id] = self.address
        return out

    @property
    def peers(self) -> dict[str, str]:
        """The other voters: id → address."""
        return {k: v for k, v in self.members.items() if k != self.node_id}


class _RaftEnv(RawEnvSource):
    """`DREF_RAFT_<FIELD>` raw strings, then upstream's names for fields still unset."""

    def __call__(self) -> dict[str, Any]:
        out = super().__call__()
        for env, name in UPSTREAM_ENV.items():
            raw = os.environ.get(env)
            if raw is not None and name not in out and name != "port":
                out[name] = raw  # DREF_PORT is applied only when port is 0 (_default_port)
        return out
