"""The backend conformance suite: the definition of "a backend works".

A backend's test file runs it by subclassing:

```python
from dref_compat.conformance import BackendConformance

class TestMyBackend(BackendConformance):
    backend = "mybackend"

    @pytest.fixture
    def connect_options(self, my_server):      # optional: options for dref.connect
        return {"url": my_server.url}
```

Every test opens real contexts through `dref.connect`, so it exercises the plugin, the settings and
the backend together. `capabilities` decide what is asserted: a backend is held to exactly what it
claims. Waiting is on conditions with deadlines, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

import dref
from dref import lock_value
from dref.errors import (
    ChangeStreamLaggedError,
    CodecError,
    ElementNotFoundError,
    LockStolenError,
    LockTimeoutError,
    StaleFenceError,
    UnsupportedOperationError,
)
from dref_compat import fairness
from dref_compat.lost_answers import LostAnswerConformance
from dref_compat.vectors import load_vectors

__all__ = ["BackendConformance", "eventually"]


async def _true(value: bool) -> bool:
    return value


DEADLINE = 10.0


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = DEADLINE, what: str = "condition"
) -> None:
    """Wait until `check()` is true, re-checking on every loop turn, failing after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.001
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(delay)  # back-off between re-checks, not a settle-sleep
        delay = min(delay * 2, 0.05)


@dataclass
class Wrapper:
    """Upstream's cross-language test struct `{value: String}`."""

    value: str


