"""`DiskThread`: one long-lived thread for the driver's blocking store writes (fsync).

The driver waits for each job's result, so at most one job is queued at a time (plus the
closing one). Cheaper per call than `asyncio.to_thread`: no executor bookkeeping, no
context copy, one future resolved straight from the thread. The hand-over is a deque and a
bare lock used as a wake-up signal rather than a `queue.Queue`, whose condition variable wakes
the thread twice per job (once for the job, once more for the queue's own mutex); every wake-up
of the thread costs it a trip through the GIL, which the busy event loop holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["DiskThread"]

_T = TypeVar("_T")
_Job = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]

#: The driver's one awaited job, `close`'s, and the end mark.
_MAX_QUEUED = 3


class DiskThread:
    """Runs blocking calls one at a time in its own thread (started on the first call)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: deque[_Job | None] = deque()
        #: Released ("set") when jobs may be waiting; the thread blocks acquiring it.
        self._signal = threading.Lock()
        self._signal.acquire()
        self._thread: threading.Thread | None = None
        self._closed = False

    async def run(self, fn: Callable[[], _T]) -> _T:
        """`fn()` in the thread; cancelling the caller does not stop a job already queued."""
        if self._closed:
            raise RuntimeError(f"{self._name} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        self._put((fn, loop, future))
        return await future

    async def close(self, last: Callable[[], None] | None = None) -> None:
        """Run `last` after every queued job, then stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            if last is not None:
                await asyncio.to_thread(last)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if last is not None:
            self._put((last, loop, future))
        else:
            future.set_result(None)
        self._put(None)  # the thread ends after `last`, even if we are cancelled
        await asyncio.shield(future)

    def _put(self, job: _Job | None) -> None:
        if len(self._jobs) >= _MAX_QUEUED:
            raise RuntimeError(f"{self._name}: more than one job at a time")
        self._jobs.append(job)
        with contextlib.suppress(RuntimeError):  # released already: the thread will look
            self._signal.release()

    def _serve(self) -> None:
        jobs, signal = self._jobs, self._signal
        while True:
            signal.acquire()  # a job was put since the thread last looked (or a stale signal)
            while jobs:
                job = jobs.popleft()
                if job is None:
                    return
                fn, loop, future = job
                try:
                    result, error = fn(), None
                except BaseException as exc:  # handed to the awaiting caller
                    result, error = None, exc
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                    loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
