"""Conformance for exactly-once writes: writes whose answer was lost, with a change in between.

`LostAnswerConformance` is a base of `BackendConformance` (every backend runs it). Each test
makes the answer of one write get lost after the store applied it (`lose_next_answer`), lets
another context change the element before the context sends the write again (`meanwhile`), and
checks that the write was applied once and answered as its first attempt: a resend that ran
again would overwrite the other context's write, report a lock or TTL it no longer finds, or
release the other context's lock. A backend that cannot lose an answer (an in-process store)
returns None from `lose_next_answer`; the change then comes after the write, and the tests check
the answers and the final state only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

import dref
from dref import lock_value

__all__ = ["LostAnswerConformance", "Meanwhile"]

T = TypeVar("T")

Meanwhile = Callable[[], Awaitable[object]]
"""What happens between a write's first attempt (applied, answer lost) and its resend."""

_MINE, _THEIRS = lock_value.to_bytes(1), lock_value.to_bytes(2)


class LostAnswerConformance:
    """The lost-answer tests of the conformance suite (capability `exactly_once`)."""

    def lose_next_answer(
        self, ctx: dref.DRefContext, meanwhile: Meanwhile | None = None
    ) -> Callable[[], int] | None:
        """Fault injection for `exactly_once`: make the answer of `ctx`'s next write get lost
        AFTER the store applied it (as a connection that drops before the reply arrives), run
        `meanwhile` (when given) before the context learns that the answer is lost, and return
        a function counting the answers lost so far. A test class whose backend claims
        `exactly_once` and can lose an answer overrides this; a backend that cannot lose one (an
        in-process store) returns None, and the tests then check the results only."""
        raise NotImplementedError(
            f"{type(self).__name__}: the backend claims exactly_once, so the test class must "
            "implement lose_next_answer(ctx, meanwhile=None)"
        )

    async def _lost_once(
        self, ctx: dref.DRefContext, write: Callable[[], Awaitable[T]], meanwhile: Meanwhile
    ) -> T:
        """`write()` with its first answer lost and `meanwhile` run before the resend (after
        the write, where no answer can be lost)."""
        if not ctx.backend.capabilities.exactly_once:
            pytest.skip("backend does not claim exactly_once: a lost answer may apply twice")
        ran: list[bool] = []

        async def interfere() -> None:
            ran.append(True)
            await meanwhile()

        lost = self.lose_next_answer(ctx, interfere)
        result = await write()
        assert lost is None or (lost() == 1 and ran == [True]), "the answer was not lost once"
        if not ran:
            await meanwhile()
        return result

    async def test_a_lost_set_answer_does_not_overwrite_a_later_write(
        self, ctx: dref.DRefContext, ctx2: dref.DRefContext, name: str
    ) -> None:
        await self._lost_once(
            ctx, lambda: ctx.backend.set(name, b"\x01"), lambda: ctx2.backend.set(name, b"\x02")
        )
        assert await ctx.backend.get(name) == b"\x02"

    async def test_a_lost_delete_answer_does_not_delete_a_later_write(
        self, ctx: dref.DRefContext, ctx2: dref.DRefContext, name: str
    ) -> None:
        await ctx.backend.set(name, b"\x01")
        await self._lost_once(
            ctx, lambda: ctx.backend.delete(name), lambda: ctx2.backend.set(name, b"\x02")
        )
        assert await ctx.backend.get(name) == b"\x02"

    async def test_a_lost_expire_answer_is_the_first_answer(
        self, ctx: dref.DRefContext, ctx2: dref.DRefContext, name: str
    ) -> None:
        """The TTL was set on the element that existed; it is gone by the resend."""
        await ctx.backend.set(name, b"\x01")
        expired = await self._lost_once(
            ctx, lambda: ctx.backend.expire(name, 30), lambda: ctx2.backend.delete(name)
        )
        assert expired is True
        assert await ctx.backend.get(name) is None

    async def test_a_lost_lock_grant_is_the_grant(
        self, ctx: dref.DRefContext, ctx2: dref.DRefContext, name: str
    ) -> None:
        """A resend that ran again would find the lock held (by our own token) and wait."""

        async def nothing() -> None:
            pass

        grant = await self._lost_once(ctx, lambda: ctx.backend.try_lock(name, _MINE, 5), nothing)
        assert grant is not None
        assert await ctx.backend.get(name) == _MINE
        assert await ctx2.backend.try_lock(name, _THEIRS, 5) is None
        assert await ctx.backend.release_lock(name, _MINE)
        if ctx.backend.capabilities.fencing:
            later = await ctx2.backend.try_lock(name, _THEIRS, 5)
            assert later is not None
            assert later.fence is not None
            assert grant.fence is not None
            assert later.fence > grant.fence
        else:
            assert await ctx2.backend.try_lock(name, _THEIRS, 5) is not None
        assert await ctx2.backend.release_lock(name, _THEIRS)

    async def test_a_lost_lock_release_answer_is_the_first_answer(
        self, ctx: dref.DRefContext, ctx2: dref.DRefContext, name: str
    ) -> None:
        """Released, then taken by another holder: the resend neither releases the other
        holder's lock nor reports that ours was lost."""
        if not ctx.backend.capabilities.owner_checked_locks:
            pytest.skip("backend does not claim owner-checked locks")
        assert await ctx.backend.try_lock(name, _MINE, 5) is not None

        async def taken() -> None:
            assert await ctx2.backend.try_lock(name, _THEIRS, 5) is not None

        assert await self._lost_once(ctx, lambda: ctx.backend.release_lock(name, _MINE), taken)
        assert await ctx.backend.get(name) == _THEIRS
        assert await ctx2.backend.release_lock(name, _THEIRS)

    async def test_a_lost_lock_refresh_answer_is_the_first_answer(
        self, ctx: dref.DRefContext, ctx2: dref.DRefContext, name: str
    ) -> None:
        """Extended, then lost to another holder: the resend reports the extension."""
        if not ctx.backend.capabilities.owner_checked_locks:
            pytest.skip("backend does not claim owner-checked locks")
        assert await ctx.backend.try_lock(name, _MINE, 5) is not None

        async def stolen() -> None:
            await ctx2.backend.delete(name)
            assert await ctx2.backend.try_lock(name, _THEIRS, 5) is not None

        assert await self._lost_once(ctx, lambda: ctx.backend.refresh_lock(name, _MINE, 5), stolen)
        assert await ctx.backend.get(name) == _THEIRS
        assert await ctx2.backend.release_lock(name, _THEIRS)