class BackendConformance(LostAnswerConformance):
    """Subclass with `backend = "<id>"` (and optionally a `connect_options` fixture); a backend
    claiming `exactly_once` implements `lose_next_answer` (`dref_compat.lost_answers`)."""

    backend: ClassVar[str]
    contenders: ClassVar[int] = 20
    lock_ttl: ClassVar[float] = 2.0
    fairness_updates: ClassVar[int] = 2000
    revision_history: ClassVar[int] = 4096
    """How many changes of one element the backend's history is configured to keep in this
    test class (set it small in `connect_options` to keep the history test short)."""

    # -- fixtures -------------------------------------------------------------------------------
    @pytest.fixture
    def connect_options(self) -> dict[str, Any]:
        return {}

    @pytest.fixture
    async def open_context(
        self, connect_options: dict[str, Any]
    ) -> AsyncIterator[Callable[[], Awaitable[dref.DRefContext]]]:
        async with AsyncExitStack() as stack:

            async def open_one() -> dref.DRefContext:
                return await stack.enter_async_context(
                    dref.connect(self.backend, **connect_options)
                )

            yield open_one

    @pytest.fixture
    async def ctx(
        self, open_context: Callable[[], Awaitable[dref.DRefContext]]
    ) -> dref.DRefContext:
        return await open_context()

    @pytest.fixture
    async def ctx2(
        self, open_context: Callable[[], Awaitable[dref.DRefContext]]
    ) -> dref.DRefContext:
        return await open_context()

    @pytest.fixture
    def fairness_options(self, connect_options: dict[str, Any]) -> dict[str, Any]:
        """Options with which other processes connect for the fairness test (picklable)."""
        return connect_options

    @pytest.fixture
    def name(self) -> str:
        return f"conformance:{uuid.uuid4().hex}"

    # -- golden vectors -------------------------------------------------------------------------
    async def test_string_value_bytes_match_upstream(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        vec = load_vectors("vectors")["msgpack_string_hello"]
        ref = await ctx.make(vec["value"], name)
        assert await ctx.backend.get(ref.name) == bytes.fromhex(vec["hex"])
        assert await ref.get() == "hello"

    async def test_struct_value_bytes_match_upstream(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        vec = load_vectors("vectors")["msgpack_wrapper_hello"]
        ref = await ctx.make(Wrapper(vec["value"]["value"]), name)
        assert await ctx.backend.get(name) == bytes.fromhex(vec["hex"])
        assert await ref.get() == Wrapper("hello")

    async def test_reads_value_written_by_upstream(self, ctx: dref.DRefContext, name: str) -> None:
        vec = load_vectors("vectors")["msgpack_wrapper_hello"]
        await ctx.backend.set(name, bytes.fromhex(vec["hex"]))
        ref = await ctx.make(Wrapper("ignored: the element exists"), name)
        assert await ref.get() == Wrapper("hello")

    async def test_lock_token_is_upstream_lock_value(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        vec = load_vectors("vectors")["lock_value"]
        assert lock_value.to_bytes(vec["value"]).hex() == vec["hex"]
        async with ctx.lock(name, ttl=self.lock_ttl) as guard:
            assert await ctx.backend.get(name) == guard.token
            assert len(guard.token) == 8
            assert lock_value.from_bytes(guard.token) == guard.token_int

    # -- values ---------------------------------------------------------------------------------
    async def test_get_set_delete(self, ctx: dref.DRefContext, name: str) -> None:
        ref = await ctx.make(1, name)
        assert await ref.get() == 1
        await ref.set(2)
        assert await ref.get() == 2
        await ref.delete()
        with pytest.raises(ElementNotFoundError, match=f"^Element {name} not found$"):
            await ref.get()

    async def test_session_reads_see_the_contexts_own_writes(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        caps = ctx.backend.capabilities
        ref = ctx.ref(name, type=int)
        await ref.set(0)
        if not (caps.session_reads or caps.linearizable):
            with pytest.raises(UnsupportedOperationError) as exc:
                await ref.get(consistency="session")
            assert exc.value.capability == "session_reads"
            return
        for i in range(1, 6):
            await ref.set(i)
            assert await ref.get(consistency="session") == i
        await ref.delete()
        with pytest.raises(ElementNotFoundError):
            await ref.get(consistency="session")

    async def test_make_keeps_an_existing_value(self, ctx: dref.DRefContext, name: str) -> None:
        await ctx.make("first", name)
        ref = await ctx.make("second", name)
        assert await ref.get() == "first"

    async def test_writes_are_visible_to_other_contexts(
        self, ctx: dref.DRefContext, ctx2: dref.DRefContext, name: str
    ) -> None:
        ref = await ctx.make({"a": [1, 2]}, name)
        other = ctx2.ref(name, type=dict)
        await ref.set({"a": [3]})
        if ctx.backend.capabilities.linearizable:
            assert await other.get() == {"a": [3]}
        else:

            async def seen() -> bool:
                return bool(await other.get() == {"a": [3]})

            await eventually(seen, what="write visible from the other context")

    async def test_set_if_not_exist_has_exactly_one_winner(
        self, ctx: dref.DRefContext, ctx2: dref.DRefContext, name: str
    ) -> None:
        refs = [ctx.ref(name, type=int), ctx2.ref(name, type=int)]
        results = await asyncio.gather(
            *(refs[i % 2].set_if_not_exist(i) for i in range(self.contenders))
        )
        assert sum(results) == 1
        assert await refs[0].get() == results.index(True)

    async def test_concurrent_updates_are_atomic(
        self, ctx: dref.DRefContext, ctx2: dref.DRefContext, name: str
    ) -> None:
        refs = [await ctx.make(0, name), await ctx2.make(0, name)]
        await asyncio.gather(*(refs[i % 2].update(lambda n: n + 1) for i in range(self.contenders)))
        assert await refs[0].get() == self.contenders

    async def test_modify_family(self, ctx: dref.DRefContext, name: str) -> None:
        ref = await ctx.make(10, name)
        assert await ref.modify(lambda n: (f"was {n}", n * 2)) == "was 10"
        assert await ref.get_and_update(lambda n: n + 1) == 20
        assert await ref.update_and_get(lambda n: n + 1) == 22

        async def add_async(n: int) -> int:
            await asyncio.sleep(0)
            return n + 100

        assert await ref.update_and_get(add_async) == 122

    async def test_update_through_a_stale_handle_sees_other_writers(
        self, ctx: dref.DRefContext, ctx2: dref.DRefContext, name: str
    ) -> None:
        mine = await ctx.make(0, name)
        assert await mine.update_and_get(lambda n: n + 1) == 1
        theirs = ctx2.ref(name, type=int)
        await theirs.set(100)
        assert await mine.update_and_get(lambda n: n + 1) == 101
        await theirs.delete()
        with pytest.raises(ElementNotFoundError):
            await mine.update(lambda n: n + 1)
        await theirs.set(7)
        assert await mine.update_and_get(lambda n: n * 2) == 14

    async def test_modify_of_a_missing_element_fails(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        ref = ctx.ref(name, type=int)
        with pytest.raises(ElementNotFoundError):
            await ref.update(lambda n: n + 1)

    async def test_undecodable_value_raises_codec_error_naming_the_element(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        await ctx.backend.set(name, b"\xc1 not msgpack")
        ref = ctx.ref(name, type=int)
        with pytest.raises(CodecError, match=name):
            await ref.get()

    async def test_value_of_wrong_type_raises_codec_error(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        await ctx.make("text", name)
        with pytest.raises(CodecError, match=name):
            await ctx.ref(name, type=Wrapper).get()

    # -- change streams -------------------------------------------------------------------------
    async def test_changes_arrive_in_order_to_every_subscriber(
        self, ctx: dref.DRefContext, ctx2: dref.DRefContext, name: str
    ) -> None:
        ref = await ctx.make(0, name)
        other = ctx2.ref(name, type=int)
        # A write returns once the writer's own side has it; ctx2 may be served by another
        # (a Raft follower that applies it a moment later): it reads the seed first, so that its
        # stream too starts after the seed.
        assert await other.get() == 0
        async with ref.changes() as s1, other.changes() as s2, ref.changes() as s3:
            for i in range(1, 21):
                await ref.set(i)
            for stream in (s1, s2, s3):
                got = [await _next(stream) for _ in range(20)]
                assert got == list(range(1, 21))

    async def test_delete_events(self, ctx: dref.DRefContext, name: str) -> None:
        ref = await ctx.make("x", name)
        async with await ctx.backend.subscribe(name) as raw, ref.changes() as values:
            await ref.delete()
            await ref.set("y")
            first = await _next(raw)
            assert first.name == name
            assert first.deleted
            assert (await _next(raw)).value == await ctx.backend.get(name)
            assert await _next(values) == "y"  # DRef streams skip deletes, as upstream

    async def test_on_change_calls_back_until_cancelled(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        ref = await ctx.make(0, name)
        seen: list[int] = []
        handle = await ref.on_change(seen.append)
        await ref.set(1)
        await ref.set(2)

        async def both() -> bool:
            return seen == [1, 2]

        await eventually(both, what="on_change saw 1, 2")
        handle.cancel()

        async def stopped() -> bool:
            return handle.done

        await eventually(stopped, what="handle done")

    # -- exactly-once writes (capability `exactly_once`) ---------------------------------------
    async def test_a_write_whose_answer_was_lost_is_applied_once(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        """The answer of an applied write is lost; the context sends it again (same session and
        request number) and gets the recorded result: `set_if_not_exist` still reports that it
        created the element, and an increment is applied exactly once."""
        if not ctx.backend.capabilities.exactly_once:
            pytest.skip("backend does not claim exactly_once: a lost answer may apply twice")
        lost = self.lose_next_answer(ctx)
        assert await ctx.backend.set_if_not_exist(name, b"\x00")
        assert lost is None or lost() == 1
        await ctx.backend.delete(name)
        ref = await ctx.make(0, name)
        lost = self.lose_next_answer(ctx)
        assert await ref.update_and_get(lambda n: n + 1) == 1
        assert lost is None or lost() == 1
        assert await ref.get() == 1
        assert await ref.update_and_get(lambda n: n + 1) == 2

    def _revisions(self, ctx: dref.DRefContext) -> None:
        if not ctx.backend.capabilities.revisions:
            pytest.skip("backend does not claim revisions")

    async def test_without_revisions_since_is_refused_clearly(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        if ctx.backend.capabilities.revisions:
            pytest.skip("backend claims revisions (the tests below hold it to them)")
        ref = await ctx.make(0, name)
        with pytest.raises(UnsupportedOperationError, match="revisions"):
            await ref.get_with_revision()
        with pytest.raises(UnsupportedOperationError, match="revisions"):
            ref.changes(since=1)

    async def test_events_carry_growing_revisions(self, ctx: dref.DRefContext, name: str) -> None:
        self._revisions(ctx)
        ref = await ctx.make("a", name)
        _, start = await ref.get_with_revision()
        async with await ctx.backend.subscribe(name) as raw:
            await ref.set("b")
            await ref.delete()
            await ref.set("c")
            events = [await _next(raw) for _ in range(3)]
        assert [e.value is None for e in events] == [False, True, False]
        revisions = [e.revision for e in events]
        assert start < revisions[0] < revisions[1] < revisions[2]
        value, now = await ref.get_with_revision()
        assert value == "c"
        assert now >= revisions[2]  # other elements' changes may count too

    async def test_changes_since_replays_every_change_then_goes_live(
        self, ctx: dref.DRefContext, ctx2: dref.DRefContext, name: str
    ) -> None:
        self._revisions(ctx)
        ref = await ctx.make(0, name)
        value, revision = await ref.get_with_revision()
        assert value == 0
        for i in range(1, 6):  # nobody is subscribed while these are written
            await ref.set(i)
        await ref.delete()
        await ref.set(6)
        async with ctx2.ref(name, type=int).changes(since=revision) as stream:
            assert [await _next(stream) for _ in range(6)] == [1, 2, 3, 4, 5, 6]
            await ref.set(7)
            assert await _next(stream) == 7
            assert revision < stream.revision <= (await ref.get_with_revision())[1]

    async def test_a_stream_resumes_from_its_revision_without_loss_or_repeat(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        self._revisions(ctx)
        ref = await ctx.make(0, name)
        _, revision = await ref.get_with_revision()
        async with ref.changes(since=revision) as stream:
            for i in range(1, 4):
                await ref.set(i)
            assert [await _next(stream) for _ in range(2)] == [1, 2]
            resume_at = stream.revision
        await ref.set(4)
        async with ref.changes(since=resume_at) as stream:
            assert [await _next(stream) for _ in range(2)] == [3, 4]

    async def test_since_older_than_the_history_raises_lagged(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        self._revisions(ctx)
        ref = await ctx.make(0, name)
        _, revision = await ref.get_with_revision()
        for i in range(self.revision_history + 2):
            await ref.set(i)
        with pytest.raises(ChangeStreamLaggedError, match=str(revision)):
            async with ref.changes(since=revision) as stream:
                await _next(stream)

    # -- TTL ------------------------------------------------------------------------------------
    async def test_ttl_expiry(self, ctx: dref.DRefContext, name: str) -> None:
        async with await ctx.backend.subscribe(name) as events:
            await ctx.backend.set(name, b"\x01", ttl=0.2)
            assert await ctx.backend.get(name) == b"\x01"

            async def gone() -> bool:
                return await ctx.backend.get(name) is None

            await eventually(gone, what="expiry")
            assert await ctx.backend.set_if_not_exist(name, b"\x02", ttl=5)
            if ctx.backend.capabilities.expiry_events:
                assert (await _next(events)).value == b"\x01"
                assert (await _next(events)).deleted

    async def test_expire_rearms_ttl(self, ctx: dref.DRefContext, name: str) -> None:
        assert not await ctx.backend.expire(name, 1.0)
        await ctx.backend.set(name, b"\x01", ttl=0.3)
        assert await ctx.backend.expire(name, 30.0)
        await ctx.backend.set(f"{name}:probe", b"\x01", ttl=0.3)

        async def probe_gone() -> bool:
            return await ctx.backend.get(f"{name}:probe") is None

        await eventually(probe_gone, what="probe expiry")
        assert await ctx.backend.get(name) == b"\x01"

    async def test_ttl_where_users_write(self, ctx: dref.DRefContext, name: str) -> None:
        made = await ctx.make("seed", f"{name}:made", ttl=0.3)
        kept = await ctx.make("other", f"{name}:made", ttl=0.3)  # exists: left as it is
        assert await kept.get() == "seed"
        ref = ctx.ref(name, type=str)
        await ref.set("set", ttl=0.3)
        created = ctx.ref(f"{name}:created", type=str)
        assert await created.set_if_not_exist("created", ttl=0.3)
        forever = await ctx.make("forever", f"{name}:forever")
        for r in (made, ref, created):

            async def gone(r: dref.DRef[str] = r) -> bool:
                return await ctx.backend.get(r.name) is None

            await eventually(gone, what=f"expiry of {r.name}")
        assert await forever.get() == "forever"
        with pytest.raises(ElementNotFoundError):
            await ref.get()
        for bad in (0, -1.0, float("inf"), float("nan")):
            with pytest.raises(ValueError, match="ttl"):
                await ref.set("x", ttl=bad)
            with pytest.raises(ValueError, match="ttl"):
                await ctx.make("x", f"{name}:bad", ttl=bad)
        assert await ctx.backend.get(f"{name}:bad") is None

    async def test_user_ttl_expiry_is_a_change_event(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        if not ctx.backend.capabilities.expiry_events:
            pytest.skip("backend does not claim expiry_events: an expiring key sends nothing")
        ref = ctx.ref(name, type=int)
        async with await ctx.backend.subscribe(name) as events:
            await ref.set(1, ttl=0.2)
            assert (await _next(events)).value == await ctx.backend.get(name)
            assert (await _next(events)).deleted
            assert await ref.set_if_not_exist(2, ttl=0.2)
            assert (await _next(events)).value is not None
            assert (await _next(events)).deleted

    # -- fenced writes --------------------------------------------------------------------------
    async def test_fenced_writes_of_the_holder_are_applied(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        # A common hash tag: Redis Cluster checks the lock in the script that writes.
        lock, name = f"{{{name}}}:lock", f"{{{name}}}:value"
        ref = ctx.ref(name, type=int)
        async with ctx.lock(lock, ttl=self.lock_ttl) as guard:
            if not ctx.backend.capabilities.fenced_writes:
                with pytest.raises(UnsupportedOperationError, match="fenced_writes"):
                    await ref.set(1, fence=guard)
                with pytest.raises(UnsupportedOperationError):
                    await ref.update(lambda n: n + 1, fence=guard)
                assert await ctx.backend.get(name) is None
                pytest.skip("backend does not claim fenced_writes (refused with a clear error)")
            assert await ref.set_if_not_exist(1, fence=guard)
            assert not await ref.set_if_not_exist(5, fence=guard)
            await ref.set(2, fence=guard, ttl=30)
            await ref.update(lambda n: n + 1, fence=guard)
            assert await ref.get_and_update(lambda n: n + 1, fence=guard) == 3
            assert await ref.update_and_get(lambda n: n + 1, fence=guard) == 5
            assert await ref.modify(lambda n: ("r", n * 10), fence=guard) == "r"
            assert await ref.get() == 50
            await ref.delete(fence=guard)
            assert await ctx.backend.get(name) is None
            with pytest.raises(TypeError, match="guard"):
                await ref.set(1, fence=guard.fence)  # type: ignore[arg-type]

    async def test_fenced_write_of_a_paused_holder_is_refused(
        self, ctx: dref.DRefContext, ctx2: dref.DRefContext, name: str
    ) -> None:
        backend = ctx.backend
        if not backend.capabilities.fenced_writes:
            pytest.skip("backend does not claim fenced_writes")
        lock, name = f"{{{name}}}:lock", f"{{{name}}}:value"
        # The first holder pauses: nothing renews its lease, which runs out.
        token = lock_value.to_bytes(4242)
        grant = await backend.try_lock(lock, token, 0.3)
        assert grant is not None
        assert grant.fence is not None
        paused = dref.LockGuard(lock, token, grant.fence, 0.3)
        mine = await ctx.make(0, name)
        await mine.set(1, fence=paused)  # still the latest acquisition
        theirs = ctx2.ref(name, type=int)
        async with ctx2.lock(lock, ttl=self.lock_ttl, timeout=DEADLINE) as second:
            assert second.fence is not None
            assert second.fence > grant.fence
            await theirs.set(2, fence=second)
            writes: list[Callable[[], Awaitable[object]]] = [
                lambda: mine.set(10, fence=paused),
                lambda: mine.set_if_not_exist(10, fence=paused),
                lambda: mine.update(lambda n: n + 10, fence=paused),
                lambda: mine.modify(lambda n: (n, n + 10), fence=paused),
                lambda: mine.get_and_update(lambda n: n + 10, fence=paused),
                lambda: mine.update_and_get(lambda n: n + 10, fence=paused),
                lambda: mine.delete(fence=paused),
            ]
            for write in writes:
                with pytest.raises(StaleFenceError) as info:
                    await write()
                error = info.value
                assert (error.lock, error.element, error.fence) == (lock, name, paused.fence)
                assert error.newer is None or error.newer == second.fence
                assert name in str(error)
                assert lock in str(error)
                assert await theirs.get() == 2
        # After the second holder released, the paused one is still behind it.
        with pytest.raises(StaleFenceError):
            await mine.set(10, fence=paused)
        assert await theirs.get() == 2

    # -- fairness -------------------------------------------------------------------------------
    async def test_contended_updates_are_fair(
        self, ctx: dref.DRefContext, fairness_options: dict[str, Any]
    ) -> None:
        caps = ctx.backend.capabilities
        if not caps.fair_updates:
            pytest.skip("backend does not claim fair_updates")
        if caps.distributed:
            result = await asyncio.to_thread(
                fairness.run_processes,
                self.backend,
                fairness_options,
                processes=4,
                tasks=4,
                total=self.fairness_updates,
                seconds=20,
            )
        else:
            result = await fairness.run_contexts(
                self.backend,
                fairness_options,
                contexts=4,
                tasks=4,
                total=self.fairness_updates,
                seconds=20,
            )
        assert result.updates >= self.fairness_updates, result.row()  # not cut off by time
        # Most of the run had every contender asking (the window the counts are from).
        assert sum(result.counts) >= self.fairness_updates // 2, result.row()
        assert result.ratio >= 0.5, result.row()

    async def test_leaving_or_swapping_hands_the_turn_to_the_next_in_line(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        backend = ctx.backend
        if not backend.capabilities.fair_updates:
            pytest.skip("backend does not claim fair_updates")
        await ctx.make(0, name)
        current = await backend.get(name)
        assert current is not None
        wrong = current + b"-not-it"
        tickets = [f"conformance-{i}-{uuid.uuid4().hex[:8]}".encode() for i in range(4)]
        ahead = []
        for ticket in tickets[:3]:  # three failed swaps: three places, in arrival order
            swapped, seen, before = await backend.fair_compare_and_swap(
                name, wrong, current, ticket
            )
            assert (swapped, seen) == (False, current)
            ahead.append(before)
        assert ahead == [0, 1, 2]
        # The head leaves: the second's turn comes with the value as the head left it (handed
        # before it waits, so not the fallback's None).
        await backend.leave_line(name, tickets[0])
        assert await asyncio.wait_for(backend.wait_turn(name, tickets[1]), DEADLINE) == current
        # Only the head may swap while others wait: the third, though its guess is right, joins.
        swapped, _, before = await backend.fair_compare_and_swap(name, current, b"\x05", tickets[2])
        assert (swapped, before) == (False, 1)
        # The head swaps and leaves: the third's turn comes with the value the swap left.
        swapped, _, _ = await backend.fair_compare_and_swap(name, current, b"\x01", tickets[1])
        assert swapped
        assert await asyncio.wait_for(backend.wait_turn(name, tickets[2]), DEADLINE) == b"\x01"
        await backend.leave_line(name, tickets[2])
        # Nobody waits any more: a newcomer's right guess swaps at once.
        swapped, _, _ = await backend.fair_compare_and_swap(name, b"\x01", b"\x02", tickets[3])
        assert swapped
        assert await backend.get(name) == b"\x02"
        # With rejoin a head that swaps takes a new place at the end, behind those waiting.
        first, second = (f"conformance-r{i}-{uuid.uuid4().hex[:8]}".encode() for i in range(2))
        assert (await backend.fair_compare_and_swap(name, wrong, b"\x03", first))[2] == 0
        assert (await backend.fair_compare_and_swap(name, wrong, b"\x03", second))[2] == 1
        swap = backend.fair_compare_and_swap
        assert await swap(name, b"\x02", b"\x03", first, rejoin=True) == (True, b"\x03", 1)
        assert await asyncio.wait_for(backend.wait_turn(name, second), DEADLINE) == b"\x03"
        assert await swap(name, b"\x03", b"\x04", first) == (False, b"\x03", 1)  # not its turn
        assert await swap(name, b"\x03", b"\x04", second, rejoin=True) == (True, b"\x04", 1)
        assert await asyncio.wait_for(backend.wait_turn(name, first), DEADLINE) == b"\x04"
        await backend.leave_line(name, first)
        await backend.leave_line(name, second)
        # Nobody else waits: rejoin takes no place.
        assert await swap(name, b"\x04", b"\x05", first, rejoin=True) == (True, b"\x05", 0)

    async def test_cancelled_queued_update_gives_up_its_place(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        backend = ctx.backend
        if not backend.capabilities.fair_updates:
            pytest.skip("backend does not claim fair_updates")
        ref = await ctx.make(0, name)
        current = await backend.get(name)
        assert current is not None
        head = f"conformance-head-{uuid.uuid4().hex[:8]}".encode()
        swapped, _, _ = await backend.fair_compare_and_swap(name, current + b"-", current, head)
        assert not swapped  # a raw contender heads the element's line
        waiting = asyncio.Event()
        left: list[bytes] = []
        wait_turn, leave_line = backend.wait_turn, backend.leave_line

        async def watched_wait_turn(element: str, ticket: bytes) -> bytes | None:
            waiting.set()
            return await wait_turn(element, ticket)

        async def watched_leave_line(element: str, ticket: bytes) -> None:
            await leave_line(element, ticket)
            left.append(ticket)

        calls: list[int] = []

        def count(step: int) -> Callable[[int], int]:
            def f(n: int) -> int:
                calls.append(step)
                return n + step

            return f

        backend.wait_turn = watched_wait_turn  # type: ignore[method-assign, assignment]
        backend.leave_line = watched_leave_line  # type: ignore[method-assign, assignment]
        try:
            first = asyncio.create_task(ref.update(count(100)))
            await asyncio.wait_for(waiting.wait(), DEADLINE)  # queued behind the head
            second = asyncio.create_task(ref.update(count(1)))
            await asyncio.sleep(0)  # `second` queues behind `first` in this context
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            before = len(calls)
            await leave_line(name, head)
            # `first` gave up its place: `second` is served, and `first`'s f never runs again.
            await asyncio.wait_for(second, DEADLINE)
            assert await ref.get() == 1
            assert 100 not in calls[before:]
            # Cancelled alone, a queued caller's place is given back too: nothing hangs.
            swapped, _, _ = await backend.fair_compare_and_swap(
                name, await backend.get(name) or b"", current, head
            )
            assert swapped  # nobody waits
            swapped, _, _ = await backend.fair_compare_and_swap(name, b"-", current, head)
            assert not swapped  # the raw contender heads the line again
            waiting.clear()
            lone = asyncio.create_task(ref.update(count(100)))
            await asyncio.wait_for(waiting.wait(), DEADLINE)
            lone.cancel()
            with pytest.raises(asyncio.CancelledError):
                await lone
            left.clear()
            await leave_line(name, head)  # the turn goes to the cancelled caller's ticket...
            await eventually(lambda: _true(bool(left)), what="the cancelled caller left")
            # ...which leaves at once: a newcomer's right guess swaps without waiting.
            swapped, _, _ = await backend.fair_compare_and_swap(name, current, b"\x07", head)
            assert swapped
            await asyncio.wait_for(ref.update(count(1)), DEADLINE)
            assert await ref.get() == 8
        finally:
            del backend.wait_turn, backend.leave_line

    async def test_a_closing_context_gives_its_place_in_line_back(
        self, ctx: dref.DRefContext, ctx2: dref.DRefContext, name: str
    ) -> None:
        backend = ctx.backend
        if not backend.capabilities.fair_updates:
            pytest.skip("backend does not claim fair_updates")
        await ctx.make(0, name)
        current = await backend.get(name)
        assert current is not None
        head = f"conformance-head-{uuid.uuid4().hex[:8]}".encode()
        swapped, _, _ = await backend.fair_compare_and_swap(name, current + b"-", current, head)
        assert not swapped  # a raw contender heads the element's line
        other = ctx2.ref(name, type=int)
        waiting = asyncio.create_task(other.update(lambda n: n + 1))

        async def queued() -> bool:  # ctx2's runner holds the place behind the head
            probe = f"conformance-probe-{uuid.uuid4().hex[:8]}".encode()
            _, _, ahead = await backend.fair_compare_and_swap(name, b"-", current, probe)
            await backend.leave_line(name, probe)
            return ahead >= 2

        await eventually(queued, what="ctx2 queued behind the head")
        await ctx2.aclose()
        with pytest.raises(dref.errors.ClosedError):
            await asyncio.wait_for(waiting, DEADLINE)
        await backend.leave_line(name, head)
        # ctx2's place is gone already: a newcomer's right guess swaps at once.
        newcomer = f"conformance-new-{uuid.uuid4().hex[:8]}".encode()
        swapped, _, _ = await backend.fair_compare_and_swap(name, current, b"\x07", newcomer)
        assert swapped

    # -- locks ----------------------------------------------------------------------------------
    async def test_lock_mutual_exclusion_across_contexts(
        self, ctx: dref.DRefContext, ctx2: dref.DRefContext, name: str
    ) -> None:
        inside = 0
        peak = 0
        order: list[int] = []

        async def critical(i: int) -> None:
            nonlocal inside, peak
            async with (ctx if i % 2 else ctx2).lock(name, ttl=self.lock_ttl, timeout=30):
                inside += 1
                peak = max(peak, inside)
                await asyncio.sleep(0)
                order.append(i)
                inside -= 1

        await asyncio.gather(*(critical(i) for i in range(8)))
        assert peak == 1
        assert sorted(order) == list(range(8))

    async def test_lock_fence_grows(self, ctx: dref.DRefContext, name: str) -> None:
        fences = []
        for _ in range(3):
            async with ctx.lock(name, ttl=self.lock_ttl) as guard:
                fences.append(guard.fence)
        if ctx.backend.capabilities.fencing:
            numbers = [f for f in fences if isinstance(f, int)]
            assert len(numbers) == 3
            assert numbers == sorted(set(numbers))
        else:
            assert fences == [None, None, None]

    async def test_lock_timeout_never_runs_the_body(
        self, ctx: dref.DRefContext, ctx2: dref.DRefContext, name: str
    ) -> None:
        ran = False
        async with ctx.lock(name, ttl=self.lock_ttl):
            with pytest.raises(LockTimeoutError) as info:
                async with ctx2.lock(name, ttl=self.lock_ttl, timeout=0.2):
                    ran = True
            assert isinstance(info.value, TimeoutError)
        assert not ran

    async def test_lock_released_on_exit_and_on_error(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        async with ctx.lock(name, ttl=self.lock_ttl):
            pass
        assert await ctx.backend.get(name) is None
        with pytest.raises(ZeroDivisionError):
            async with ctx.lock(name, ttl=self.lock_ttl):
                1 / 0  # noqa: B018
        assert await ctx.backend.get(name) is None

    async def test_waiter_gets_the_lock_when_the_holder_releases(
        self, ctx: dref.DRefContext, ctx2: dref.DRefContext, name: str
    ) -> None:
        release = asyncio.Event()
        holding = asyncio.Event()

        async def holder() -> None:
            async with ctx.lock(name, ttl=self.lock_ttl):
                holding.set()
                await release.wait()

        task = asyncio.create_task(holder())
        await holding.wait()
        waiter = asyncio.create_task(_acquire_once(ctx2, name, self.lock_ttl))
        await asyncio.sleep(0)
        assert not waiter.done()
        release.set()
        await asyncio.wait_for(waiter, DEADLINE)
        await task

    async def test_waiter_gets_the_lock_of_a_crashed_holder_after_its_ttl(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        crashed = lock_value.to_bytes(7)
        assert await ctx.backend.try_lock(name, crashed, 0.3) is not None
        async with ctx.lock(name, ttl=self.lock_ttl, timeout=DEADLINE) as guard:
            assert await ctx.backend.get(name) == guard.token

    async def test_stolen_lock_cancels_the_body(self, ctx: dref.DRefContext, name: str) -> None:
        body_cancelled = False
        with pytest.raises(LockStolenError) as info:
            async with ctx.lock(name, ttl=self.lock_ttl) as guard:
                await ctx.backend.set(name, lock_value.to_bytes(12345))  # someone else's token
                try:
                    await asyncio.sleep(DEADLINE)
                except asyncio.CancelledError:
                    body_cancelled = True
                    raise
        assert body_cancelled
        assert info.value.name == name
        assert info.value.token == guard.token_int
        assert str(info.value).startswith(
            f"Lock {name} with value {guard.token_int} has been stolen"
        )
        # The thief's lock is untouched by our exit.
        assert await ctx.backend.get(name) == lock_value.to_bytes(12345)

    async def test_deleted_lock_cancels_the_body(self, ctx: dref.DRefContext, name: str) -> None:
        with pytest.raises(LockStolenError):
            async with ctx.lock(name, ttl=self.lock_ttl):
                await ctx.backend.delete(name)
                await asyncio.sleep(DEADLINE)

    async def test_lock_is_kept_alive_beyond_its_ttl(
        self, ctx: dref.DRefContext, ctx2: dref.DRefContext, name: str
    ) -> None:
        ttl = 0.6
        async with ctx.lock(name, ttl=ttl) as guard:
            probe = f"{name}:probe"
            await ctx.backend.set(probe, b"\x01", ttl=ttl * 2)

            async def two_ttls_passed() -> bool:
                return await ctx.backend.get(probe) is None

            await eventually(two_ttls_passed, what="two TTLs")
            assert await ctx2.backend.get(name) == guard.token
            with pytest.raises(LockTimeoutError):
                await _acquire_once(ctx2, name, ttl, timeout=0.05)

    async def test_release_and_refresh_are_owner_checked(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        backend = ctx.backend
        if not backend.capabilities.owner_checked_locks:
            pytest.skip("backend does not claim owner-checked locks")
        mine, theirs = lock_value.to_bytes(1), lock_value.to_bytes(2)
        assert await backend.try_lock(name, mine, 5) is not None
        assert await backend.try_lock(name, theirs, 5) is None
        await backend.delete(name)  # as if our lease expired
        assert await backend.try_lock(name, theirs, 5) is not None
        assert not await backend.refresh_lock(name, mine, 5)
        assert not await backend.release_lock(name, mine)
        assert await backend.get(name) == theirs
        assert await backend.refresh_lock(name, theirs, 5)
        assert await backend.release_lock(name, theirs)
        assert await backend.get(name) is None

    async def test_waiters_are_served_in_line_when_claimed(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        backend = ctx.backend
        if not backend.capabilities.lock_queue:
            pytest.skip("backend does not claim a line of lock waiters")
        t1, t2, t3, t4 = (lock_value.to_bytes(i) for i in range(1, 5))
        assert await backend.try_lock(name, t1, 5) is not None
        assert await backend.try_lock(name, t2, 5) is None
        assert await backend.try_lock(name, t3, 5) is None
        assert await backend.release_lock(name, t1)
        assert await backend.try_lock(name, t3, 5) is None  # free, but t2 came first
        assert await backend.try_lock(name, t2, 5) is not None
        assert not await backend.release_lock(name, t3)  # t3 gives up: it leaves the line
        assert await backend.get(name) == t2
        assert await backend.release_lock(name, t2)
        assert await backend.try_lock(name, t4, 5) is not None  # nobody waits any more
        assert await backend.release_lock(name, t4)

    async def test_cancelled_waiter_leaves_no_lock_behind(
        self, ctx: dref.DRefContext, ctx2: dref.DRefContext, name: str
    ) -> None:
        async with ctx.lock(name, ttl=self.lock_ttl):
            waiter = asyncio.create_task(_acquire_once(ctx2, name, self.lock_ttl))
            for _ in range(20):  # let the waiter get into its wait
                await asyncio.sleep(0)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        async with ctx2.lock(name, ttl=self.lock_ttl, timeout=DEADLINE):
            pass

    # -- names ----------------------------------------------------------------------------------
    async def test_names_lists_live_elements_by_prefix(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        if not ctx.backend.capabilities.names:
            with pytest.raises(UnsupportedOperationError):
                await anext(ctx.names(name))
            pytest.skip("backend does not claim `names`")
        assert [n async for n in ctx.names(name)] == []
        await ctx.make(1, f"{name}:a")
        await ctx.make(2, f"{name}:b")
        await ctx.make(3, f"{name}x")
        await ctx.make(4, f"other:{name}")
        assert sorted([n async for n in ctx.names(f"{name}:")]) == [f"{name}:a", f"{name}:b"]
        listed = [n async for n in ctx.names(name)]
        assert sorted(listed) == [f"{name}:a", f"{name}:b", f"{name}x"]  # each name once
        everything = {n async for n in ctx.names()}
        assert {f"{name}:a", f"{name}x", f"other:{name}"} <= everything
        await ctx.ref(f"{name}:a").delete()
        assert sorted([n async for n in ctx.names(f"{name}:")]) == [f"{name}:b"]

    async def test_names_skips_expired_elements_and_lock_internals(
        self, ctx: dref.DRefContext, name: str
    ) -> None:
        if not ctx.backend.capabilities.names:
            pytest.skip("backend does not claim `names`")
        await ctx.backend.set(f"{name}:short", b"\x01", ttl=0.2)
        await ctx.backend.set(f"{name}:kept", b"\x01", ttl=30)
        async with ctx.lock(f"{name}:lock", ttl=self.lock_ttl):
            assert sorted([n async for n in ctx.names(name)]) == [
                f"{name}:kept",
                f"{name}:lock",
                f"{name}:short",
            ]

        async def expired() -> bool:
            return [n async for n in ctx.names(name)] == [f"{name}:kept"]

        await eventually(expired, what="the expired element and the released lock unlisted")

    # -- capabilities ---------------------------------------------------------------------------
    async def test_capabilities_are_declared(self, ctx: dref.DRefContext) -> None:
        caps = ctx.backend.capabilities
        assert isinstance(caps, dref.Capabilities)
        assert ctx.backend.default_ttl > 0
        if caps.native_cas:
            name = f"conformance:{uuid.uuid4().hex}"
            await ctx.backend.set(name, b"\x01")
            assert not await ctx.backend.compare_and_set(name, b"\x02", b"\x03")
            assert await ctx.backend.compare_and_set(name, b"\x01", b"\x03")
            assert await ctx.backend.get(name) == b"\x03"
            assert await ctx.backend.compare_and_swap(name, b"\x01", b"\x04") == (False, b"\x03")
            assert await ctx.backend.compare_and_swap(name, b"\x03", b"\x04") == (True, b"\x04")
            await ctx.backend.delete(name)
            assert await ctx.backend.compare_and_swap(name, b"\x04", b"\x05") == (False, None)
            assert await ctx.backend.get(name) is None


async def _next(stream: Any) -> Any:
    return await asyncio.wait_for(stream.__anext__(), DEADLINE)


async def _acquire_once(
    ctx: dref.DRefContext, name: str, ttl: float, timeout: float | None = DEADLINE
) -> None:
    async with ctx.lock(name, ttl=ttl, timeout=timeout):
        pass
