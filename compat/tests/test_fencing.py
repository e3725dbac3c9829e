"""The lock checker (fence order, mutual exclusion) and the hold recorder."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from types import TracebackType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dref_compat import Hold, HoldRecorder, check_mutual_exclusion
from dref_compat.fencing import check_within_grants


def hold(
    client: int,
    fence: int | None,
    acquired: float,
    released: float | None,
    *,
    lost: bool = False,
    requested: float | None = None,
    name: str = "L",
) -> Hold:
    return Hold(name, client, fence, acquired, released, lost, requested)


def test_sequential_holds_are_fine() -> None:
    result = check_mutual_exclusion([hold(1, 1, 0, 1), hold(2, 2, 1, 2), hold(1, 3, 3, 4)])
    assert result.ok is True
    assert result.explored == 3
    assert check_mutual_exclusion([]).ok is True


def test_overlapping_clean_holds_violate_exclusion() -> None:
    result = check_mutual_exclusion([hold(1, 1, 0, 5), hold(2, 2, 3, 8)])
    assert result.ok is False
    assert result.key == "L"
    assert "overlap" in result.explanation
    assert "client 1" in result.explanation
    assert "client 2" in result.explanation
    assert not result


def test_a_lost_hold_may_overlap_its_successor() -> None:
    # Client 1's lease ran out at ~2; client 2 got fence 2 while 1 still thought it held.
    holds = [hold(1, 1, 0, 5, lost=True), hold(2, 2, 3, 8)]
    assert check_mutual_exclusion(holds).ok is True
    # An unobserved end (crash, or still held) is not checked for overlap either.
    assert check_mutual_exclusion([hold(1, 1, 0, None), hold(2, 2, 3, 8)]).ok is True


def test_a_larger_fence_granted_first_violates_fence_order() -> None:
    holds = [hold(1, 2, 0, 1), hold(2, 1, 2, 3)]
    result = check_mutual_exclusion(holds)
    assert result.ok is False
    assert "fence order" in result.explanation
    assert "smaller fence 1" in result.explanation


def test_fence_order_applies_to_lost_holds_too() -> None:
    holds = [hold(1, 2, 0, 5, lost=True), hold(2, 1, 3, 8)]
    assert check_mutual_exclusion(holds).ok is False


def test_a_slow_grant_response_is_not_a_violation_when_requested_is_known() -> None:
    # Fence 1 was granted around 1 but its response arrived at 5; meanwhile its lease expired
    # and fence 2 was granted and returned at 4.
    slow = hold(1, 1, 5, 6, lost=True, requested=0.5)
    fast = hold(2, 2, 4, 7, requested=3)
    assert check_mutual_exclusion([slow, fast]).ok is True
    # Without the request time the grant is taken to be at the response: a violation.
    assert check_mutual_exclusion([replace(slow, requested=None), fast]).ok is False


def test_duplicate_fences_violate() -> None:
    result = check_mutual_exclusion([hold(1, 7, 0, 1), hold(2, 7, 2, 3)])
    assert result.ok is False
    assert "fence 7 granted 2 times" in result.explanation


def test_unfenced_holds_are_checked_for_overlap_only() -> None:
    assert check_mutual_exclusion([hold(1, None, 5, 6), hold(2, None, 0, 1)]).ok is True
    assert check_mutual_exclusion([hold(1, None, 0, 6), hold(2, None, 1, 2)]).ok is False


def test_locks_are_independent_and_the_first_bad_name_is_reported() -> None:
    holds = [
        hold(1, 1, 0, 5, name="a"),
        hold(2, 1, 0, 5, name="b"),  # another lock, its own fences
        hold(3, 2, 6, 7, name="b"),
        hold(1, 5, 0, 5, name="c"),
        hold(2, 6, 1, 2, name="c"),
    ]
    result = check_mutual_exclusion(holds)
    assert result.ok is False
    assert result.key == "c"
    assert result.explanation.startswith("lock 'c': 1 violation in 2 holds")


def test_many_violations_are_capped() -> None:
    holds = [hold(c, c, 0, 10) for c in range(1, 30)]
    result = check_mutual_exclusion(holds)
    assert result.ok is False
    assert "the first 10" in result.explanation
    assert result.explanation.count("\n") == 10


def test_malformed_holds_are_rejected() -> None:
    with pytest.raises(ValueError, match="released before acquired"):
        check_mutual_exclusion([hold(1, 1, 5, 4)])
    with pytest.raises(ValueError, match="acquired before requested"):
        check_mutual_exclusion([hold(1, 1, 5, 6, requested=7)])


def test_holds_within_their_grants_are_fine() -> None:
    grants = [hold(1, 3, 10, 20), hold(2, 5, 20, None)]
    holds = [
        hold(1, 3, 11, 18, requested=9),
        hold(2, 5, 21, None),  # still held at the end: only its start is checked
        hold(9, None, 0, 100),  # unfenced: skipped
    ]
    result = check_within_grants(holds, grants)
    assert result.ok is True, result.explanation
    assert result.explored == 3


def test_a_hold_past_its_grant_without_a_loss_is_caught() -> None:
    grants = [hold(1, 3, 10, 20), hold(2, 5, 20, 30)]
    result = check_within_grants([hold(1, 3, 11, 25), hold(2, 5, 21, 29)], grants)
    assert result.ok is False
    assert result.key == "L"
    assert "client 1, fence 3, held [11, 25]" in result.explanation
    assert "acted outside its grant (client 1, fence 3, held [10, 20])" in result.explanation
    # The same hold is fine once its client learned of the loss.
    assert check_within_grants([hold(1, 3, 11, 25, lost=True)], grants).ok is True
    # A hold that started before its grant took effect is caught too.
    assert check_within_grants([hold(2, 5, 19, 21)], grants).ok is False


def test_a_fence_of_no_grant_or_of_another_owner_is_caught() -> None:
    grants = [hold(1, 3, 10, 20)]
    unknown = check_within_grants([hold(1, 4, 11, 12)], grants)
    assert unknown.ok is False
    assert "fence 4, which was never granted" in unknown.explanation
    other = check_within_grants([hold(2, 3, 11, 12, lost=True)], grants)
    assert other.ok is False
    assert "another owner's grant" in other.explanation
    # Grants are per lock name.
    assert check_within_grants([hold(1, 3, 11, 12, name="M")], grants).ok is False


def test_malformed_grants_are_rejected() -> None:
    with pytest.raises(ValueError, match="has no fence"):
        check_within_grants([], [hold(1, None, 0, 1)])
    with pytest.raises(ValueError, match="two grants of 'L' with fence 3"):
        check_within_grants([], [hold(1, 3, 0, 1), hold(2, 3, 2, 3)])


# -- generated -------------------------------------------------------------------------------------
def lock_server(rng: random.Random, n: int) -> list[Hold]:
    """A correct lease lock: grants in order with growing fences; a hold ends by release, or by
    its lease running out (its client learns of the loss some time later)."""
    holds = []
    now = 0.0
    for fence in range(1, n + 1):
        requested = now - rng.random()
        granted = now + rng.random()
        acquired = granted + rng.random() * 0.1
        if rng.random() < 0.3:  # lease expires at `expiry`; the client notices later
            expiry = acquired + rng.random()
            noticed = expiry + rng.random() * 3
            holds.append(hold(fence % 3, fence, acquired, noticed, lost=True, requested=requested))
            now = expiry
        else:
            released = acquired + rng.random()
            holds.append(hold(fence % 3, fence, acquired, released, requested=requested))
            now = released + rng.random() * 0.01
    rng.shuffle(holds)
    return holds


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40))
def test_a_correct_lock_is_accepted(seed: int, n: int) -> None:
    result = check_mutual_exclusion(lock_server(random.Random(seed), n))
    assert result.ok is True, result.explanation


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 40), pick=st.integers(0, 10**6))
def test_swapped_fences_are_rejected(seed: int, n: int, pick: int) -> None:
    # Without request times (grants taken to happen at `acquired`) every swap is detectable.
    holds = sorted(lock_server(random.Random(seed), n), key=lambda h: h.fence or 0)
    holds = [replace(h, requested=None) for h in holds]
    i = pick % (n - 1)
    a, b = holds[i], holds[i + 1]
    holds[i], holds[i + 1] = replace(a, fence=b.fence), replace(b, fence=a.fence)
    assert check_mutual_exclusion(holds).ok is False


# -- recorder --------------------------------------------------------------------------------------
class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


class StolenError(Exception):
    pass


@dataclass
class FakeGuard:
    fence: int | None
    lost_reason: str | None = None


class FakeLock:
    """An async context manager like `ctx.lock(name)`: raises `StolenError` on exit if lost."""

    def __init__(self, name: str, fence: int, *, steal: bool = False) -> None:
        self.name = name
        self.guard = FakeGuard(fence)
        self.steal = steal

    async def __aenter__(self) -> FakeGuard:
        return self.guard

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.steal:
            self.guard.lost_reason = "stolen"
            raise StolenError


async def test_hold_recorder_wraps_a_lock() -> None:
    holds = HoldRecorder(clock=Ticks())
    async with holds.hold(1, FakeLock("L", 1)) as guard:
        assert guard.fence == 1
    with pytest.raises(StolenError):
        async with holds.hold(2, FakeLock("L", 2, steal=True)):
            pass
    lock = FakeLock("L", 3)
    lock.name = 42  # type: ignore[assignment]
    with pytest.raises(ValueError, match="name="):
        holds.hold(3, lock)
    async with holds.hold(3, lock, name="M"):
        pass
    assert holds.holds() == [
        Hold("L", 1, 1, 2, 3, False, 1),
        Hold("L", 2, 2, 5, 6, True, 4),
        Hold("M", 3, 3, 8, 9, False, 7),
    ]
    assert check_mutual_exclusion(holds.holds()).ok is True


def test_hold_recorder_by_hand() -> None:
    holds = HoldRecorder(clock=Ticks())
    a = holds.request("L", "a")  # 1
    b = holds.request("L", "b")  # 2
    holds.acquired(a, 10)  # 3
    holds.release(a)  # 4
    holds.lose(a)  # learned later that it had been lost: the release time stays
    holds.request("L", "c")  # 5, never acquired: not a hold
    holds.acquired(b, 11)  # 6; never released
    assert holds.holds() == [
        Hold("L", "a", 10, 3, 4, True, 1),
        Hold("L", "b", 11, 6, None, False, 2),
    ]
