"""How dref-raft's gRPC servers and channels are secured and bounded (docs/security.md).

One `TransportSecurity` value carries the TLS material, the bearer token, the client
authentication mode and the limits; every server and channel is made from it:

* `server_ports(...)`/`server_options()`/`server_interceptors()`: what `GrpcServer` binds;
* `channel(address)`: a channel whose every call carries the credentials (client certificate
  and/or `authorization: Bearer …`), so any service added later inherits them;
* `explain(details)`: a failed connection's gRPC details with what was probably refused.

With TLS on, the member port requires a client certificate signed by the cluster CA on every
connection (gRPC's TLS can require one or ask for none, not ask for an optional one). Clients
without a certificate (`client_auth` "token" or "none") use the separate `client_port`, where
no certificate is asked for: there `client_services` are served (with the token checked in
"token" mode) and every other service — consensus and any peer-to-peer service — is refused
with `PERMISSION_DENIED`, because the caller proved no cluster identity.
"""

from __future__ import annotations

import hmac
import inspect
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import grpc

from dref_raft.wire import fair_messages, messages
from dref_raft.wire.messages import DEFAULT_MAX_MESSAGE_BYTES

__all__ = [
    "CLIENT_SERVICES",
    "DEFAULT_MAX_CONCURRENT_STREAMS",
    "PLAINTEXT",
    "ClientAuth",
    "Secret",
    "TransportSecurity",
    "is_loopback",
    "load_security",
]

logger = logging.getLogger("dref_raft.transport")

ClientAuth = Literal["none", "token", "mtls"]

DEFAULT_MAX_CONCURRENT_STREAMS: Final = 1024
"""HTTP/2 streams one connection may have open at once (calls in flight and watch streams)."""

CLIENT_SERVICES: Final = frozenset(
    {
        messages.RAFT_SERVICE,
        messages.EXT_SERVICE,
        messages.WATCH_SERVICE,
        messages.STREAM_SERVICE,
        fair_messages.FAIR_SERVICE,
    }
)
"""Services a client may call (`DRefStream` carries only `DRefRaft`, `DRefExt` and `DRefFair`
calls).
Every other service (DRefConsensus, and any service not listed here: new ones are member-only
until added) needs a certificate signed by the cluster CA."""

_AUTHORIZATION: Final = "authorization"
_BEARER: Final = "Bearer "


class Secret:
    """A secret string that never shows in a repr, str or exception."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself (only to send it or compare it)."""
        return self._value

    def matches(self, offered: str) -> bool:
        """Constant-time comparison with `offered`."""
        return hmac.compare_digest(self._value.encode(), offered.encode())

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def is_loopback(host: str) -> bool:
    """Whether binding `host` listens on loopback only (localhost, 127.0.0.0/8, ::1)."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class TransportSecurity:
    """TLS material, token, client authentication and limits of one node or client.

    `cert_chain`/`private_key`: this side's certificate (a member's, or a client's for mTLS);
    `root_certs`: the cluster CA (both sides verify the other with it); `expected_token`: the
    token a member accepts (client_auth "token"); `bearer_token`: the token a client sends.
    """

    cert_chain: bytes | None = field(default=None, repr=False)
    private_key: bytes | None = field(default=None, repr=False)
    root_certs: bytes | None = field(default=None, repr=False)
    expected_token: Secret | None = None
    bearer_token: Secret | None = None
    client_auth: ClientAuth = "none"
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS

    @property
    def tls(self) -> bool:
        """Whether channels and servers use TLS (a CA is configured)."""
        return self.root_certs is not None

    # -- server side -------------------------------------------------------------------------------
    def server_credentials(self, *, client_port: bool = False) -> grpc.ServerCredentials | None:
        """Credentials of the member port (client certificate required) or of the client port
        (none asked for); None: plaintext."""
        if not self.tls:
            return None
        if self.cert_chain is None or self.private_key is None:
            raise ValueError("a TLS member needs its certificate and key")
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.root_certs,
            require_client_auth=not client_port,
        )

    def server_options(self) -> list[tuple[str, int]]:
        """gRPC server options: message size and concurrent streams per connection."""
        return [
            *self._message_options(),
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
        ]

    def server_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """The access check of every call (none in plaintext: everything is open)."""
        return [_AccessGuard(self)] if self.tls else []

    # -- client side -------------------------------------------------------------------------------
    def channel_options(self) -> list[tuple[str, int]]:
        """gRPC channel options: message size, quick reconnects."""
        return [
            *self._message_options(),
            # Reconnect quickly to a peer that comes back (the default backoff grows to 120 s).
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS (with this side's certificate if any) plus the bearer token on every call;
        None: plaintext."""
        if not self.tls:
            return None
        creds = grpc.ssl_channel_credentials(self.root_certs, self.private_key, self.cert_chain)
        if self.bearer_token is not None:
            token = grpc.access_token_call_credentials(self.bearer_token.reveal())
            creds = grpc.composite_channel_credentials(creds, token)
        return creds

    def channel(self, address: str) -> grpc.aio.Channel:
        """A channel to `address` (host:port) with these credentials and limits."""
        creds = self.channel_credentials()
        if creds is None:
            return grpc.aio.insecure_channel(address, options=self.channel_options())
        return grpc.aio.secure_channel(address, creds, options=self.channel_options())

    def explain(self, details: str | None) -> str:
        """`details` of a failed call, with what the failure most likely means."""
        text = details or ""
        if "Hostname Verification" in text:
            return (
                "TLS handshake with the member failed: the member's certificate does not name "
                f"the address dialed (its subject alternative names): {text}"
            )
        if "Tls handshake failed" in text or "TSI_PROTOCOL_FAILURE" in text:
            if "WRONG_VERSION_NUMBER" in text:
                why = "the member does not speak TLS (a plaintext member?)"
            elif "CERTIFICATE_VERIFY_FAILED" in text:
                why = "the member's certificate is not signed by the cluster CA (tls_ca_file)"
            else:
                why = "see the details"
            return f"TLS handshake with the member failed: {why}: {text}"
        if "Socket closed" in text or "Connection reset" in text:
            if self.tls:
                return (
                    "the member refused the connection: TLS handshake failed (certificate not "
                    "signed by the cluster CA, or none presented where the member requires "
                    f"one?): {text}"
                )
            return (
                "the member closed the connection (a TLS member? this side is plaintext: set "
                f"tls_ca_file): {text}"
            )
        return text

    def _message_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
        ]


