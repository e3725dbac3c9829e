"""Lock histories: holds as clients saw them, a recorder, and the mutual-exclusion checker.

A `Hold` spans from when the client got the lock (`acquired`: its acquisition returned) to when
it stopped acting under it (`released`: it began to release). Per lock name, the checker demands

* fence order: fences are unique, and a hold with a larger fence was never granted before a hold
  with a smaller fence was requested (`b.acquired < a.requested` with `a.fence < b.fence` is a
  violation; `requested` defaults to `acquired`, which is stricter when responses can be slow);
* mutual exclusion: holds whose client saw no loss (`lost` false and `released` known) never
  overlap in time (touching intervals are fine).

A lost hold (`lost=True`: the client saw `LockStolenError`, a failed renewal or a failed owner-
checked release) or one with `released=None` (the end was never observed: a crash, or still held)
may legitimately overlap its successor, whose larger fence is what protects the resource; it
still takes part in the fence-order check.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from dref_compat.history import CheckResult

__all__ = ["Hold", "HoldHandle", "HoldRecorder", "check_mutual_exclusion", "check_within_grants"]

_MAX_SHOWN = 10


@dataclass(frozen=True, slots=True)
class Hold:
    """One hold of lock `name` by `client`; see the module docstring for the times."""

    name: str
    client: int | str
    fence: int | None
    acquired: float
    released: float | None
    lost: bool = False
    requested: float | None = None

    def describe(self) -> str:
        """`client 1, fence 7, [3, 5] (requested 2.5), lost`."""
        end = "?" if self.released is None else _time(self.released)
        text = f"client {self.client!r}, fence {self.fence}, held [{_time(self.acquired)}, {end}]"
        if self.requested is not None and self.requested != self.acquired:
            text += f" (requested {_time(self.requested)})"
        if self.lost:
            text += ", lost"
        elif self.released is None:
            text += ", end unknown"
        return text

    @property
    def start(self) -> float:
        """The earliest the grant can have happened."""
        return self.acquired if self.requested is None else self.requested


def check_mutual_exclusion(holds: Iterable[Hold]) -> CheckResult:
    """Whether every lock's holds respect fence order and mutual exclusion (module docstring).

    Holds without a fence take part only in the overlap check. O(n log n). The result names the
    first lock (by name) with violations and lists up to ten of them. Raises `ValueError` on a
    malformed hold (released before acquired, requested after acquired).
    """
    by_name: dict[str, list[Hold]] = {}
    count = 0
    for hold in holds:
        _validate(hold)
        by_name.setdefault(hold.name, []).append(hold)
        count += 1
    for name in sorted(by_name):
        problems = _fence_order(by_name[name]) + _overlaps(by_name[name])
        if problems:
            shown = problems[:_MAX_SHOWN]
            lines = [
                f"lock {name!r}: {len(problems)} violation{'s' if len(problems) > 1 else ''} "
                f"in {len(by_name[name])} holds"
                + (f", the first {len(shown)}" if len(problems) > len(shown) else "")
                + ":",
                *(f"    {p}" for p in shown),
            ]
            return CheckResult(False, name, "\n".join(lines), count)
    return CheckResult(
        True,
        None,
        f"{count} holds of {len(by_name)} locks respect fence order and exclusion",
        count,
    )


def check_within_grants(holds: Iterable[Hold], grants: Iterable[Hold]) -> CheckResult:
    """Whether the clients' holds agree with the grants the lock service decided.

    `grants` are validity intervals as the service's state decided them: per lock, one per fence,
    `acquired` when the grant took effect and `released` when it ended (release or expiry; None:
    never). Every fenced hold must name a grant of its lock with the same fence and the same
    `client` (the owner token), and a hold whose client saw no loss must lie within its grant:
    a client that acted under a lease the service had already ended (a clock or TTL bug) is a
    violation even when no successor overlapped it. A hold with `released=None` is checked only
    for its start; holds without a fence are skipped. Raises `ValueError` on malformed holds,
    grants without a fence, or two grants of one lock with the same fence.
    """
    by_fence: dict[tuple[str, int], Hold] = {}
    for grant in grants:
        _validate(grant)
        if grant.fence is None:
            raise ValueError(f"grant ({grant.describe()}) of {grant.name!r} has no fence")
        if by_fence.setdefault((grant.name, grant.fence), grant) is not grant:
            raise ValueError(f"two grants of {grant.name!r} with fence {grant.fence}")
    problems: dict[str, list[str]] = {}
    count = 0
    for hold in holds:
        _validate(hold)
        count += 1
        if hold.fence is None:
            continue
        found = by_fence.get((hold.name, hold.fence))
        problem = None
        if found is None:
            problem = f"({hold.describe()}) has fence {hold.fence}, which was never granted"
        elif found.client != hold.client:
            problem = (
                f"({hold.describe()}) has the fence of another owner's grant ({found.describe()})"
            )
        elif not hold.lost and (
            hold.acquired < found.acquired
            or (
                found.released is not None
                and hold.released is not None
                and hold.released > found.released
            )
        ):
            problem = (
                f"({hold.describe()}) acted outside its grant ({found.describe()}) and saw no loss"
            )
        if problem is not None:
            problems.setdefault(hold.name, []).append(problem)
    for name in sorted(problems):
        shown = problems[name][:_MAX_SHOWN]
        total = len(problems[name])
        lines = [
            f"lock {name!r}: {total} hold"
            + ("s disagree" if total > 1 else " disagrees")
            + " with the grants"
            + (f", the first {len(shown)}" if total > len(shown) else "")
            + ":",
            *(f"    {p}" for p in shown),
        ]
        return CheckResult(False, name, "\n".join(lines), count)
    return CheckResult(True, None, f"{count} holds agree with {len(by_fence)} grants", count)


def _validate(hold: Hold) -> None:
    if hold.released is not None and hold.released < hold.acquired:
        raise ValueError(f"hold ({hold.describe()}) of {hold.name!r} is released before acquired")
    if hold.requested is not None and hold.requested > hold.acquired:
        raise ValueError(f"hold ({hold.describe()}) of {hold.name!r} is acquired before requested")


def _fence_order(holds: list[Hold]) -> list[str]:
    fenced = sorted(
        (h for h in holds if h.fence is not None), key=lambda h: (h.fence, h.acquired, h.start)
    )
    problems: list[str] = []
    latest: Hold | None = None  # among smaller fences, the one requested last
    for fence, group in itertools.groupby(fenced, key=lambda h: h.fence):
        same = list(group)
        if len(same) > 1:
            problems.append(
                f"fence {fence} granted {len(same)} times: "
                + " and ".join(f"({h.describe()})" for h in same)
            )
        for hold in same:
            if latest is not None and hold.acquired < latest.start:
                problems.append(
                    f"fence order: ({hold.describe()}) was granted by {_time(hold.acquired)}, "
                    f"before the smaller fence {latest.fence} was requested at "
                    f"{_time(latest.start)} ({latest.describe()})"
                )
        for hold in same:
            if latest is None or hold.start > latest.start:
                latest = hold
    return problems


def _overlaps(holds: list[Hold]) -> list[str]:
    clean = sorted(
        (h for h in holds if not h.lost and h.released is not None),
        key=lambda h: (h.acquired, h.released),
    )
    problems: list[str] = []
    longest: Hold | None = None  # among earlier-starting holds, the one released last
    for hold in clean:
        if longest is not None:
            assert longest.released is not None
            if hold.acquired < longest.released:
                problems.append(
                    f"overlap: ({longest.describe()}) and ({hold.describe()}) held it at the same "
                    f"time, from {_time(hold.acquired)}, and neither saw a loss"
                )
        assert hold.released is not None
        if longest is None or longest.released is None or hold.released > longest.released:
            longest = hold
    return problems


def _time(t: float) -> str:
    return str(int(t)) if float(t).is_integer() and abs(t) < 1e15 else f"{t:.6f}"


class HoldHandle:
    """A hold being recorded; `HoldRecorder` fills it in."""

    __slots__ = ("acquired", "client", "fence", "lost", "name", "released", "requested")

    def __init__(self, name: str, client: int | str, requested: float) -> None:
        self.name = name
        self.client = client
        self.requested = requested
        self.acquired: float | None = None
        self.fence: int | None = None
        self.released: float | None = None
        self.lost = False

    def hold(self) -> Hold | None:
        """The `Hold` so far (None if never acquired)."""
        if self.acquired is None:
            return None
        return Hold(
            self.name,
            self.client,
            self.fence,
            self.acquired,
            self.released,
            self.lost,
            self.requested,
        )


class _Guard(Protocol):
    @property
    def fence(self) -> int | None: ...


G = TypeVar("G", bound=_Guard)
G_co = TypeVar("G_co", bound=_Guard, covariant=True)


class _AsyncLock(Protocol[G_co]):
    async def __aenter__(self) -> G_co: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...


class _HoldScope(Generic[G]):
    def __init__(self, recorder: HoldRecorder, name: str, client: int | str, lock: Any) -> None:
        self._recorder = recorder
        self._name = name
        self._client = client
        self._lock = lock
        self._handle: HoldHandle | None = None
        self._guard: Any = None

    async def __aenter__(self) -> G:
        handle = self._handle = self._recorder.request(self._name, self._client)
        guard = self._guard = await self._lock.__aenter__()
        self._recorder.acquired(handle, getattr(guard, "fence", None))
        return guard  # type: ignore[no-any-return]

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        handle = self._handle
        assert handle is not None
        self._recorder.release(handle)
        try:
            suppress: bool | None = await self._lock.__aexit__(exc_type, exc, tb)
        except BaseException:
            self._recorder.lose(handle)
            raise
        if getattr(self._guard, "lost_reason", None) is not None:
            self._recorder.lose(handle)
        return suppress


class HoldRecorder:
    """Records lock holds of concurrent clients, stamped by `clock`.

    Wrap a lock: ``async with holds.hold(client, ctx.lock("L")) as guard: ...`` stamps the
    request, the grant (with `guard.fence`), the start of the release, and marks the hold lost
    when the lock's exit raises (`LockStolenError`) or `guard.lost_reason` is set. Or drive it by
    hand: `request`, `acquired`, `release`, `lose` (any time, also after `release`).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._handles: list[HoldHandle] = []

    def hold(
        self, client: int | str, lock: _AsyncLock[G], *, name: str | None = None
    ) -> _HoldScope[G]:
        """Record the hold of `lock` (an async context manager whose guard has `fence`)."""
        if name is None:
            name = getattr(lock, "name", None)
            if not isinstance(name, str):
                raise ValueError("the lock has no `name`: pass name=...")
        return _HoldScope(self, name, client, lock)

    def request(self, name: str, client: int | str) -> HoldHandle:
        """The client asks for the lock now."""
        handle = HoldHandle(name, client, self._clock())
        self._handles.append(handle)
        return handle

    def acquired(self, handle: HoldHandle, fence: int | None) -> None:
        """The client got the lock now, with `fence`."""
        handle.acquired = self._clock()
        handle.fence = fence

    def release(self, handle: HoldHandle) -> None:
        """The client stops acting under the lock now (before its release request)."""
        if handle.released is None:
            handle.released = self._clock()

    def lose(self, handle: HoldHandle) -> None:
        """The client learned the hold was lost (its end is then no later than now)."""
        self.release(handle)
        handle.lost = True

    def holds(self) -> list[Hold]:
        """Holds that were acquired, in request order (unreleased ones with `released=None`)."""
        return [hold for handle in self._handles if (hold := handle.hold()) is not None]
