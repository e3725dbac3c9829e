"""`dref.sync`: the API without `await` (docs/sync.md), on the in-memory backend."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import dref.sync
from dref.errors import (
    ClosedError,
    ConfigurationError,
    ElementNotFoundError,
    LockStolenError,
    LockTimeoutError,
    StaleFenceError,
)

DEADLINE = 10.0


def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {DEADLINE} s")
        time.sleep(0.005)  # polling a condition with a deadline


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dref-sync-loop")]


@pytest.fixture
def ctx() -> Iterator[dref.sync.SyncContext]:
    with dref.sync.connect("inmemory", namespace=f"sync-{uuid.uuid4().hex}") as ctx:
        yield ctx


def test_values_without_await(ctx: dref.sync.SyncContext) -> None:
    visits = ctx.make(0, "visits")
    visits.update(lambda n: n + 1)
    assert visits.get() == 1
    assert visits.modify(lambda n: (f"#{n}", n + 10)) == "#1"
    assert visits.get_and_update(lambda n: n * 2) == 11
    assert visits.update_and_get(lambda n: n + 1) == 23
    assert ctx.make(99, "visits").get() == 23  # make keeps an existing value
    assert ctx.names("vis") == ["visits"]
    visits.delete()
    with pytest.raises(ElementNotFoundError):
        visits.get()


def test_ttl_and_fenced_writes_without_await(ctx: dref.sync.SyncContext) -> None:
    flag = ctx.make("on", "flag", ttl=0.2)
    assert flag.get() == "on"
    until(lambda: "flag" not in ctx.names("flag"), "the seeded value expiring")
    report = ctx.make(0, "report")
    with ctx.lock("report-lock", ttl=5) as guard:
        report.set(1, fence=guard)
        report.update(lambda n: n + 1, fence=guard)
    with ctx.lock("report-lock", ttl=5):  # acquired again: the old guard is stale
        with pytest.raises(StaleFenceError):
            report.set(10, fence=guard)
        with pytest.raises(StaleFenceError):
            report.delete(fence=guard)
    assert report.get() == 2


def test_many_threads_at_once(ctx: dref.sync.SyncContext) -> None:
    counter = ctx.make(0, "counter")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: counter.update(lambda n: n + 1), range(200)))
    assert counter.get() == 200


def test_lock_is_kept_alive_while_the_thread_is_busy(ctx: dref.sync.SyncContext) -> None:
    with ctx.lock("busy", ttl=0.3) as guard:
        time.sleep(1.0)  # the work: more than three TTLs without calling dref
        assert not guard.lost
        assert ctx.context.backend.capabilities.fencing
        assert guard.fence == 1
    assert guard.held is False


def test_lost_lock_raises_at_the_next_call_in_the_holder_thread(
    ctx: dref.sync.SyncContext,
) -> None:
    ref = ctx.make(0, "other")
    with ctx.lock("job", ttl=5) as guard:
        ctx.ref("job").set("stolen")  # another owner's value replaces our token
        until(lambda: guard.lost, "guard.lost")
        with pytest.raises(LockStolenError, match="Lock job with value"):
            ref.get()
        assert ref.get() == 0  # reported once; the thread goes on
    assert guard.lost_reason is not None


def test_lost_lock_raises_when_leaving_the_with(ctx: dref.sync.SyncContext) -> None:
    with pytest.raises(LockStolenError), ctx.lock("job2", ttl=5) as guard:
        # no call into dref from this thread from here on
        threading.Thread(target=lambda: ctx.ref("job2").delete()).start()
        until(lambda: guard.lost, "guard.lost")


def test_lock_timeout(ctx: dref.sync.SyncContext) -> None:
    with ctx.lock("held", ttl=5):
        failure: list[BaseException] = []

        def other() -> None:
            try:
                with ctx.lock("held", ttl=5, timeout=0.1):
                    pass
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(DEADLINE)
    assert isinstance(failure[0], LockTimeoutError)


def test_changes_as_a_blocking_iterator(ctx: dref.sync.SyncContext) -> None:
    ref = ctx.make(0, "live")
    with ref.changes() as stream:
        writer = threading.Thread(target=lambda: [ref.set(i) for i in (1, 2, 3)])
        writer.start()
        seen = [next(stream) for _ in range(3)]
        writer.join(DEADLINE)
    assert seen == [1, 2, 3]


def test_changes_since_a_revision(ctx: dref.sync.SyncContext) -> None:
    ref = ctx.make(0, "resumed")
    value, revision = ref.get_with_revision()
    assert value == 0
    for i in (1, 2, 3):
        ref.set(i)
    with ref.changes(since=revision) as stream:
        assert [next(stream) for _ in range(3)] == [1, 2, 3]
        assert stream.revision == ref.get_with_revision()[1]


def test_clean_shutdown_leaves_no_thread() -> None:
    before = len(loop_threads())
    ctx = dref.sync.connect("inmemory", namespace=f"sync-{uuid.uuid4().hex}")
    ref = ctx.make(1, "x")
    stream = ref.changes().__enter__()
    assert len(loop_threads()) == before + 1
    ctx.close()
    ctx.close()  # idempotent
    assert len(loop_threads()) == before
    with pytest.raises(ClosedError):
        ref.get()
    assert list(stream) == []


def test_bad_configuration_fails_before_a_thread_starts() -> None:
    before = len(loop_threads())
    with pytest.raises(ConfigurationError):
        dref.sync.connect("inmemory", lock_ttl="soon")
    assert len(loop_threads()) == before


def test_the_usage_file_passes_mypy_strict() -> None:
    api = pytest.importorskip("mypy.api")
    usage = Path(__file__).with_name("typing_sync_usage.py")
    out, err, status = api.run(["--strict", "--no-incremental", str(usage)])
    assert status == 0, out + err
