"""The member's disk thread: blocking writes off the event loop, one at a time, in order."""

from __future__ import annotations

import asyncio
import threading

import pytest

from dref_raft.member.disk_thread import DiskThread


async def test_jobs_run_in_one_other_thread_and_return_or_raise() -> None:
    disk = DiskThread("test-disk")
    threads = [await disk.run(threading.get_ident) for _ in range(3)]
    assert len(set(threads)) == 1
    assert threads[0] != threading.get_ident()

    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        await disk.run(fail)
    assert await disk.run(lambda: 42) == 42  # a failed job does not stop the thread
    await disk.close()


async def test_a_cancelled_caller_leaves_its_job_to_finish_and_close_runs_last_after_it() -> None:
    disk = DiskThread("test-disk")
    started, release = threading.Event(), threading.Event()
    done: list[str] = []

    def write() -> None:
        started.set()
        assert release.wait(10)
        done.append("write")

    caller = asyncio.create_task(disk.run(write))
    assert await asyncio.to_thread(started.wait, 10)
    caller.cancel()  # as `aclose` cancels the driver while its persist runs
    with pytest.raises(asyncio.CancelledError):
        await caller
    closing = asyncio.create_task(disk.close(lambda: done.append("close")))
    await asyncio.sleep(0)
    assert not closing.done()
    assert done == []
    release.set()
    async with asyncio.timeout(10):
        await closing
    assert done == ["write", "close"]
    thread = disk._thread
    assert thread is not None
    await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        await disk.run(lambda: None)


async def test_close_without_a_job_ever_run_still_runs_last() -> None:
    disk = DiskThread("test-disk")
    done: list[int] = []
    await disk.close(lambda: done.append(threading.get_ident()))
    assert done
    assert done[0] != threading.get_ident()
    await disk.close()  # idempotent
