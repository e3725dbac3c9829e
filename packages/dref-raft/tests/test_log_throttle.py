"""`LogThrottle`: a recurring failure logged at its level once per interval per key, with a
bounded memory of keys."""

from __future__ import annotations

from dref_raft.log_throttle import LogThrottle


def test_a_key_is_due_once_per_interval_and_keys_are_independent() -> None:
    throttle = LogThrottle(3600.0)
    assert [throttle.due("a"), throttle.due("a"), throttle.due("b")] == [True, False, True]
    again = LogThrottle(0.0)
    assert [again.due("a"), again.due("a")] == [True, True]


def test_the_keys_remembered_are_bounded() -> None:
    throttle = LogThrottle(3600.0, max_keys=2)
    assert [throttle.due("a"), throttle.due("b"), throttle.due("a")] == [True, True, False]
    assert throttle.due("c")  # a third key: the others are forgotten
    assert len(throttle._last) == 1
    assert throttle.due("a")
