"""The dref-only TCP channel (docs/raft-wire.md#tcp-channel): `Session` messages without HTTP/2.

The channel carries exactly what a `DRefStream/Session` or `DRefPeer/Session` gRPC stream
carries (`StreamCalls` up, `StreamAnswers` down) as length-prefixed frames on a plain (or TLS)
TCP connection: a 4-byte big-endian length, then the message. The first frame each way is a
handshake: the dialer's hello (service, the announcement it answers, bearer token) and the
member's accept (a status code and details; non-zero: refused, and the connection is closed).
Batching, windows, deadlines and failure semantics stay those of `grpc_stream`: the client half
is a call-like object for `StreamSession`, the server half feeds `serve_session`.

Negotiation: a member serving the channel names it in the initial metadata of every gRPC
`Session` it accepts (`dref-channel: <port>/<instance>`); upstream peers never open `Session`, so
they never see it. `ChannelDialer.open` (behind `StreamSession.open_call`) dials the channel
when the member announced one, and falls back to the gRPC stream when the channel cannot be
reached or refuses (logged, that announcement left alone for `RETRY` seconds).

A frame longer than the member's max message size, or one that does not decode, closes the
connection with a log line naming the peer and what was wrong; reads and writes are bounded by
the transport's buffer limits (`drain`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import ssl
import struct
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Final

import grpc

from dref.errors import ClosedError
from dref_raft.errors import LimitExceededError, RpcStatusError, TransportError, WireError
from dref_raft.log_throttle import LogThrottle
from dref_raft.transport.grpc_stream import ACCEPTED_KEY, ACCEPTED_VALUE, Instant, Method
from dref_raft.transport.grpc_stream import serve_session as _serve_session
from dref_raft.transport.security import TransportSecurity, access_refusal

__all__ = [
    "ANNOUNCE_KEY",
    "RETRY",
    "ChannelDialer",
    "ChannelServer",
]

logger = logging.getLogger("dref_raft.transport")

ANNOUNCE_KEY: Final = "dref-channel"
"""Initial metadata of an accepted gRPC `Session`: `<port>/<instance>` of the member's channel."""
VERSION: Final = 1
HELLO_MAGIC: Final = b"DRFC"
ACCEPT_MAGIC: Final = b"DRFA"
SERVICES: Final[dict[str, int]] = {"DRefStream": 1, "DRefPeer": 2}
"""The services a channel carries, by their code in the hello."""
MAX_HELLO_BYTES: Final = 64 * 1024
HANDSHAKE_TIMEOUT: Final = 2.0
"""Seconds to connect, handshake TLS and get the accept; else the gRPC stream is used."""
CLOSE_GRACE: Final = 1.0
"""Seconds a member waits for a closed connection's buffered bytes to leave."""
RETRY: Final = 30.0
"""Seconds before a channel that failed (same announcement) is dialed again."""

_LENGTH: Final = struct.Struct(">I")
_STATUS_BIT: Final = 1 << 31
_HELLO: Final = struct.Struct(">4sBBH")  # magic, version, service, instance length
_ACCEPT: Final = struct.Struct(">4sBB")  # magic, version, status code
_CODES: Final[dict[int, grpc.StatusCode]] = {code.value[0]: code for code in grpc.StatusCode}


# ------------------------------------------------------------------------------ frames


async def read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    """The next frame's payload. Raises `LimitExceededError` when it is longer than `limit`,
    `WireError` when the connection ends inside it, `EOFError` at a clean end between frames,
    `RpcStatusError` for a closing status frame (its length's high bit set)."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise WireError("connection closed inside a frame's length") from None
        raise EOFError from None
    (size,) = _LENGTH.unpack(head)
    status = bool(size & _STATUS_BIT)
    if status:
        size &= ~_STATUS_BIT
        limit = MAX_HELLO_BYTES
    if size > limit:
        raise LimitExceededError(f"frame of {size} bytes is larger than max message size {limit}")
    try:
        data = await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        got = len(exc.partial)
        raise WireError(f"connection closed {got} bytes into a {size}-byte frame") from None
    if status:
        raise RpcStatusError(*decode_accept(data))
    return data


def frame(payload: bytes) -> bytes:
    """`payload` with its length prefix."""
    return _LENGTH.pack(len(payload)) + payload


def status_frame(code: grpc.StatusCode, details: str) -> bytes:
    """The member's last frame before it closes a channel (as a gRPC stream's trailing
    status): an accept-format payload, its length's high bit set."""
    payload = encode_accept(code, details[:1000])
    return _LENGTH.pack(len(payload) | _STATUS_BIT) + payload


