"""`DRefSnapshot` over gRPC (dref-only, docs/raft-wire.md#snapshot-streaming): snapshots in
chunks instead of one `InstallSnapshot` message capped at the max message size.

Server side: `snapshot_rpc_handler` serves a `SnapshotHandler` (the member's
`dref_raft.member.snapshot_transfer.SnapshotTransfer`). Client side: `send_snapshot` (leader →
follower: ask `Held`, then stream the file from there with `Install`) and `download_snapshot`
(`Save`, for backups). Both only touch a channel, so they inherit however the caller's channels
are built.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import grpc

from dref_raft.errors import SnapshotUnsupportedError, TransportError, WireError
from dref_raft.storage.snapshot_files import CHUNK_SIZE, read_chunk
from dref_raft.wire import messages
from dref_raft.wire.snapshot_messages import (
    HELD_METHOD,
    INSTALL_METHOD,
    SAVE_METHOD,
    SNAPSHOT_SERVICE,
    InstallResult,
    SnapshotChunk,
    SnapshotHeader,
    decode_chunk,
    decode_header,
    decode_held,
    decode_install_result,
    encode_chunk,
    encode_header,
    encode_held,
    encode_install_result,
    encode_save_request,
)

__all__ = [
    "SnapshotHandler",
    "download_snapshot",
    "send_snapshot",
    "snapshot_rpc_handler",
]

logger = logging.getLogger("dref_raft.transport")

#: Given each chunk before it is sent, returns what is sent (tests inject faults here).
ChunkHook = Callable[[SnapshotChunk], Awaitable[SnapshotChunk]]


class SnapshotHandler(Protocol):
    """What a member serves as `DRefSnapshot`."""

    async def held(self, header: SnapshotHeader) -> int:
        """Bytes of `header`'s snapshot this member holds (the offset a stream resumes at)."""
        ...

    async def install(self, chunks: AsyncIterator[SnapshotChunk]) -> InstallResult:
        """Receive the chunks (the first carries the header), verify, install."""
        ...

    def save(self) -> AsyncIterator[SnapshotChunk]:
        """A consistent snapshot of this member's state machine, in chunks."""
        ...


def snapshot_rpc_handler(handler: SnapshotHandler, max_message_bytes: int) -> Any:
    """The generic gRPC handler of `DRefSnapshot` for a server's `add_generic_rpc_handlers`."""

    async def held(data: bytes, context: Any) -> bytes:
        try:
            header = decode_header(data, max_message_bytes)
        except WireError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"undecodable request: {exc}")
            raise AssertionError("unreachable") from None
        return encode_held(await handler.held(header))

    async def install(requests: AsyncIterator[bytes], context: Any) -> bytes:
        async def chunks() -> AsyncIterator[SnapshotChunk]:
            async for data in requests:
                yield decode_chunk(data, max_message_bytes)

        return encode_install_result(await handler.install(chunks()))

    async def save(data: bytes, context: Any) -> AsyncIterator[bytes]:
        chunks = handler.save()
        try:
            async for chunk in chunks:
                yield encode_chunk(chunk)
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    return grpc.method_handlers_generic_handler(
        SNAPSHOT_SERVICE,
        {
            HELD_METHOD: grpc.unary_unary_rpc_method_handler(held),
            INSTALL_METHOD: grpc.stream_unary_rpc_method_handler(install),
            SAVE_METHOD: grpc.unary_stream_rpc_method_handler(save),
        },
    )


def _error(address: str, method: str, exc: grpc.aio.AioRpcError) -> TransportError:
    if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
        return SnapshotUnsupportedError(
            f"{address} does not serve DRefSnapshot/{method} (an upstream or older node)"
        )
    return TransportError(f"{address}: DRefSnapshot/{method}: {exc.code().name}: {exc.details()}")


async def send_snapshot(
    channel: Any,
    address: str,
    header: SnapshotHeader,
    path: Path,
    *,
    timeout: float,
    max_message_bytes: int,
    chunk_size: int = CHUNK_SIZE,
    on_chunk: ChunkHook | None = None,
) -> InstallResult:
    """Stream the DRFS file at `path` (described by `header`) to the member at `address`,
    from the offset it already holds; its `InstallResult`.

    Reads the file a chunk at a time in a worker thread (bounded memory). Raises
    `TransportError` when the stream breaks (a retry resumes from what arrived).
    """
    held_rpc = channel.unary_unary(messages.method_path(SNAPSHOT_SERVICE, HELD_METHOD))
    try:
        answer = await held_rpc(encode_header(header), timeout=timeout)
        offset = decode_held(answer, max_message_bytes)
    except grpc.aio.AioRpcError as exc:
        raise _error(address, HELD_METHOD, exc) from exc
    except WireError as exc:
        raise TransportError(f"{address}: DRefSnapshot/Held: {exc}") from exc
    offset = min(offset, header.size)

    async def chunks() -> AsyncIterator[bytes]:
        position, first = offset, True
        while first or position < header.size:
            data = await asyncio.to_thread(read_chunk, path, position, chunk_size)
            if not data and position < header.size:
                raise TransportError(f"{path} ended at {position} of {header.size} bytes")
            chunk = SnapshotChunk.of(position, data, header if first else None)
            if on_chunk is not None:
                chunk = await on_chunk(chunk)
            yield encode_chunk(chunk)
            position += len(data)
            first = False

    install_rpc = channel.stream_unary(messages.method_path(SNAPSHOT_SERVICE, INSTALL_METHOD))
    try:
        answer = await install_rpc(chunks(), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        raise _error(address, INSTALL_METHOD, exc) from exc
    try:
        return decode_install_result(answer, max_message_bytes)
    except WireError as exc:
        raise TransportError(f"{address}: DRefSnapshot/Install: {exc}") from exc


async def download_snapshot(
    channel: Any,
    address: str,
    write: Callable[[bytes], Awaitable[None]],
    *,
    timeout: float,
    max_message_bytes: int,
) -> SnapshotHeader:
    """`Save` from the member at `address`: hand every chunk's data to `write`, in order; the
    header. Chunks out of order or failing their CRC-32 raise `TransportError` (the SHA-256
    is the caller's to check against the header)."""
    rpc = channel.unary_stream(messages.method_path(SNAPSHOT_SERVICE, SAVE_METHOD))
    call = rpc(encode_save_request(), timeout=timeout)
    header: SnapshotHeader | None = None
    position = 0
    try:
        while True:
            try:
                data = await call.read()
            except grpc.aio.AioRpcError as exc:
                raise _error(address, SAVE_METHOD, exc) from exc
            if data is grpc.aio.EOF:
                break
            try:
                chunk = decode_chunk(data, max_message_bytes)
            except WireError as exc:
                raise TransportError(f"{address}: DRefSnapshot/Save: {exc}") from exc
            if header is None:
                if chunk.header is None:
                    raise TransportError(f"{address}: Save: the first chunk has no header")
                header = chunk.header
            if chunk.offset != position or not chunk.crc_ok():
                raise TransportError(
                    f"{address}: Save: bad chunk at offset {chunk.offset} (expected {position}, "
                    f"CRC ok: {chunk.crc_ok()})"
                )
            await write(chunk.data)
            position += len(chunk.data)
    finally:
        call.cancel()
    if header is None:
        raise TransportError(f"{address}: Save: the stream ended without a chunk")
    if position != header.size:
        raise TransportError(f"{address}: Save: got {position} of {header.size} bytes")
    return header
