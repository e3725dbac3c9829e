"""One `grpc.aio` server per node: DRefConsensus, DRefRaft, DRefWatch, DRefExt, DRefStream,
DRefMembership, DRefSnapshot.

Methods are registered with raw-bytes handlers so that this module decodes requests itself:
an undecodable request is logged with its reason and rejected with `INVALID_ARGUMENT`, and
the server keeps serving. Requests above `max_message_bytes` are refused by gRPC itself
(`RESOURCE_EXHAUSTED`). Credentials, the access check of every call and the limits come from
one `TransportSecurity` (`security.py`, docs/security.md); a plaintext server bound to a
non-loopback address logs one warning.

`DRefConsensus` never answers with an error for a request it could decode
(docs/protocol.md#wire-served): the
handler's response is sent. If the handler itself fails (a bug, or the node is stopping) there
is no local term to answer with, so the call fails with `UNAVAILABLE` — callers (upstream's
too) treat that as an unreachable peer, which is always safe, whereas `success=false` with a
made-up term would make an upstream leader push a full snapshot.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Self

import grpc

from dref.errors import ClosedError
from dref.resources import AsyncResource
from dref_raft.core.messages import (
    AppendEntriesResponse,
    HeartbeatResponse,
    InstallSnapshotResponse,
    PreVoteResponse,
    ReadIndexResponse,
    VoteResponse,
)
from dref_raft.errors import TransportError, WireError
from dref_raft.reads import LEADER_READ, ReadRequest
from dref_raft.transport.base import (
    DEFAULT_PORT,
    ClientHandler,
    CompareHandler,
    ConsensusHandler,
    InfoHandler,
    InstantReads,
    WatchHandler,
    aclose_iterator,
)
from dref_raft.transport.grpc_stream import (
    ACCEPTED_KEY,
    ACCEPTED_VALUE,
    Instant,
    Method,
    serve_session,
)
from dref_raft.transport.security import PLAINTEXT, TransportSecurity, is_loopback
from dref_raft.transport.snapshot_stream import SnapshotHandler, snapshot_rpc_handler
from dref_raft.transport.status import status_of
from dref_raft.transport.tcp_channel import ANNOUNCE_KEY, ChannelServer
from dref_raft.wire import fair_messages, messages

if TYPE_CHECKING:
    from dref_raft.transport.grpc_membership import MembershipHandler

__all__ = ["GrpcServer"]

logger = logging.getLogger("dref_raft.transport")

_RESPONSE_TYPE: dict[str, type[Any]] = {
    "AppendEntries": AppendEntriesResponse,
    "Heartbeat": HeartbeatResponse,
    "ReadIndex": ReadIndexResponse,
    "RequestVote": VoteResponse,
    "RequestPreVote": PreVoteResponse,
    "InstallSnapshot": InstallSnapshotResponse,
}

_Unary = Callable[[bytes, Any], Awaitable[bytes]]


_warned_plaintext: set[str] = set()
"""Addresses already warned about (a discovering node binds its address twice)."""


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class GrpcServer(AsyncResource):
    """The node's gRPC server (plaintext HTTP/2 like upstream's, or TLS per `security`).

    `node_id` is set as `to` on every consensus request handed to `consensus`. Without a
    `watch` handler `DRefWatch` is not served, without a `compare` handler `DRefExt` is not,
    without a `stream_window` (calls in flight per stream) `DRefStream` is not, without a
    `snapshot` handler `DRefSnapshot` is not (callers get `UNIMPLEMENTED`, as from upstream).
    `client_port` (TLS only): a second port for clients without a certificate
    (docs/security.md#client-authentication); 0 picks a free one. `max_message_bytes`, when
    given, overrides the security's. `channel_port` (with a `stream_window`): also serve both
    `Session`s on the dref-only TCP channel there (0: a free port), announced in every gRPC
    `Session` accept (docs/raft-wire.md#tcp-channel).
    """

    def __init__(
        self,
        node_id: str,
        consensus: ConsensusHandler,
        client: ClientHandler,
        watch: WatchHandler | None = None,
        *,
        compare: CompareHandler | None = None,
        info: InfoHandler | None = None,
        stream_window: int | None = None,
        membership: MembershipHandler | None = None,
        snapshot: SnapshotHandler | None = None,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        max_message_bytes: int | None = None,
        security: TransportSecurity = PLAINTEXT,
        client_port: int | None = None,
        channel_port: int | None = None,
    ) -> None:
        self.node_id = node_id
        self._consensus = consensus
        self._client = client
        self._watch = watch
        self._compare = compare
        self._info = info
        self._stream_window = stream_window
        self._served = self._methods()
        self._peer_served = self._peer_methods()
        self._membership = membership
        self._snapshot = snapshot
        self._host = host
        self._requested_port = port
        if max_message_bytes is not None:
            security = dataclasses.replace(security, max_message_bytes=max_message_bytes)
        if client_port is not None and not security.tls:
            raise ValueError("client_port needs TLS: a plaintext member serves clients on port")
        self._security = security
        self._max = security.max_message_bytes
        self._requested_client_port = client_port
        self.channel: ChannelServer | None = None
        """The TCP channel's listener (None: not served)."""
        if channel_port is not None and stream_window is not None:
            self.channel = ChannelServer(
                node_id,
                {
                    "DRefStream": (self._served, self._instant()),
                    "DRefPeer": (self._peer_served, {}),
                },
                host=host,
                port=channel_port,
                window=stream_window,
                security=security,
            )
        self._session_metadata: tuple[tuple[str, str], ...] = ((ACCEPTED_KEY, ACCEPTED_VALUE),)
        self._server: Any = None
        self._port: int | None = None
        self._client_port: int | None = None
        self._closed = False

    @property
    def port(self) -> int:
        """The bound port (after `start`)."""
        if self._port is None:
            raise ClosedError("the gRPC server is not started")
        return self._port

    @property
    def address(self) -> str:
        """`host:port` of the bound server (after `start`)."""
        return _host_port(self._host, self.port)

    @property
    def client_port(self) -> int | None:
        """The bound client port (after `start`; None without one)."""
        return self._client_port

    async def start(self) -> int:
        """Bind and start serving; return the bound port (a free one when `port` is 0)."""
        if self._closed:
            raise ClosedError("the gRPC server is closed")
        if self._server is not None:
            return self.port
        # No SO_REUSEPORT: a second node on a taken port must fail, not share it.
        server = grpc.aio.server(
            options=[*self._security.server_options(), ("grpc.so_reuseport", 0)],
            interceptors=self._security.server_interceptors() or None,
        )
        server.add_generic_rpc_handlers(self._handlers())
        port = await self._bind(server, self._requested_port, client_port=False)
        client_port = None
        if self._requested_client_port is not None:
            client_port = await self._bind(server, self._requested_client_port, client_port=True)
        channel = self.channel
        if channel is not None:
            try:
                await channel.start()
            except TransportError:
                await server.stop(None)
                raise
            self._session_metadata = (*self._session_metadata, (ANNOUNCE_KEY, channel.announcement))
        await server.start()
        self._server, self._port, self._client_port = server, port, client_port
        logger.info(
            "gRPC server of node %s listening on %s (%s)%s%s",
            self.node_id,
            self.address,
            "TLS, client certificates required" if self._security.tls else "plaintext",
            "" if client_port is None else f"; clients without certificate on port {client_port}",
            "" if channel is None else f"; dref TCP channel on port {channel.port}",
            extra={"dref_node": self.node_id},
        )
        self._warn_plaintext()
        return self._port

    async def _bind(self, server: Any, port: int, *, client_port: bool) -> int:
        target = _host_port(self._host, port)
        creds = self._security.server_credentials(client_port=client_port)
        try:
            bound = (
                server.add_insecure_port(target)
                if creds is None
                else server.add_secure_port(target, creds)
            )
        except RuntimeError as exc:
            await server.stop(None)
            raise TransportError(f"cannot bind the gRPC server to {target}: {exc}") from exc
        if not bound:
            await server.stop(None)
            raise TransportError(f"cannot bind the gRPC server to {target}")
        return int(bound)

    def _warn_plaintext(self) -> None:
        """One WARNING per address when a plaintext server listens beyond loopback."""
        if self._security.tls or is_loopback(self._host) or self.address in _warned_plaintext:
            return
        _warned_plaintext.add(self.address)
        logger.warning(
            "node %s serves PLAINTEXT gRPC on %s%s, beyond loopback: anyone who reaches this "
            "port can read and write every element and vote in elections; set tls_cert_file, "
            "tls_key_file and tls_ca_file (docs/security.md)",
            self.node_id,
            self.address,
            "" if self.channel is None else f" and its TCP channel on port {self.channel.port}",
            extra={"dref_node": self.node_id},
        )

    async def aclose(self, grace: float | None = 0.5) -> None:
        """Stop serving; in-flight calls get `grace` seconds to finish (idempotent)."""
        self._closed = True
        if self.channel is not None:
            await self.channel.aclose()
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
            await server.wait_for_termination(0)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    # ------------------------------------------------------------------ registration

    def _methods(self) -> dict[str, Method]:
        """The served `DRefRaft` / `DRefExt` methods by gRPC path (request bytes → response
        bytes), shared by their unary handlers and `DRefStream`."""
        raft: dict[str, Callable[[Any], Awaitable[bytes]]] = {
            "SetElement": self._set_element,
            "ExpireElement": self._expire_element,
            "SetElementIfNotExist": self._set_element_if_not_exist,
            "GetElement": self._get_element,
            "DeleteElement": self._delete_element,
            "GetEndpoints": self._get_endpoints,
            "SendCommand": self._send_command,
        }
        methods = {
            messages.method_path(messages.RAFT_SERVICE, name): self._raft_method(name, fn)
            for name, fn in raft.items()
        }
        ext: dict[str, Method] = {}
        if self._compare is not None:
            ext[messages.COMPARE_METHOD] = self._compare_method
            path = messages.method_path(fair_messages.FAIR_SERVICE, fair_messages.WAIT_TURN_METHOD)
            methods[path] = self._wait_turn_method
        if self._info is not None:
            ext[messages.NAMES_METHOD] = self._names_method
            ext[messages.STATUS_METHOD] = self._status_method
        for name, fn in ext.items():
            methods[messages.method_path(messages.EXT_SERVICE, name)] = fn
        return methods

    def _handlers(self) -> tuple[Any, ...]:
        consensus = {
            method: grpc.unary_unary_rpc_method_handler(self._consensus_method(method))
            for method in messages.CONSENSUS_METHODS
        }
        by_service: dict[str, dict[str, Any]] = {}
        for path, fn in self._served.items():
            service, _, name = path.lstrip("/").partition("/")
            by_service.setdefault(service, {})[name] = grpc.unary_unary_rpc_method_handler(
                self._unary(service, name, fn)
            )
        handlers = [
            grpc.method_handlers_generic_handler(messages.CONSENSUS_SERVICE, consensus),
            *(grpc.method_handlers_generic_handler(s, m) for s, m in by_service.items()),
        ]
        if self._watch is not None:
            handlers.append(
                grpc.method_handlers_generic_handler(
                    messages.WATCH_SERVICE,
                    {messages.WATCH_METHOD: grpc.unary_stream_rpc_method_handler(self._watch_rpc)},
                )
            )
        if self._stream_window is not None:
            streams = (
                (messages.STREAM_SERVICE, self._served),
                (messages.PEER_SERVICE, self._peer_served),
            )
            for service, methods in streams:
                short = service.rpartition(".")[2]
                instant = self._instant() if service == messages.STREAM_SERVICE else {}
                rpc = self._session_rpc(short, methods, instant)
                handlers.append(
                    grpc.method_handlers_generic_handler(
                        service,
                        {messages.SESSION_METHOD: grpc.stream_stream_rpc_method_handler(rpc)},
                    )
                )
        if self._membership is not None:
            from dref_raft.transport.grpc_membership import membership_handlers

            handlers.append(membership_handlers(self._membership, self.node_id, self._max))
        if self._snapshot is not None:
            handlers.append(snapshot_rpc_handler(self._snapshot, self._max))
        return tuple(handlers)

    # ------------------------------------------------------------------ DRefConsensus

    def _consensus_method(self, method: str) -> _Unary:
        expected = _RESPONSE_TYPE[method]

        async def handle(data: bytes, context: Any) -> bytes:
            try:
                request = messages.decode_request(method, data, self.node_id, self._max)
            except WireError as exc:
                await _reject(context, "DRefConsensus", method, exc)
                raise AssertionError("unreachable") from None  # abort raises
            try:
                response = await self._consensus.handle(request)
                if not isinstance(response, expected):
                    raise TypeError(
                        f"handler answered {type(response).__name__} to {method}, "
                        f"expected {expected.__name__}"
                    )
                return messages.encode_response(response)
            except Exception as exc:
                _log_failure(
                    exc,
                    "node %s: DRefConsensus/%s from %s failed; answering UNAVAILABLE",
                    self.node_id,
                    method,
                    request.sender,
                )
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"consensus handler: {exc}")
                raise AssertionError("unreachable") from None

        return handle

    def _peer_methods(self) -> dict[str, Method]:
        """The `DRefConsensus` methods by gRPC path, as `DRefPeer` serves them: a failing
        handler answers UNAVAILABLE, as the unary method does."""
        methods: dict[str, Method] = {}
        for method in messages.CONSENSUS_METHODS:
            expected = _RESPONSE_TYPE[method]

            async def call(data: bytes, method: str = method, expected: type = expected) -> bytes:
                request = messages.decode_request(method, data, self.node_id, self._max)
                try:
                    response = await self._consensus.handle(request)
                except Exception as exc:
                    if not isinstance(exc, ClosedError):
                        logger.exception(
                            "node %s: DRefPeer %s from %s failed; answering UNAVAILABLE",
                            self.node_id,
                            method,
                            request.sender,
                        )
                    raise TransportError(f"consensus handler: {exc}") from exc
                if not isinstance(response, expected):
                    raise TypeError(
                        f"handler answered {type(response).__name__} to {method}, "
                        f"expected {expected.__name__}"
                    )
                return messages.encode_response(response)

            methods[messages.method_path(messages.CONSENSUS_SERVICE, method)] = call
        return methods

    # ------------------------------------------------------------------ DRefRaft, DRefExt

    def _unary(self, service: str, method: str, fn: Method) -> _Unary:
        """The unary handler of `fn`: an undecodable request → INVALID_ARGUMENT, a failure →
        its status (`status.py`)."""
        short = service.rpartition(".")[2]

        async def handle(data: bytes, context: Any) -> bytes:
            try:
                return await fn(data)
            except WireError as exc:
                await _reject(context, short, method, exc)
                raise AssertionError("unreachable") from None
            except Exception as exc:
                code, details = status_of(exc)
                if isinstance(exc, ClosedError) or (
                    code == grpc.StatusCode.INTERNAL and not details.startswith("serialize: ")
                ):
                    _log_failure(exc, "node %s: %s/%s failed", self.node_id, short, method)
                await context.abort(code, details)
                raise AssertionError("unreachable") from None

        return handle

    def _raft_method(self, method: str, fn: Callable[[Any], Awaitable[bytes]]) -> Method:
        pb_request, _ = messages.raft_pb_classes(method)
        what = pb_request.DESCRIPTOR.name

        async def call(data: bytes) -> bytes:
            return await fn(messages.parse(pb_request, data, what, self._max))

        return call

    def _response(self, method: str, **fields: Any) -> bytes:
        _, pb_response = messages.raft_pb_classes(method)
        return bytes(pb_response(**fields).SerializeToString())

    def _data_response(self, method: str, **fields: Any) -> bytes:
        """A data operation's answer, with the `applied_seq` extension (after the operation)."""
        return self._response(method, applied_seq=self._client.applied_seq(), **fields)

    async def _set_element(self, msg: Any) -> bytes:
        expire_at = int(msg.expireAt) if msg.HasField("expireAt") else None
        await self._client.set_element(str(msg.name), bytes(msg.value), expire_at)
        return self._data_response("SetElement")

    async def _set_element_if_not_exist(self, msg: Any) -> bytes:
        expire_at = int(msg.expireAt) if msg.HasField("expireAt") else None
        created = await self._client.set_element_if_not_exist(
            str(msg.name), bytes(msg.value), expire_at
        )
        return self._data_response("SetElementIfNotExist", created=bool(created))

    async def _get_element(self, msg: Any) -> bytes:
        if msg.read_index:  # dref-only: a follower asking for the read index
            return self._response("GetElement", applied_seq=await self._client.read_index())
        read = LEADER_READ
        if msg.HasField("session_seq") or msg.follower_read:
            session_seq = int(msg.session_seq) if msg.HasField("session_seq") else None
            read = ReadRequest(session_seq, bool(msg.follower_read))
        return self._value_response(await self._client.get_element(str(msg.name), read))

    def _value_response(self, value: bytes | None) -> bytes:
        """`GetElement`'s answer with `value` (None: missing or expired)."""
        if value is None:
            return self._data_response("GetElement")
        return self._data_response("GetElement", value=bytes(value))

    async def _delete_element(self, msg: Any) -> bytes:
        await self._client.delete_element(str(msg.name))
        return self._data_response("DeleteElement")

    async def _expire_element(self, msg: Any) -> bytes:
        await self._client.expire_element(str(msg.name), int(msg.expireAt))
        return self._data_response("ExpireElement")

    async def _get_endpoints(self, msg: Any) -> bytes:
        return self._response("GetEndpoints", ids=list(self._client.endpoint_ids()))

    async def _send_command(self, msg: Any) -> bytes:
        return self._response("SendCommand")  # a no-op, as upstream (MicroRaft leftover)

    async def _compare_method(self, data: bytes) -> bytes:
        """`DRefExt/Compare`: statuses as for `DRefRaft` (`status.py`)."""
        assert self._compare is not None
        command = messages.decode_compare_request(data, self._max)
        return messages.encode_compare_response(await self._compare.compare(command))

    async def _wait_turn_method(self, data: bytes) -> bytes:
        """`DRefFair/WaitTurn`: a long poll on this member's applied state."""
        assert self._compare is not None
        name, ticket, timeout_ms = fair_messages.decode_wait_turn_request(data, self._max)
        turn, value = await self._compare.wait_turn(name, ticket, timeout_ms / 1000)
        return fair_messages.encode_wait_turn_response(turn, value)

    async def _names_method(self, data: bytes) -> bytes:
        """`DRefExt/Names`: statuses as for `DRefRaft` (a follower answers not-leader)."""
        assert self._info is not None
        prefix, after, limit = messages.decode_names_request(data, self._max)
        return messages.encode_names_response(await self._info.names(prefix, after, limit))

    async def _status_method(self, data: bytes) -> bytes:
        """`DRefExt/Status`: this member's Raft state."""
        assert self._info is not None
        return messages.encode_member_status(self._info.status())

    # ------------------------------------------------------------------ DRefStream

    def _instant(self) -> dict[str, Instant]:
        """The `DRefStream` calls answered without a task when they can be: session reads of
        a seq applied here (a handler with `read_now`)."""
        client = self._client
        if not isinstance(client, InstantReads):
            return {}
        pb_request, _ = messages.raft_pb_classes("GetElement")
        what = pb_request.DESCRIPTOR.name

        def get_element_now(data: bytes) -> bytes | None:
            msg = messages.parse(pb_request, data, what, self._max)
            if msg.read_index or not msg.HasField("session_seq"):
                return None
            read = ReadRequest(int(msg.session_seq), bool(msg.follower_read))
            ready, value = client.read_now(str(msg.name), read)
            return self._value_response(value) if ready else None

        return {messages.method_path(messages.RAFT_SERVICE, "GetElement"): get_element_now}

    def _session_rpc(
        self, service: str, methods: Mapping[str, Method], instant: Mapping[str, Instant]
    ) -> Callable[[AsyncIterator[bytes], Any], Awaitable[None]]:
        """The `Session` handler of `DRefStream` (client calls) or `DRefPeer` (another member's
        consensus calls): `grpc_stream.serve_session` over `methods`."""
        window = self._stream_window
        assert window is not None

        async def session(requests: AsyncIterator[bytes], context: Any) -> None:
            await context.send_initial_metadata(self._session_metadata)
            try:
                await serve_session(
                    requests,
                    context.write,
                    methods,
                    window=window,
                    max_bytes=self._max,
                    node_id=self.node_id,
                    service=service,
                    instant=instant,
                )
            except WireError as exc:
                await _reject(context, service, messages.SESSION_METHOD, exc)

        return session

    # ------------------------------------------------------------------ DRefWatch

    async def _watch_rpc(self, data: bytes, context: Any) -> AsyncIterator[bytes]:
        assert self._watch is not None
        try:
            names, from_seq = messages.decode_watch_request(data, self._max)
        except WireError as exc:
            await _reject(context, "DRefWatch", messages.WATCH_METHOD, exc)
            return
        events = self._watch.watch(names, from_seq)
        try:
            async for event in events:
                yield messages.encode_watch_event(event)
        except Exception as exc:
            code, details = status_of(exc)
            level = logging.DEBUG if isinstance(exc, ClosedError) else logging.WARNING
            logger.log(level, "node %s: DRefWatch/Watch ended: %s", self.node_id, details)
            await context.abort(code, details)
        finally:
            await aclose_iterator(events)


def _log_failure(exc: Exception, message: str, *args: object) -> None:
    """A handler failed: a traceback, except for `ClosedError` (the node is shutting down while
    a request was in flight), which is logged at debug level without one."""
    if isinstance(exc, ClosedError):
        logger.debug(message + ": %s", *args, exc)
    else:
        logger.exception(message, *args)


async def _reject(context: Any, service: str, method: str, exc: WireError) -> None:
    logger.warning(
        "rejected an undecodable %s/%s request from %s: %s", service, method, context.peer(), exc
    )
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"undecodable request: {exc}")