PLAINTEXT: Final = TransportSecurity()
"""No TLS, no authentication, default limits (upstream's behaviour)."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot read it: {exc.strerror or exc}") from None


def _read_token(path: Path, what: str) -> Secret:
    text = _read(path, what).decode("utf-8", errors="strict").strip()
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{what} {path}: holds no token (one line without spaces expected)")
    return Secret(text)


def load_security(
    *,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    ca_file: Path | None = None,
    token_file: Path | None = None,
    client_auth: ClientAuth = "none",
    member: bool = True,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS,
) -> TransportSecurity:
    """Read and check the files (ValueError naming the file and what is wrong with it).

    The certificate and key are checked to belong together and the CA to be a certificate
    (with the standard library's `ssl`, before gRPC sees them). `member`: the token is the
    one to accept; else the one to send.
    """
    if ca_file is not None:
        try:
            ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"tls_ca_file {ca_file}: not a readable PEM CA: {exc}") from None
    if cert_file is not None and key_file is not None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(str(cert_file), str(key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"tls_cert_file {cert_file} / tls_key_file {key_file}: not a readable PEM "
                f"certificate with its (unencrypted) private key: {exc}"
            ) from None
    token = _read_token(token_file, "auth_token_file") if token_file is not None else None
    return TransportSecurity(
        cert_chain=_read(cert_file, "tls_cert_file") if cert_file is not None else None,
        private_key=_read(key_file, "tls_key_file") if key_file is not None else None,
        root_certs=_read(ca_file, "tls_ca_file") if ca_file is not None else None,
        expected_token=token if member else None,
        bearer_token=None if member else token,
        client_auth=client_auth,
        max_message_bytes=max_message_bytes,
        max_concurrent_streams=max_concurrent_streams,
    )


# -- the access check ------------------------------------------------------------------------------
_Check = Callable[[Any], Awaitable[None]]


class _AccessGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses, per call: anything but `CLIENT_SERVICES` without a CA-signed certificate, and
    client calls without the right bearer token where the member requires one."""

    def __init__(self, security: TransportSecurity) -> None:
        self._security = security

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = str(handler_call_details.method)  # "/package.Service/Method"
        service = method.lstrip("/").partition("/")[0]

        async def check(context: Any) -> None:
            await self._check(service, method, context)

        return _guarded(handler, check)

    async def _check(self, service: str, method: str, context: Any) -> None:
        refused = access_refusal(
            self._security,
            method.lstrip("/"),
            member_traffic=service not in CLIENT_SERVICES,
            certified=bool(context.auth_context().get("x509_pem_cert")),
            token=lambda: _bearer(context.invocation_metadata()),
        )
        if refused is not None:
            code, details = refused
            logger.warning("refused %s from %s: %s", method, context.peer(), details)
            await context.abort(code, details)


def access_refusal(
    security: TransportSecurity,
    what: str,
    *,
    member_traffic: bool,
    certified: bool,
    token: Callable[[], str | None],
) -> tuple[grpc.StatusCode, str] | None:
    """Why a TLS member refuses `what` (a method, or a channel's service) from a connection
    (None: served): `certified`, its certificate was verified against the cluster CA in the
    handshake (a cluster identity); `member_traffic` needs one; client traffic needs the
    bearer `token()` when `client_auth = "token"` (compared in constant time)."""
    if certified:
        return None
    if member_traffic:
        return (
            grpc.StatusCode.PERMISSION_DENIED,
            f"{what} is member-to-member traffic: it needs a client certificate signed by the "
            "cluster CA, this connection presented none",
        )
    if security.client_auth != "token":
        return None
    offered = token()
    expected = security.expected_token
    if offered is not None and expected is not None and expected.matches(offered):
        return None
    reason = "no bearer token was sent" if offered is None else "the bearer token was refused"
    return (
        grpc.StatusCode.UNAUTHENTICATED,
        f"this member requires a bearer token (client_auth = 'token'): {reason}",
    )


def _bearer(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == _AUTHORIZATION:
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            return text[len(_BEARER) :] if text.startswith(_BEARER) else ""
    return None


def _guarded(handler: grpc.RpcMethodHandler, check: _Check) -> grpc.RpcMethodHandler:
    """`handler` with `check(context)` awaited before its behaviour runs."""
    kinds = (
        (handler.unary_unary, grpc.unary_unary_rpc_method_handler),
        (handler.unary_stream, grpc.unary_stream_rpc_method_handler),
        (handler.stream_unary, grpc.stream_unary_rpc_method_handler),
        (handler.stream_stream, grpc.stream_stream_rpc_method_handler),
    )
    for behaviour, make in kinds:
        if behaviour is not None:
            return make(
                _wrap(behaviour, check),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


def _wrap(behaviour: Callable[..., Any], check: _Check) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: Any) -> Any:
            await check(context)
            async for item in behaviour(request, context):
                yield item

        return stream

    async def call(request: Any, context: Any) -> Any:
        await check(context)
        return await behaviour(request, context)

    return call
