"""gRPC clients: `PeerClients` (DRefConsensus), `LeaderClient` (DRefRaft + DRefExt), `WatchClient`.

Channels are made by `TransportSecurity.channel` (plaintext, or TLS with this side's
certificate and/or bearer token: docs/security.md), created lazily, and after a transport
failure (UNAVAILABLE, DEADLINE_EXCEEDED) the cached channel is dropped and rebuilt on next use
(as upstream's Rust client does), so a restarted peer is reached without waiting out gRPC's
reconnect backoff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import grpc
from google.protobuf.message import EncodeError

from dref.errors import ClosedError, DRefError, UnsupportedOperationError
from dref.resources import AsyncResource
from dref_raft.commands import Command, CompareResult, MemberStatus, NamesPage, WatchEvent
from dref_raft.core.messages import InstallSnapshot, Request, Response
from dref_raft.errors import (
    CompareUnsupportedError,
    RpcStatusError,
    StreamUnsupportedError,
    TransportError,
    WatchUnsupportedError,
    WireError,
)
from dref_raft.log_throttle import LogThrottle
from dref_raft.reads import LEADER_READ, ReadRequest
from dref_raft.transport.base import read_index_of
from dref_raft.transport.grpc_stream import StreamSession
from dref_raft.transport.security import PLAINTEXT, TransportSecurity
from dref_raft.transport.snapshot_stream import ChunkHook, download_snapshot, send_snapshot
from dref_raft.transport.status import error_of
from dref_raft.transport.tcp_channel import ChannelDialer
from dref_raft.wire import fair_messages, messages
from dref_raft.wire.snapshot_messages import InstallResult, SnapshotHeader

__all__ = ["DEFAULT_TIMEOUT", "LeaderClient", "PeerClients", "SnapshotClient", "WatchClient"]

logger = logging.getLogger("dref_raft.transport")

DEFAULT_TIMEOUT: Final = 5.0
"""Per-call timeout of `LeaderClient` when none is given (upstream Rust's connection timeout)."""

_GET_ELEMENT: Final = messages.raft_pb_classes("GetElement")[0]
_REBUILD_CODES: Final = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
PEER_STREAM_RETRY: Final = 60.0
"""Seconds before a peer that did not serve `DRefPeer` is asked again (it may have been
upgraded); meanwhile its calls are unary."""
#: An oversized InstallSnapshot to one peer is logged at ERROR at most once per this many seconds.
OVERSIZED_LOG_INTERVAL: Final = 30.0


def _security(security: TransportSecurity, max_message_bytes: int | None) -> TransportSecurity:
    if max_message_bytes is None:
        return security
    return dataclasses.replace(security, max_message_bytes=max_message_bytes)


class _Channels:
    """One lazily created channel per address; retired channels are closed in the background."""

    def __init__(self, security: TransportSecurity) -> None:
        self.security = security
        self._channels: dict[str, Any] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    def get(self, address: str) -> Any:
        if self._closed:
            raise ClosedError("the transport client is closed")
        channel = self._channels.get(address)
        if channel is None:
            channel = self.security.channel(address)
            self._channels[address] = channel
        return channel

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep `task` (a closing) until it is done; `aclose` cancels it."""
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def drop(self, address: str, channel: Any, grace: float) -> None:
        """Retire `channel` if it is still the one cached for `address`."""
        current: Any = self._channels.get(address)
        if current is None or current is not channel:
            return
        del self._channels[address]
        self.track(asyncio.get_running_loop().create_task(current.close(grace)))

    async def aclose(self) -> None:
        self._closed = True
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(None)
        for task in list(self._closing):
            task.cancel()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _built(method: str, pb_request: Any, **fields: Any) -> Any:
    """A `method` request message with `fields`; `WireError` when they do not fit it."""
    try:
        return pb_request(**fields)
    except (ValueError, TypeError) as exc:
        raise WireError(f"cannot encode {method} request: {exc}") from exc


def _stream_session(
    channels: _Channels,
    address: str,
    service: str,
    *,
    window: int,
    max_bytes: int,
    dialer: ChannelDialer | None = None,
) -> StreamSession:
    """A `Session` stream (`DRefStream` or `DRefPeer`) to `address` over `channels`' channel,
    or over the member's TCP channel through `dialer` when it announces one; after
    UNAVAILABLE / DEADLINE_EXCEEDED the stream's channel is dropped, as after a failed unary
    call."""
    opened: Any = None

    def open_grpc() -> Any:
        nonlocal opened
        opened = channels.get(address)
        return opened.stream_stream(messages.method_path(service, messages.SESSION_METHOD))()

    def open_call() -> Any:
        if dialer is None:
            return open_grpc()
        channels.get(address)  # raises ClosedError once closed
        return dialer.call(address, open_grpc)

    def failed(code: grpc.StatusCode) -> None:
        if code in _REBUILD_CODES and opened is not None:
            channels.drop(address, opened, 1.0)

    short = service.rpartition(".")[2]
    return StreamSession(
        address, open_call, failed, window=window, max_bytes=max_bytes, service=short
    )


class PeerClients(AsyncResource):
    """`DRefConsensus` calls to peers by address (`host:port`)."""

    def __init__(
        self,
        *,
        max_message_bytes: int | None = None,
        security: TransportSecurity = PLAINTEXT,
        stream_window: int | None = None,
        channel: bool = False,
    ) -> None:
        self._channels = _Channels(_security(security, max_message_bytes))
        self._max = self._channels.security.max_message_bytes
        #: `stream_window` set: calls go over one `DRefPeer` session per peer (unary to a
        #: peer that does not serve it, asked again after `PEER_STREAM_RETRY` seconds).
        self._stream_window = stream_window
        #: `channel`: sessions use a peer's TCP channel when it announces one.
        self.dialer = (
            ChannelDialer(self._channels.security, "DRefPeer", self._max) if channel else None
        )
        self._sessions: dict[str, tuple[StreamSession, float]] = {}
        #: Snapshot streams get channels of their own: a consensus call that times out drops
        #: its channel, which must not cut a long transfer to a busy follower.
        self._stream_channels = _Channels(self._channels.security)
        #: address → time.monotonic() of the last ERROR about an oversized InstallSnapshot.
        self._oversized = LogThrottle(OVERSIZED_LOG_INTERVAL)

    async def call(self, address: str, request: Request, timeout: float) -> Response:
        """Send `request` to the peer at `address` and return its response.

        Raises `TransportError` if the peer cannot be reached, does not answer within
        `timeout` seconds, fails the RPC, or answers with undecodable bytes; `WireError` if
        `request` itself cannot be encoded (a bug in the caller). An `InstallSnapshot` is
        encoded in a worker thread; one larger than the max message size is not sent: it is
        logged at ERROR (once per `OVERSIZED_LOG_INTERVAL` per peer) and fails.
        """
        method = messages.method_of(request)
        if isinstance(request, InstallSnapshot):
            data = await asyncio.to_thread(messages.encode_request, request)
            if len(data) > self._max:
                self._log_oversized(address, request, len(data))
                raise TransportError(
                    f"{address}: {method}: {len(data)} bytes exceed the max message size "
                    f"{self._max}"
                )
        else:
            data = messages.encode_request(request)
        if timeout <= 0:
            raise TransportError(f"{address}: {method}: no time left")
        path = messages.method_path(messages.CONSENSUS_SERVICE, method)
        answer = await self._stream_call(address, path, data, timeout)
        if answer is None:
            channel = self._channels.get(address)
            rpc = channel.unary_unary(path)
            try:
                answer = await rpc(data, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _REBUILD_CODES:
                    self._channels.drop(address, channel, timeout)
                details = self._channels.security.explain(exc.details())
                raise TransportError(f"{address}: {method}: {exc.code().name}: {details}") from exc
        try:
            return messages.decode_response(request, answer, self._max)
        except WireError as exc:
            raise TransportError(f"{address}: {method}: undecodable response: {exc}") from exc

    async def _stream_call(
        self, address: str, path: str, data: bytes, timeout: float
    ) -> bytes | None:
        """The answer over the `DRefPeer` session to `address`; None: send it unary (no
        session, a request too large for one, or a peer that does not serve `DRefPeer`)."""
        session = self._session(address)
        if session is None or len(data) > session.max_call_bytes:
            return None
        try:
            return await session.call(path, data, timeout)
        except StreamUnsupportedError:
            return None  # nothing was sent
        except RpcStatusError as exc:
            details = self._channels.security.explain(exc.details)
            method = path.rpartition("/")[2]
            raise TransportError(f"{address}: {method}: {exc.code.name}: {details}") from exc

    def _session(self, address: str) -> StreamSession | None:
        if self._stream_window is None:
            return None
        found = self._sessions.get(address)
        now = time.monotonic()
        if found is not None:
            session, since = found
            if not session.unsupported:
                return session
            if now - since < PEER_STREAM_RETRY:
                return None
            self._retire(session)
        session = _stream_session(
            self._channels,
            address,
            messages.PEER_SERVICE,
            window=self._stream_window,
            max_bytes=self._max,
            dialer=self.dialer,
        )
        self._sessions[address] = (session, now)
        return session

    def _retire(self, session: StreamSession) -> None:
        task = asyncio.get_running_loop().create_task(session.aclose())
        self._channels.track(task)

    def _log_oversized(self, address: str, request: InstallSnapshot, size: int) -> None:
        if not self._oversized.due(address):
            return
        logger.error(
            "snapshot for follower %s at %s NOT sent: InstallSnapshot of %d bytes exceeds the max "
            "message size of %d bytes (seq %d); the follower cannot catch up. It does not serve "
            "DRefSnapshot streaming (an upstream node): raise max_message_bytes on every member, "
            "or reduce the state",
            request.to,
            address,
            size,
            self._max,
            request.last_seq,
            extra={"dref_node": request.sender, "dref_term": request.term},
        )

    async def send_snapshot(
        self,
        address: str,
        header: SnapshotHeader,
        path: Path,
        timeout: float,
        *,
        on_chunk: ChunkHook | None = None,
    ) -> InstallResult:
        """Stream the DRFS file at `path` to `address` over `DRefSnapshot` (dref peers), from
        the offset the peer holds (`snapshot_stream.send_snapshot`)."""
        channel = self._stream_channels.get(address)
        try:
            return await send_snapshot(
                channel,
                address,
                header,
                path,
                timeout=timeout,
                max_message_bytes=self._max,
                on_chunk=on_chunk,
            )
        except TransportError:
            self._stream_channels.drop(address, channel, 1.0)
            raise

    async def aclose(self) -> None:
        """Close every channel (in-flight calls are cancelled)."""
        sessions, self._sessions = list(self._sessions.values()), {}
        for session, _ in sessions:
            await session.aclose()
        await self._channels.aclose()
        await self._stream_channels.aclose()


class LeaderClient(AsyncResource):
    """`DRefRaft` calls to the member at `address` (normally the leader).

    Failures raise what upstream's clients read from the status (see `status.py`):
    `NotLeaderError(hint)`, `NoLeaderError`, `QuorumLostError`, `TransportError`,
    `CodecError`, or a fatal `BackendError`. `target_id` fills the informational `id` field.

    With a `stream_window` every call goes over one dref-only `DRefStream/Session` to the
    member (`grpc_stream.StreamSession`, at most that many in flight), with the same requests,
    responses and errors as the unary calls; a member that does not serve it (UNIMPLEMENTED:
    upstream, or `stream = false`) gets unary calls from then on. With `channel` the session
    uses the member's dref-only TCP channel when it announces one (`tcp_channel`).
    """

    def __init__(
        self,
        address: str,
        *,
        target_id: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        max_message_bytes: int | None = None,
        security: TransportSecurity = PLAINTEXT,
        stream_window: int | None = None,
        channel: bool = False,
    ) -> None:
        self.address = address
        self.target_id = target_id
        self.timeout = timeout
        self._channels = _Channels(_security(security, max_message_bytes))
        self._max = self._channels.security.max_message_bytes
        self.applied_seq = 0
        self.last_applied_seq = 0
        self.session: StreamSession | None = None
        """The `DRefStream` session (None: unary calls only)."""
        self.dialer = (
            ChannelDialer(self._channels.security, "DRefStream", self._max) if channel else None
        )
        """Opens the member's TCP channel for the session (None: the gRPC stream only)."""
        if stream_window is not None:
            self.session = _stream_session(
                self._channels,
                address,
                messages.STREAM_SERVICE,
                window=stream_window,
                max_bytes=self._max,
                dialer=self.dialer,
            )

    async def _invoke(self, service: str, method: str, data: bytes, timeout: float | None) -> bytes:
        """One call of `service/method` (over the stream when the member serves it); a failure
        raises `RpcStatusError` with the call's status."""
        path = messages.method_path(service, method)
        wait = self.timeout if timeout is None else timeout
        session = self.session
        if session is not None and not session.unsupported and len(data) <= session.max_call_bytes:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            try:
                return await session.call(path, data, wait)
            except StreamUnsupportedError:
                wait = max(0.001, deadline - loop.time())  # not executed: send it unary
        channel = self._channels.get(self.address)
        rpc = channel.unary_unary(path)
        try:
            answer: bytes = await rpc(data, timeout=wait)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _REBUILD_CODES:
                self._channels.drop(self.address, channel, wait)
            raise RpcStatusError(exc.code(), exc.details() or "") from exc
        return answer

    async def _call(self, method: str, timeout: float | None, **fields: Any) -> Any:
        request = _built(method, messages.raft_pb_classes(method)[0], **fields)
        return await self._send(method, request, timeout)

    async def _send(self, method: str, request: Any, timeout: float | None) -> Any:
        """`DRefRaft/<method>` with the built `request`; its parsed response."""
        try:
            data = request.SerializeToString()
        except (ValueError, TypeError, EncodeError) as exc:
            raise WireError(f"cannot encode {method} request: {exc}") from exc
        try:
            answer = await self._invoke(messages.RAFT_SERVICE, method, data, timeout)
        except RpcStatusError as exc:
            raise self._error(exc) from exc
        pb_response = messages.raft_pb_classes(method)[1]
        try:
            msg = messages.parse(pb_response, answer, pb_response.DESCRIPTOR.name, self._max)
        except WireError as exc:
            raise TransportError(f"{self.address}: {method}: undecodable response: {exc}") from exc
        self.last_applied_seq = seq = int(getattr(msg, "applied_seq", 0))
        if seq > self.applied_seq:
            self.applied_seq = seq
        return msg

    async def set_element(
        self, name: str, value: bytes, expire_at: int | None = None, *, timeout: float | None = None
    ) -> None:
        """`SetElement` (`expire_at`: absolute epoch ms, None for no TTL)."""
        extra = {} if expire_at is None else {"expireAt": expire_at}
        await self._call("SetElement", timeout, id=self.target_id, name=name, value=value, **extra)

    async def set_element_if_not_exist(
        self, name: str, value: bytes, expire_at: int | None = None, *, timeout: float | None = None
    ) -> bool:
        """`SetElementIfNotExist`; True if the element was created."""
        extra = {} if expire_at is None else {"expireAt": expire_at}
        msg = await self._call(
            "SetElementIfNotExist", timeout, id=self.target_id, name=name, value=value, **extra
        )
        return bool(msg.created)

    async def get_element(
        self, name: str, *, timeout: float | None = None, read: ReadRequest = LEADER_READ
    ) -> bytes | None:
        """`GetElement` (the leader runs ReadIndex; `read`: one of dref's read kinds, dref
        members only); None if missing or expired."""
        request = _built("GetElement", _GET_ELEMENT, id=self.target_id, name=name)
        if read.session_seq is not None:
            request.session_seq = read.session_seq
        if read.follower:
            request.follower_read = True
        msg = await self._send("GetElement", request, timeout)
        return bytes(msg.value) if msg.HasField("value") else None

    async def read_index(self, *, timeout: float | None = None) -> int:
        """The leader's read index (dref-only `GetElement` with `read_index`)."""
        await self._call("GetElement", timeout, id=self.target_id, read_index=True)
        return read_index_of(self.address, self.last_applied_seq)

    async def delete_element(self, name: str, *, timeout: float | None = None) -> None:
        """`DeleteElement`."""
        await self._call("DeleteElement", timeout, id=self.target_id, name=name)

    async def expire_element(
        self, name: str, expire_at: int, *, timeout: float | None = None
    ) -> None:
        """`ExpireElement` (keep-alive; absolute epoch ms)."""
        await self._call("ExpireElement", timeout, id=self.target_id, name=name, expireAt=expire_at)

    async def get_endpoints(self, *, timeout: float | None = None) -> list[str]:
        """`GetEndpoints`: the member ids, the responder's own id last."""
        msg = await self._call("GetEndpoints", timeout)
        return [str(i) for i in msg.ids]

    async def compare(self, command: Command, *, timeout: float | None = None) -> CompareResult:
        """`DRefExt/Compare` (dref nodes only): commit a compare command on the leader.

        Errors as for `DRefRaft`; a member that does not serve `DRefExt` (an upstream node)
        raises `CompareUnsupportedError`.
        """
        data = messages.encode_compare_request(command)
        try:
            method = messages.COMPARE_METHOD
            answer = await self._invoke(messages.EXT_SERVICE, method, data, timeout)
        except RpcStatusError as exc:
            if exc.code == grpc.StatusCode.UNIMPLEMENTED:
                raise CompareUnsupportedError(
                    f"{self.address} does not serve DRefExt/Compare (an upstream node?): "
                    "set mixed_cluster = true for clusters with upstream nodes"
                ) from exc
            raise self._error(exc) from exc
        try:
            result = messages.decode_compare_response(answer, self._max)
        except WireError as exc:
            raise TransportError(f"{self.address}: Compare: undecodable response: {exc}") from exc
        self.applied_seq = max(self.applied_seq, result.seq)
        return result

    async def wait_turn(
        self, name: str, ticket: bytes, wait: float, *, timeout: float | None = None
    ) -> tuple[bool, bytes | None]:
        """`DRefFair/WaitTurn` (dref nodes only): the member answers within `wait` s, when
        `ticket` heads `name`'s line or the wait passed."""
        data = fair_messages.encode_wait_turn_request(name, ticket, max(1, round(wait * 1000)))
        try:
            service, method = fair_messages.FAIR_SERVICE, fair_messages.WAIT_TURN_METHOD
            answer = await self._invoke(service, method, data, timeout)
        except RpcStatusError as exc:
            if exc.code == grpc.StatusCode.UNIMPLEMENTED:
                raise UnsupportedOperationError(
                    f"raft member at {self.address} does not serve DRefFair/WaitTurn "
                    "(an upstream node, or a dref node older than fair updates)"
                ) from exc
            raise self._error(exc) from exc
        try:
            return fair_messages.decode_wait_turn_response(answer, self._max)
        except WireError as exc:
            raise TransportError(f"{self.address}: WaitTurn: undecodable response: {exc}") from exc

    async def _ext(self, method: str, data: bytes, timeout: float | None) -> bytes:
        """One unary `DRefExt` call; UNIMPLEMENTED (an upstream or older member) →
        `UnsupportedOperationError`, other failures as for `DRefRaft`."""
        try:
            return await self._invoke(messages.EXT_SERVICE, method, data, timeout)
        except RpcStatusError as exc:
            if exc.code == grpc.StatusCode.UNIMPLEMENTED:
                raise UnsupportedOperationError(
                    f"raft member at {self.address} does not serve DRefExt/{method} "
                    "(an upstream node, or a dref node older than this method)"
                ) from exc
            raise self._error(exc) from exc

    async def names(
        self, prefix: str, after: str = "", limit: int = 0, *, timeout: float | None = None
    ) -> NamesPage:
        """`DRefExt/Names` (dref nodes only): a page of live names, from the leader."""
        data = messages.encode_names_request(prefix, after, limit)
        answer = await self._ext(messages.NAMES_METHOD, data, timeout)
        try:
            return messages.decode_names_response(answer, self._max)
        except WireError as exc:
            raise TransportError(f"{self.address}: Names: undecodable response: {exc}") from exc

    async def status(self, *, timeout: float | None = None) -> MemberStatus:
        """`DRefExt/Status` (dref nodes only): the member's own Raft state."""
        answer = await self._ext(messages.STATUS_METHOD, messages.encode_status_request(), timeout)
        try:
            return messages.decode_member_status(answer, self._max)
        except WireError as exc:
            raise TransportError(f"{self.address}: Status: undecodable response: {exc}") from exc

    def _error(self, exc: RpcStatusError) -> DRefError:
        details = self._channels.security.explain(exc.details)
        return error_of(exc.code, details, self.address)

    async def aclose(self) -> None:
        """Close the stream and the channel."""
        if self.session is not None:
            await self.session.aclose()
        await self._channels.aclose()


class _OneMemberClient(AsyncResource):
    """A channel to the member at `address`, secured per `security`."""

    def __init__(
        self,
        address: str,
        *,
        max_message_bytes: int | None = None,
        security: TransportSecurity = PLAINTEXT,
    ) -> None:
        self.address = address
        self._channels = _Channels(_security(security, max_message_bytes))
        self._max = self._channels.security.max_message_bytes

    async def aclose(self) -> None:
        """Close the channel (open streams end with `TransportError`)."""
        await self._channels.aclose()


class WatchClient(_OneMemberClient):
    """`DRefWatch` streams from the member at `address` (dref nodes only).

    An idle stream stays open. Resuming is the caller's: reconnect with `from_seq` = the last
    seq received (the member replays from there or answers with `resync=True` events).
    """

    async def watch(self, names: list[str], from_seq: int) -> AsyncIterator[WatchEvent]:
        """Yield committed change events of `names` (all when empty) after `from_seq`.

        Raises `TransportError` when the stream breaks, `WatchUnsupportedError` when the
        member does not serve `DRefWatch`, or the error the member's handler reported.
        """
        channel = self._channels.get(self.address)
        rpc = channel.unary_stream(
            messages.method_path(messages.WATCH_SERVICE, messages.WATCH_METHOD)
        )
        call = rpc(messages.encode_watch_request(names, from_seq))
        try:
            while True:
                try:
                    data = await call.read()
                except grpc.aio.AioRpcError as exc:
                    raise self._error(exc, channel) from exc
                if data is grpc.aio.EOF:
                    return
                try:
                    event = messages.decode_watch_event(data, self._max)
                except WireError as exc:
                    raise TransportError(f"{self.address}: Watch: {exc}") from exc
                yield event
        finally:
            call.cancel()

    def _error(self, exc: grpc.aio.AioRpcError, channel: Any) -> DRefError:
        code = exc.code()
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return WatchUnsupportedError(f"{self.address} does not serve DRefWatch")
        if code in _REBUILD_CODES:
            self._channels.drop(self.address, channel, 1.0)
        return error_of(code, self._channels.security.explain(exc.details()), self.address)


class SnapshotClient(_OneMemberClient):
    """`DRefSnapshot/Save` from the member at `address` (dref nodes only): backups."""

    async def save(
        self, write: Callable[[bytes], Awaitable[None]], *, timeout: float
    ) -> SnapshotHeader:
        """Hand the member's snapshot file to `write` in order; its header (size, SHA-256).
        `SnapshotUnsupportedError` from a member without `DRefSnapshot`, `TransportError` when
        the stream breaks."""
        channel = self._channels.get(self.address)
        return await download_snapshot(
            channel, self.address, write, timeout=timeout, max_message_bytes=self._max
        )