def encode_hello(service: str, instance: str, token: str | None) -> bytes:
    """The dialer's first frame: which service, which announcement, the bearer token."""
    inst = instance.encode()
    head = _HELLO.pack(HELLO_MAGIC, VERSION, SERVICES[service], len(inst))
    return head + inst + (token or "").encode()


def decode_hello(data: bytes) -> tuple[str, str, str | None]:
    """(service, instance, token or None); `WireError` naming what is wrong."""
    if len(data) < _HELLO.size:
        raise WireError(f"hello of {len(data)} bytes is shorter than {_HELLO.size}")
    magic, version, code, size = _HELLO.unpack_from(data)
    if magic != HELLO_MAGIC:
        raise WireError(f"not a dref channel hello (magic {magic!r})")
    if version != VERSION:
        raise WireError(f"hello version {version}, this member speaks {VERSION}")
    service = next((name for name, c in SERVICES.items() if c == code), None)
    if service is None:
        raise WireError(f"hello names unknown service {code}")
    end = _HELLO.size + size
    if end > len(data):
        raise WireError("hello truncated inside its instance")
    try:
        instance = data[_HELLO.size : end].decode()
        token = data[end:].decode()
    except UnicodeDecodeError as exc:
        raise WireError(f"hello is not UTF-8: {exc}") from None
    return service, instance, token or None


def encode_accept(code: grpc.StatusCode, details: str) -> bytes:
    """The member's first frame: OK, or why the channel is refused."""
    return _ACCEPT.pack(ACCEPT_MAGIC, VERSION, code.value[0]) + details.encode()


def decode_accept(data: bytes) -> tuple[grpc.StatusCode, str]:
    if len(data) < _ACCEPT.size:
        raise WireError(f"accept of {len(data)} bytes is shorter than {_ACCEPT.size}")
    magic, version, code = _ACCEPT.unpack_from(data)
    if magic != ACCEPT_MAGIC or version != VERSION:
        raise WireError(f"not a dref channel accept (magic {magic!r}, version {version})")
    details = data[_ACCEPT.size :].decode(errors="replace")
    return _CODES.get(code, grpc.StatusCode.UNKNOWN), details


# ------------------------------------------------------------------------------ TLS contexts


