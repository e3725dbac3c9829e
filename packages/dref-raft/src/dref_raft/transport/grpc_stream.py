"""`DRefStream/Session` (dref-only, docs/raft-wire.md#drefstream): many calls over one stream.

`DRefPeer/Session` (docs/raft-wire.md#drefpeer) is the same protocol between members, carrying
`DRefConsensus` calls; both halves here serve it (`service` names it in messages).

A call stands for one unary `DRefRaft` / `DRefExt` method: its gRPC path and its serialized
request go out, its serialized response (or the gRPC status the unary method would have failed
with) comes back, matched by id, in any order. Calls are batched: everything queued while the
previous message was being written goes out in one `StreamCalls` message, and the member answers
whatever finished meanwhile in one `StreamAnswers` message.

Client half, `StreamSession`: one stream at a time per member; at most `window` calls in flight
(more callers wait, bounded by their own timeout; the calls sent share one deadline timer per
stream). A caller that is cancelled or times out only forgets its id (the answer is dropped when
it comes). When the stream breaks every call in flight
on it fails with the stream's status (UNAVAILABLE when the member went away: the caller's retry
policy takes over, exactly as after a failed unary call) and the next call opens a new stream.
Nothing is written on a new stream before the member accepts it (initial metadata
`dref-stream: 1`); a member that ends it with UNIMPLEMENTED instead does not serve `DRefStream`
(upstream, or `stream = false`): the queued calls fail with `StreamUnsupportedError` (none was
sent) and the session stays unsupported, so the caller uses the unary methods from then on. Any
other failure before the accept reads as UNAVAILABLE (nothing was executed: retried as for an
unreachable member). Failures of single
calls raise `RpcStatusError` with the status the unary call would have failed with.

Server half, `serve_session`: each call runs as its own task (a batch's proposals reach the
node's driver in the same turn, so they share one Ready and one fsync) unless it can be answered
at once (`instant`: a session read of a seq the member has applied), at most `window` per
stream counting answers not yet written; beyond that the member stops reading and HTTP/2 flow
control pushes back on the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final

import grpc

from dref.errors import ClosedError
from dref_raft.errors import RpcStatusError, StreamUnsupportedError, WireError
from dref_raft.transport.status import status_of
from dref_raft.wire import messages

__all__ = ["ACCEPTED_KEY", "ACCEPTED_VALUE", "Instant", "StreamSession", "serve_session"]

logger = logging.getLogger("dref_raft.transport")

ACCEPTED_KEY: Final = "dref-stream"
ACCEPTED_VALUE: Final = "1"
"""The initial metadata a member serving `Session` sends first: the stream is accepted."""
MAX_BATCH_CALLS: Final = 1024
"""Calls (or answers) per stream message at most."""
MAX_BATCH_BYTES: Final = 1 << 20
"""A batch is closed once its requests (or responses) reach this many bytes."""
SILENT_RESET: Final = 1.0
"""A call that timed out after waiting this long (s) on a stream that answered nothing in the
meantime resets the stream (a hung member: the next call reconnects, as a unary call rebuilds
its channel after DEADLINE_EXCEEDED)."""

_RESOLUTION: Final = time.get_clock_info("monotonic").resolution
"""A loop timer may run this much before its time (asyncio runs timers due within it)."""

_CODES: Final[dict[int, grpc.StatusCode]] = {code.value[0]: code for code in grpc.StatusCode}

_REFUSALS: Final = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
"""Statuses of a member refusing the stream (credentials, limits): kept as they are, as a unary
call gets them (a message above the member's limit fails every call of that stream, though)."""

Method = Callable[[bytes], Awaitable[bytes]]
"""A served method: request bytes in, response bytes out; raises what the unary method would."""
Instant = Callable[[bytes], bytes | None]
"""A method's answer computed at once when it can be (None, or an exception: it cannot, the
`Method` serves the call)."""


class _Stream:
    """One open `Session` call: its calls in flight, its writer and reader tasks."""

    def __init__(self, session: StreamSession, call: Any) -> None:
        self.session = session
        self.call = call
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.queue: deque[tuple[int, str, bytes]] = deque()
        self.deadlines = _Deadlines(self.pending)
        self.wake = asyncio.Event()
        self.broken = False
        self.accepted = False
        self.last_answer = -1.0
        where = session.address
        self.writer = asyncio.create_task(self._write(), name=f"dref-stream-write:{where}")
        self.reader = asyncio.create_task(self._read(), name=f"dref-stream-read:{where}")

    def send(
        self, call_id: int, method: str, request: bytes, deadline: float
    ) -> asyncio.Future[bytes]:
        """Queue a call; its future fails with `TimeoutError` once `deadline` (loop time)
        passes unanswered."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = future
        self.queue.append((call_id, method, request))
        self.deadlines.add(deadline, call_id)
        self.wake.set()
        return future

    async def _write(self) -> None:
        session = self.session
        try:
            # Nothing is written before the member accepts the stream (its initial metadata
            # carries ACCEPTED): a member without the service ends the call with UNIMPLEMENTED
            # instead, and then no call was sent (a write racing that status fails with INTERNAL,
            # which would not say whether the member has the service).
            metadata = await self.call.initial_metadata()
            if (ACCEPTED_KEY, ACCEPTED_VALUE) not in tuple(metadata or ()):
                code, details = grpc.StatusCode.UNKNOWN, "no accept in the initial metadata"
                with contextlib.suppress(TimeoutError):  # its status: UNIMPLEMENTED, normally
                    async with asyncio.timeout(SILENT_RESET):
                        code, details = await self.call.code(), await self.call.details()
                self.fail(code, details or "")
                return
            self.accepted = True
            while True:
                await self.wake.wait()
                self.wake.clear()
                while self.queue:
                    batch: list[tuple[int, str, bytes]] = []
                    size = 0
                    queue, pending, cap = self.queue, self.pending, session.max_call_bytes
                    while queue and len(batch) < MAX_BATCH_CALLS:
                        if batch and size + len(queue[0][2]) > cap:
                            break  # the batch stays below the message limit
                        item = queue.popleft()
                        if item[0] in pending:  # else its caller gave up before it was sent
                            batch.append(item)
                            size += len(item[2])
                    if batch:
                        # Counted first: an answer can come back before the write returns.
                        session.batches_sent += 1
                        session.calls_sent += len(batch)
                        await self.call.write(messages.encode_stream_calls(batch))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the call ended under the write (`fail` reads any status)
            code, details = grpc.StatusCode.UNKNOWN, f"stream write failed: {exc!r}"
            if self.call.done():
                code, details = await self.call.code(), await self.call.details() or details
            self.fail(code, details)

    async def _read(self) -> None:
        session = self.session
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await self.call.read()
                if data is grpc.aio.EOF:
                    code = await self.call.code()
                    details = await self.call.details()
                    if code == grpc.StatusCode.OK:
                        code, details = grpc.StatusCode.UNAVAILABLE, f"{session.service} ended"
                    self.fail(code, details or "")
                    return
                try:
                    answers = messages.decode_stream_answers(data, session.max_bytes)
                except WireError as exc:
                    self.fail(grpc.StatusCode.UNAVAILABLE, f"undecodable StreamAnswers: {exc}")
                    return
                self.last_answer = loop.time()
                pending = self.pending
                for call_id, response, code, details in answers:
                    future = pending.pop(call_id, None)
                    if future is None or future.done():
                        continue  # its caller gave up
                    if code == 0:
                        future.set_result(response)
                    else:
                        future.set_exception(
                            RpcStatusError(_CODES.get(code, grpc.StatusCode.UNKNOWN), details)
                        )
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as exc:
            self.fail(exc.code(), exc.details() or "")

    def fail(self, code: grpc.StatusCode, details: str) -> None:
        """Break this stream: every call in flight on it fails.

        The stream's own status is about the connection, not about the calls (their statuses
        come in their answers), so they fail as unary calls to an unreachable member do:
        UNAVAILABLE (→ `TransportError`, retried), naming the stream's status. (grpc-core ends a
        stream whose member died under a write with INTERNAL "Internal error from Core", which
        read as a unary status would be fatal.) Before the member accepted the stream no call
        was sent: UNIMPLEMENTED then means it does not serve `DRefStream`.
        """
        if self.broken:
            return
        self.broken = True
        session = self.session
        unsupported = not self.accepted and code == grpc.StatusCode.UNIMPLEMENTED
        if unsupported:
            session.unsupported = True
            logger.info("%s does not serve %s: using unary calls", session.address, session.service)
        else:
            logger.debug(
                "%s to %s broke: %s: %s", session.service, session.address, code.name, details
            )
            if code not in _REFUSALS:
                state = "broke" if self.accepted else "was not accepted"
                code, details = (
                    grpc.StatusCode.UNAVAILABLE,
                    f"{session.service} {state}: {code.name}: {details}",
                )
            session.on_failure(code)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(
                    StreamUnsupportedError(f"{session.address} does not serve {session.service}")
                    if unsupported
                    else RpcStatusError(code, details)
                )
        self.pending.clear()
        self.queue.clear()
        self.deadlines.clear()
        self.call.cancel()
        current = asyncio.current_task()
        for task in (self.writer, self.reader):
            if task is not current:
                task.cancel()

    async def aclose(self) -> None:
        self.fail(grpc.StatusCode.CANCELLED, "the client is closed")
        await asyncio.gather(self.writer, self.reader, return_exceptions=True)


class _Deadlines:
    """The deadlines of one stream's calls in flight, behind ONE loop timer (armed for the
    earliest): a timer per call would cost a heap push and a cancelled handle left in the
    loop's heap for every call. A call past its deadline and still in `pending` fails with
    `TimeoutError` (answers only ever fail with `RpcStatusError`, so that one is this timer's);
    entries of answered calls are dropped lazily, and the heap is rebuilt without them once
    they outnumber the calls in flight."""

    def __init__(self, pending: dict[int, asyncio.Future[bytes]]) -> None:
        self._pending = pending
        self._heap: list[tuple[float, int]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._armed = math.inf
        """When the timer fires (inf: not armed)."""

    def add(self, deadline: float, call_id: int) -> None:
        heap = self._heap
        if len(heap) > 64 and len(heap) > 4 * len(self._pending):
            pending = self._pending
            heap[:] = [entry for entry in heap if entry[1] in pending]
            heapq.heapify(heap)
        heapq.heappush(heap, (deadline, call_id))
        if deadline < self._armed:
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = when
        self._timer = asyncio.get_running_loop().call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer, self._armed = None, math.inf
        heap, pending = self._heap, self._pending
        due = asyncio.get_running_loop().time() + _RESOLUTION
        while heap and (heap[0][0] <= due or heap[0][1] not in pending):
            _, call_id = heapq.heappop(heap)
            future = pending.get(call_id)
            if future is not None and not future.done():
                future.set_exception(TimeoutError())
        if heap:
            self._arm(heap[0][0])

    def clear(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._armed = None, math.inf
        self._heap.clear()


class StreamSession:
    """The client half of `DRefStream/Session` to one member (see the module docstring).

    `open_call()` starts a new `Session` call (raises `ClosedError` once the owner is closed);
    `on_failure(code)` is told the status of a broken stream (the owner drops its channel after
    UNAVAILABLE / DEADLINE_EXCEEDED, as after a failed unary call).
    """

    def __init__(
        self,
        address: str,
        open_call: Callable[[], Any],
        on_failure: Callable[[grpc.StatusCode], None],
        *,
        window: int,
        max_bytes: int,
        service: str = "DRefStream",
    ) -> None:
        self.address = address
        self.service = service
        """The service's short name, for messages (`DRefStream`, or `DRefPeer` between members)."""
        self.max_bytes = max_bytes
        self.max_call_bytes = min(MAX_BATCH_BYTES, max_bytes // 2)
        """Requests larger than this go as unary calls (a stream message above the members'
        message limit would break the whole stream; unary, only that call fails); batches stay
        below it too."""
        self.on_failure = on_failure
        self.unsupported = False
        """The member answered UNIMPLEMENTED: callers use unary calls."""
        self.batches_sent = 0
        self.calls_sent = 0
        self.streams_opened = 0
        self._open = open_call
        self._window = asyncio.Semaphore(window)
        self._size = window
        self._ids = itertools.count(1)
        self._stream: _Stream | None = None
        self._old: set[_Stream] = set()

    def _current(self) -> _Stream:
        stream = self._stream
        if stream is None or stream.broken:
            if stream is not None:
                self._retire(stream)
            stream = self._stream = _Stream(self, self._open())
            self.streams_opened += 1
        return stream

    def _retire(self, stream: _Stream) -> None:
        self._old.add(stream)
        done = asyncio.gather(stream.writer, stream.reader, return_exceptions=True)
        done.add_done_callback(lambda _: self._old.discard(stream))

    async def call(self, method: str, request: bytes, timeout: float) -> bytes:
        """Send `request` for the unary method at path `method`; its response bytes.

        Raises `RpcStatusError` (the member's status for this call, or the broken stream's;
        DEADLINE_EXCEEDED after `timeout` seconds) or `StreamUnsupportedError`.
        """
        if self.unsupported:
            raise StreamUnsupportedError(f"{self.address} does not serve {self.service}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        window = self._window
        if window.locked():
            try:
                async with asyncio.timeout_at(deadline):
                    await window.acquire()
            except TimeoutError:
                raise RpcStatusError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"{self._size} calls in flight on the {self.service} session",
                ) from None
        else:
            await window.acquire()  # free: returns at once
        try:
            stream = self._current()
            call_id = next(self._ids)
            sent_at = loop.time()
            future = stream.send(call_id, method, request, deadline)
            try:
                return await future
            except TimeoutError:
                if loop.time() - sent_at >= SILENT_RESET and stream.last_answer < sent_at:
                    stream.fail(grpc.StatusCode.DEADLINE_EXCEEDED, "the member answers nothing")
                code = grpc.StatusCode.DEADLINE_EXCEEDED
                raise RpcStatusError(code, "Deadline Exceeded") from None
            finally:
                stream.pending.pop(call_id, None)
        finally:
            window.release()

    async def aclose(self) -> None:
        """Close the stream: calls in flight fail with CANCELLED."""
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()
        if self._old:
            await asyncio.gather(*(s.aclose() for s in list(self._old)))


# ------------------------------------------------------------------------------ server half


class _Session:
    """What one served stream holds: answers not yet written, the calls running."""

    def __init__(self, window: int) -> None:
        self.slots = asyncio.Semaphore(window)
        self.out: list[tuple[int, bytes, int, str]] = []
        self.wake = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.finished = False


async def serve_session(
    requests: AsyncIterator[bytes],
    write: Callable[[bytes], Awaitable[None]],
    methods: Mapping[str, Method],
    *,
    window: int,
    max_bytes: int,
    node_id: str,
    service: str = "DRefStream",
    instant: Mapping[str, Instant] | None = None,
) -> None:
    """Serve one `Session`: run each call of each `StreamCalls` message read from `requests`
    with `methods[path]`, write answers in batches with `write`. Returns once the client has
    finished sending and every call is answered; an undecodable message raises `WireError`.
    A call `instant[path]` answers at once needs no task of its own."""
    instant = instant or {}
    state = _Session(window)

    async def answer(call_id: int, method: str, request: bytes) -> None:
        try:
            served = methods.get(method)
            if served is None:
                code = grpc.StatusCode.UNIMPLEMENTED
                item = (call_id, b"", code.value[0], f"{method}: not served")
            else:
                item = (call_id, await served(request), 0, "")
        except WireError as exc:
            logger.warning("node %s: rejected an undecodable %s call: %s", node_id, method, exc)
            code = grpc.StatusCode.INVALID_ARGUMENT
            item = (call_id, b"", code.value[0], f"undecodable request: {exc}")
        except Exception as exc:
            code, details = status_of(exc)
            if isinstance(exc, ClosedError):
                logger.debug("node %s: %s %s: %s", node_id, service, method, exc)
            elif code == grpc.StatusCode.INTERNAL and not details.startswith("serialize: "):
                logger.exception("node %s: %s %s failed", node_id, service, method)
            item = (call_id, b"", code.value[0], details)
        state.out.append(item)
        state.wake.set()

    async def writer() -> None:
        while True:
            await state.wake.wait()
            state.wake.clear()
            while state.out:
                batch = state.out[:MAX_BATCH_CALLS]
                del state.out[: len(batch)]
                await write(messages.encode_stream_answers(batch))
                for _ in batch:
                    state.slots.release()
            if state.finished:
                return

    writing = asyncio.create_task(writer(), name=f"dref-stream-serve:{node_id}")
    try:
        async for data in requests:
            for call_id, method, request in messages.decode_stream_calls(data, max_bytes):
                if writing.done():  # the client went away under the writer
                    await writing
                    return
                await state.slots.acquire()
                now = instant.get(method)
                if now is not None:
                    try:
                        response = now(request)
                    except Exception:
                        response = None  # the method itself answers it (with its error)
                    if response is not None:
                        state.out.append((call_id, response, 0, ""))
                        state.wake.set()
                        continue
                task = asyncio.create_task(answer(call_id, method, request))
                state.tasks.add(task)
                task.add_done_callback(state.tasks.discard)
        if state.tasks:
            await asyncio.wait(list(state.tasks))
        state.finished = True
        state.wake.set()
        await writing
    finally:
        writing.cancel()
        for task in list(state.tasks):
            task.cancel()