def _load_chain(context: ssl.SSLContext, security: TransportSecurity) -> None:
    """This side's certificate and key (PEM bytes) into `context` (`ssl` reads only files: a
    private temporary directory holds them for the call)."""
    assert security.cert_chain is not None
    assert security.private_key is not None
    with tempfile.TemporaryDirectory(prefix="dref-tls-") as where:
        cert, key = Path(where, "cert.pem"), Path(where, "key.pem")
        for path, data in ((cert, security.cert_chain), (key, security.private_key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        context.load_cert_chain(cert, key)


def server_context(security: TransportSecurity) -> ssl.SSLContext | None:
    """The channel's TLS: this member's certificate; a client certificate is verified against
    the cluster CA when presented (members must present one: checked per hello)."""
    if not security.tls:
        return None
    if security.cert_chain is None or security.private_key is None:
        raise ValueError("a TLS member needs its certificate and key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_chain(context, security)
    assert security.root_certs is not None
    context.load_verify_locations(cadata=security.root_certs.decode())
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(security: TransportSecurity) -> ssl.SSLContext | None:
    """The dialer's TLS: the member's certificate must be signed by the cluster CA and name
    the host dialed (as gRPC checks); this side's certificate is presented when it has one."""
    if not security.tls:
        return None
    assert security.root_certs is not None
    context = ssl.create_default_context(cadata=security.root_certs.decode())
    if security.cert_chain is not None and security.private_key is not None:
        _load_chain(context, security)
    return context


# ------------------------------------------------------------------------------ client half


def _split(address: str) -> tuple[str, str]:
    host, _, port = address.rpartition(":")
    return (host[1:-1] if host.startswith("[") else host), port


class ChannelCall:
    """An open channel, as `StreamSession` drives a gRPC `Session` call."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_bytes: int
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._max = max_bytes
        self._code: grpc.StatusCode | None = None
        self._details = ""

    async def initial_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((ACCEPTED_KEY, ACCEPTED_VALUE),)

    async def write(self, data: bytes) -> None:
        writer = self._writer
        if writer.is_closing():
            raise ConnectionResetError("the channel is closed")
        writer.write(frame(data))
        await writer.drain()

    async def read(self) -> Any:
        try:
            return await read_frame(self._reader, self._max)
        except EOFError:
            self._end(grpc.StatusCode.UNAVAILABLE, "the member closed the channel")
        except RpcStatusError as exc:
            self._end(exc.code, exc.details)
        except (WireError, LimitExceededError) as exc:
            logger.warning("closing the channel to %s: %s", self._peer(), exc)
            self._end(grpc.StatusCode.UNAVAILABLE, str(exc))
        except (OSError, ssl.SSLError) as exc:
            self._end(grpc.StatusCode.UNAVAILABLE, f"channel read failed: {exc!r}")
        return grpc.aio.EOF

    def _peer(self) -> str:
        return str(self._writer.get_extra_info("peername"))

    def _end(self, code: grpc.StatusCode, details: str) -> None:
        if self._code is None:
            self._code, self._details = code, details
        self._writer.transport.abort()  # the session is over: nothing buffered matters

    async def code(self) -> grpc.StatusCode:
        return self._code or grpc.StatusCode.UNAVAILABLE

    async def details(self) -> str:
        return self._details

    def done(self) -> bool:
        return self._code is not None or self._writer.is_closing()

    def cancel(self) -> bool:
        self._end(grpc.StatusCode.CANCELLED, "cancelled")
        return True


class _Negotiated:
    """`StreamSession`'s call object behind a `ChannelDialer`: the channel when the member
    announced one that answers, else the gRPC `Session` call (everything is delegated to the
    one chosen in `initial_metadata`)."""

    def __init__(self, dialer: ChannelDialer, address: str, open_grpc: Callable[[], Any]) -> None:
        self._dialer = dialer
        self._address = address
        self._open_grpc = open_grpc
        self._target: Any = None
        self._cancelled = False
        self._chosen = asyncio.Event()

    async def initial_metadata(self) -> Any:
        try:
            return await self._choose()
        finally:
            self._chosen.set()

    async def _choose(self) -> Any:
        dialer, address = self._dialer, self._address
        known = dialer.usable(address)
        if known is not None:
            channel = await dialer.dial(address, known)
            if channel is not None:
                return await self._use(channel)
        call = self._target = self._open_grpc()
        if self._cancelled:
            call.cancel()
        metadata = await call.initial_metadata()
        announced = dict(metadata or ()).get(ANNOUNCE_KEY)
        if announced is not None and announced != known and not self._cancelled:
            dialer.learn(address, str(announced))
            if dialer.usable(address) is not None:
                channel = await dialer.dial(address, str(announced))
                if channel is not None:
                    call.cancel()
                    return await self._use(channel)
        return metadata

    async def _use(self, channel: ChannelCall) -> Any:
        self._target = channel
        if self._cancelled:
            channel.cancel()
        return await channel.initial_metadata()

    async def write(self, data: bytes) -> None:
        await self._target.write(data)

    async def read(self) -> Any:
        await self._chosen.wait()  # `StreamSession` reads from the start
        if self._target is None:
            return grpc.aio.EOF
        return await self._target.read()

    async def code(self) -> grpc.StatusCode:
        if self._target is None:
            return grpc.StatusCode.CANCELLED
        code: grpc.StatusCode = await self._target.code()
        return code

    async def details(self) -> str:
        return "" if self._target is None else str(await self._target.details())

    def done(self) -> bool:
        return self._target is None or bool(self._target.done())

    def cancel(self) -> bool:
        self._cancelled = True
        if self._target is not None:
            self._target.cancel()
        self._chosen.set()
        return True


class ChannelDialer:
    """The channels of one client object (`PeerClients`, `LeaderClient`): what each member
    announced, which announcements failed lately, and how to dial them.

    `opened` / `fallbacks` count channels opened and dials that fell back to gRPC."""

    def __init__(self, security: TransportSecurity, service: str, max_bytes: int) -> None:
        if service not in SERVICES:
            raise ValueError(f"the channel carries {sorted(SERVICES)}, not {service!r}")
        self._security = security
        self._service = service
        self._max = max_bytes
        self._ssl: ssl.SSLContext | None = None
        self._announced: dict[str, str] = {}
        self._failed: dict[str, tuple[str, float]] = {}
        self.opened = 0
        self.fallbacks = 0

    def call(self, address: str, open_grpc: Callable[[], Any]) -> Any:
        """A call object for `StreamSession`: the channel or the gRPC `Session`."""
        return _Negotiated(self, address, open_grpc)

    def learn(self, address: str, announced: str) -> None:
        self._announced[address] = announced

    def usable(self, address: str) -> str | None:
        """The announcement to dial for `address` (None: none, or it failed within `RETRY`)."""
        announced = self._announced.get(address)
        if announced is None:
            return None
        failed = self._failed.get(address)
        if failed is not None and failed[0] == announced and time.monotonic() < failed[1]:
            return None
        return announced

    async def dial(self, address: str, announced: str) -> ChannelCall | None:
        """Open the channel `announced` for `address`; None (logged) when it fails."""
        try:
            channel = await self._connect(address, announced)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.fallbacks += 1
            self._failed[address] = (announced, time.monotonic() + RETRY)
            logger.warning(
                "%s channel to %s (%s) failed, using the gRPC stream (retried in %.0f s): %s",
                self._service,
                address,
                announced,
                RETRY,
                exc,
            )
            return None
        self._failed.pop(address, None)
        self.opened += 1
        return channel

    async def _connect(self, address: str, announced: str) -> ChannelCall:
        host, _ = _split(address)
        port_text, _, instance = announced.partition("/")
        try:
            port = int(port_text)
        except ValueError:
            raise TransportError(f"undecodable announcement {announced!r}") from None
        security = self._security
        context = None
        if security.tls:
            if self._ssl is None:
                self._ssl = client_context(security)
            context = self._ssl
        token = security.bearer_token.reveal() if security.bearer_token is not None else None
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, server_hostname=host if context else None
                )
                writer.write(frame(encode_hello(self._service, instance, token)))
                await writer.drain()
                try:
                    code, details = decode_accept(await read_frame(reader, MAX_HELLO_BYTES))
                except EOFError:
                    hint = (
                        " (its TLS refused this side's certificate? it must be signed by the "
                        "cluster CA)"
                        if security.tls
                        else " (a TLS member? this side is plaintext)"
                    )
                    raise TransportError(
                        f"the member closed the channel before accepting{hint}"
                    ) from None
                if code != grpc.StatusCode.OK:
                    raise TransportError(f"refused: {code.name}: {details}")
        except TimeoutError:
            if writer is not None:
                writer.close()
            raise TransportError(f"no accept within {HANDSHAKE_TIMEOUT} s") from None
        except BaseException:
            if writer is not None:
                writer.close()
            raise
        return ChannelCall(reader, writer, self._max)


# ------------------------------------------------------------------------------ server half


class ChannelServer:
    """A member's channel listener: `services` (short name → methods, instant answers) served
    with `serve_session`, access checked as on the gRPC port (`security`)."""

    def __init__(
        self,
        node_id: str,
        services: Mapping[str, tuple[Mapping[str, Method], Mapping[str, Instant]]],
        *,
        host: str,
        port: int,
        window: int,
        security: TransportSecurity,
    ) -> None:
        self.node_id = node_id
        self.instance = secrets.token_hex(8)
        """Names this listener in the announcement: a dialer of an older one is refused."""
        self._services = services
        self._host = host
        self._requested_port = port
        self._window = window
        self._security = security
        self._tls = server_context(security)
        self._max = security.max_message_bytes
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        #: Failed TLS handshakes, logged at WARNING at most once per `RETRY` s per host.
        self._handshake_failures = LogThrottle(RETRY)
        self._connections: set[asyncio.Task[None]] = set()
        self.accepted: Counter[str] = Counter()
        """Connections accepted (hello checked), by service."""

    @property
    def port(self) -> int:
        if self._port is None:
            raise ClosedError("the channel server is not started")
        return self._port

    @property
    def announcement(self) -> str:
        """What a gRPC `Session` accept names (`ANNOUNCE_KEY`)."""
        return f"{self.port}/{self.instance}"

    async def start(self) -> int:
        """Bind and listen; the bound port."""
        try:
            # TLS is started by `_connection`, which sees (and logs) a refused handshake.
            server = await asyncio.start_server(
                self._connection, self._host, self._requested_port, reuse_address=True
            )
        except OSError as exc:
            raise TransportError(
                f"cannot bind the channel to {self._host}:{self._requested_port}: {exc}"
            ) from exc
        self._server = server
        self._port = int(server.sockets[0].getsockname()[1])
        return self._port

    async def aclose(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        try:
            if self._tls is not None and not await self._start_tls(writer, peer):
                return
            await self._serve(reader, writer, peer)
        except (WireError, LimitExceededError) as exc:
            logger.warning(
                "node %s: closing the channel connection from %s: %s", self.node_id, peer, exc
            )
            limit = isinstance(exc, LimitExceededError)
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if limit else grpc.StatusCode.INVALID_ARGUMENT
            text = str(exc) if limit else f"undecodable: {exc}"
            with contextlib.suppress(Exception):
                writer.write(status_frame(code, text))
        except (EOFError, ConnectionError, ssl.SSLError, TimeoutError, RpcStatusError) as exc:
            logger.debug("node %s: channel from %s ended: %r", self.node_id, peer, exc)
        except asyncio.CancelledError:
            # `aclose` ends the connection. The task returns instead of ending cancelled:
            # asyncio's stream callback (3.11) logs a cancelled handler task as an error.
            task.uncancel()
            logger.debug("node %s: channel from %s closed with the server", self.node_id, peer)
        finally:
            self._connections.discard(task)
            writer.close()  # flushes what is buffered (the closing status)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_GRACE):
                    await writer.wait_closed()
            writer.transport.abort()  # a peer that reads nothing does not hold it open

    async def _start_tls(self, writer: asyncio.StreamWriter, peer: Any) -> bool:
        """The TLS handshake of a connection; False (logged: at WARNING at most once per
        `RETRY` seconds per host) when it fails, as the gRPC port's handshake refuses a
        certificate the cluster CA did not sign, a client without one under `mtls`, or
        plaintext."""
        assert self._tls is not None
        try:
            await writer.start_tls(self._tls, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, ConnectionError, TimeoutError, EOFError) as exc:
            host = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
            logger.log(
                logging.WARNING if self._handshake_failures.due(host) else logging.DEBUG,
                "node %s: refused a channel connection from %s: TLS handshake failed: %s",
                self.node_id,
                peer,
                getattr(exc, "reason", None) or exc,
            )
            return False
        return True

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Any
    ) -> None:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            hello = await read_frame(reader, MAX_HELLO_BYTES)
        service, instance, token = decode_hello(hello)
        refusal = self._refusal(service, instance, token, writer)
        if refusal is not None:
            code, details = refusal
            logger.warning(
                "node %s: refused a %s channel from %s: %s",
                self.node_id,
                service,
                peer,
                details,
            )
            writer.write(frame(encode_accept(code, details)))
            await writer.drain()
            return
        writer.write(frame(encode_accept(grpc.StatusCode.OK, "")))
        self.accepted[service] += 1
        logger.debug("node %s: %s channel from %s accepted", self.node_id, service, peer)
        methods, instant = self._services[service]

        async def write(data: bytes) -> None:
            writer.write(frame(data))
            await writer.drain()

        await _serve_session(
            _frames(reader, self._max),
            write,
            methods,
            window=self._window,
            max_bytes=self._max,
            node_id=self.node_id,
            service=service,
            instant=instant,
        )

    def _refusal(
        self, service: str, instance: str, token: str | None, writer: asyncio.StreamWriter
    ) -> tuple[grpc.StatusCode, str] | None:
        """Why this hello is refused (None: accepted); the same rules as the gRPC port's."""
        if service not in self._services:
            return grpc.StatusCode.UNIMPLEMENTED, f"{service} is not served on this channel"
        if instance != self.instance:
            return (
                grpc.StatusCode.FAILED_PRECONDITION,
                "the announcement dialed is not this channel's (a restarted member?)",
            )
        security = self._security
        if not security.tls:
            return None
        certified = bool(writer.get_extra_info("peercert"))
        if not certified and service == "DRefStream" and security.client_auth == "mtls":
            # (the gRPC port's TLS handshake itself refuses these; the channel's asks only)
            return (
                grpc.StatusCode.UNAUTHENTICATED,
                "this member requires a client certificate signed by the cluster CA "
                "(client_auth = 'mtls'), this connection presented none",
            )
        return access_refusal(
            security,
            service,
            member_traffic=service != "DRefStream",
            certified=certified,
            token=lambda: token,
        )


async def _frames(reader: asyncio.StreamReader, limit: int) -> AsyncIterator[bytes]:
    """The frames of a connection until the client closes it (`WireError` when one is bad)."""
    while True:
        try:
            yield await read_frame(reader, limit)
        except EOFError:
            return
