"""The state machine applies commands exactly per docs/protocol.md#raft-state-machine and never
reads a clock."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from raft_helpers import COMMANDS, SNAPSHOTS

from dref_raft.commands import (
    Command,
    CompareAndSet,
    DeleteElement,
    DeleteIfExpired,
    ExpireElement,
    NoOp,
    SetElement,
    SetIfNotExist,
    StartNewTerm,
)
from dref_raft.fsm import (
    ApplyResult,
    Changed,
    ClusterSnapshot,
    Element,
    SnapshotEntry,
    StateMachine,
)


def machine_with(*commands: Command) -> StateMachine:
    machine = StateMachine()
    for command in commands:
        machine.apply(command)
    return machine


def test_set_inserts_and_overwrites_with_an_event_each_time() -> None:
    machine = StateMachine()
    assert machine.apply(SetElement("a", b"1", 50)) == ApplyResult((Changed("a", b"1"),))
    assert machine.apply(SetElement("a", b"2")) == ApplyResult((Changed("a", b"2"),))
    assert machine.element("a") == Element(b"2", None)
    # the same value again is still a change event (upstream emits one per SetElement)
    assert machine.apply(SetElement("a", b"2")).events == (Changed("a", b"2"),)


def test_set_if_not_exist_creates_only_when_absent() -> None:
    machine = StateMachine()
    assert machine.apply(SetIfNotExist("a", b"1", 9)) == ApplyResult(
        (Changed("a", b"1"),), created=True
    )
    assert machine.apply(SetIfNotExist("a", b"2")) == ApplyResult((), created=False)
    assert machine.element("a") == Element(b"1", 9)


def test_set_if_not_exist_treats_an_expired_unreaped_element_as_present() -> None:
    machine = machine_with(SetElement("a", b"old", expire_at=10))
    assert machine.get("a", now_ms=100) is None  # expired for readers...
    assert machine.apply(SetIfNotExist("a", b"new")).created is False  # ...but still present
    assert machine.element("a") == Element(b"old", 10)


def test_compare_and_set_emits_one_event_unless_it_replaces_an_expired_element() -> None:
    machine = machine_with(SetElement("a", b"1"), SetElement("x", b"old", expire_at=10))
    # a live value replaced: one event (no delete in between)
    assert machine.apply(CompareAndSet("a", b"1", b"2", None, 100)) == ApplyResult(
        (Changed("a", b"2"),), created=True
    )
    # a create over an expired, unreaped element: its delete, then the new value
    assert machine.apply(CompareAndSet("x", None, b"new", None, 100)).events == (
        Changed("x", None),
        Changed("x", b"new"),
    )


def test_delete_always_emits_even_when_absent() -> None:
    machine = machine_with(SetElement("a", b"1"))
    assert machine.apply(DeleteElement("a")) == ApplyResult((Changed("a", None),))
    assert machine.element("a") is None
    assert machine.apply(DeleteElement("a")) == ApplyResult((Changed("a", None),))


def test_expire_sets_the_expiry_of_a_present_element_only() -> None:
    """No change event either way; `created` says whether the element was there (re-armed)."""
    machine = machine_with(SetElement("a", b"1"))
    assert machine.apply(ExpireElement("a", 77)) == ApplyResult(created=True)
    assert machine.element("a") == Element(b"1", 77)
    assert machine.apply(ExpireElement("missing", 77)) == ApplyResult(created=False)
    assert machine.element("missing") is None


def test_delete_if_expired_removes_only_when_expired_at_the_commands_time() -> None:
    machine = machine_with(SetElement("ttl", b"1", 100), SetElement("forever", b"2"))
    assert machine.apply(DeleteIfExpired("ttl", now=99)) == ApplyResult()
    assert machine.element("ttl") is not None
    assert machine.apply(DeleteIfExpired("forever", now=10**12)) == ApplyResult()
    assert machine.apply(DeleteIfExpired("missing", now=10**12)) == ApplyResult()
    assert machine.apply(DeleteIfExpired("ttl", now=100)) == ApplyResult((Changed("ttl", None),))
    assert machine.element("ttl") is None


def test_a_keep_alive_applied_before_the_reaper_wins() -> None:
    machine = machine_with(SetElement("lock", b"t", 100), ExpireElement("lock", 200))
    assert machine.apply(DeleteIfExpired("lock", now=150)) == ApplyResult()
    assert machine.get("lock", now_ms=150) == b"t"


def test_start_new_term_and_empty_commands_change_nothing() -> None:
    machine = machine_with(SetElement("a", b"1"))
    before = dict(machine.elements())
    assert machine.apply(StartNewTerm()) == ApplyResult()
    assert machine.apply(NoOp()) == ApplyResult()
    assert dict(machine.elements()) == before


def test_reads_are_filtered_by_the_time_passed_in() -> None:
    machine = machine_with(SetElement("a", b"1", 100), SetElement("b", b"2"))
    assert machine.get("a", now_ms=99) == b"1"
    assert machine.get("a", now_ms=100) is None  # expire_at <= now is expired
    assert machine.get("b", now_ms=2**63) == b"2"
    assert machine.get("missing", now_ms=0) is None
    assert machine.expiration_table() == {"a": 100}


def test_snapshot_holds_every_element_sorted_with_last_seq() -> None:
    machine = machine_with(SetElement("b", b"2", 5), SetElement("a", b"1"))
    assert machine.snapshot(last_seq=9) == ClusterSnapshot(
        (SnapshotEntry("a", b"1", None), SnapshotEntry("b", b"2", 5)), last_seq=9
    )


def test_install_replaces_the_state_and_reports_what_changed() -> None:
    machine = machine_with(
        SetElement("same", b"s"),
        SetElement("changed", b"old"),
        SetElement("removed", b"r"),
        SetElement("new-ttl-only", b"t", 5),
    )
    changes = machine.install(
        ClusterSnapshot(
            (
                SnapshotEntry("same", b"s"),
                SnapshotEntry("changed", b"new"),
                SnapshotEntry("added", b"a"),
                SnapshotEntry("new-ttl-only", b"t", 99),
            ),
            last_seq=4,
        )
    )
    assert changes == (
        Changed("added", b"a"),
        Changed("changed", b"new"),
        Changed("removed", None),
    )
    assert dict(machine.elements()) == {
        "same": Element(b"s"),
        "changed": Element(b"new"),
        "added": Element(b"a"),
        "new-ttl-only": Element(b"t", 99),
    }


def test_install_with_duplicate_keys_keeps_the_later_entry() -> None:
    machine = StateMachine()
    machine.install(ClusterSnapshot((SnapshotEntry("k", b"1"), SnapshotEntry("k", b"2"))))
    assert machine.element("k") == Element(b"2")


@given(st.lists(COMMANDS, max_size=30))
def test_a_snapshot_installed_elsewhere_reproduces_the_state(commands: list[Command]) -> None:
    machine = machine_with(*commands)
    replica = StateMachine()
    replica.install(machine.snapshot(last_seq=len(commands)))
    assert dict(replica.elements()) == dict(machine.elements())
    # and both go on identically
    for command in commands:
        assert replica.apply(command) == machine.apply(command)
    assert dict(replica.elements()) == dict(machine.elements())


@given(st.lists(COMMANDS, max_size=20), SNAPSHOTS)
def test_install_changes_are_exactly_the_value_differences(
    commands: list[Command], snapshot: ClusterSnapshot
) -> None:
    machine = machine_with(*commands)
    before = {name: e.value for name, e in machine.elements().items()}
    changes = machine.install(snapshot)
    after = {name: e.value for name, e in machine.elements().items()}
    expected = tuple(
        Changed(name, after.get(name))
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name) or (name in after) != (name in before)
    )
    assert changes == expected


@given(st.lists(COMMANDS, max_size=30))
def test_events_describe_the_resulting_values(commands: list[Command]) -> None:
    machine = StateMachine()
    for command in commands:
        for event in machine.apply(command).events:
            element = machine.element(event.name)
            assert event.value == (None if element is None else element.value)


def test_the_machine_never_reads_a_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_clock() -> float:
        raise AssertionError("the state machine read the clock")

    for name in ("time", "time_ns", "monotonic", "monotonic_ns"):
        monkeypatch.setattr(time, name, no_clock)
    machine = machine_with(
        SetElement("a", b"1", 5),
        SetIfNotExist("b", b"2", 5),
        ExpireElement("a", 7),
        DeleteIfExpired("b", 6),
    )
    assert machine.get("a", now_ms=6) == b"1"
    assert machine.expiration_table() == {"a": 7}
    machine.install(machine.snapshot(last_seq=4))


def test_fenced_write_applies_only_while_the_lock_holds_the_token() -> None:
    from dref_raft.commands import FENCE_COMPARE, FENCE_IF_ABSENT, FencedWrite

    fsm = StateMachine()
    fsm.apply(SetElement("lock", b"t1", expire_at=2_000))
    done = fsm.apply(FencedWrite("lock", b"t1", "x", b"1", now=1_000))
    assert done.created
    assert done.events == (Changed("x", b"1"),)
    assert not fsm.apply(
        FencedWrite("lock", b"t1", "x", b"2", None, FENCE_IF_ABSENT, now=1_000)
    ).created
    swapped = fsm.apply(FencedWrite("lock", b"t1", "x", b"3", None, FENCE_COMPARE, b"9", now=1_000))
    assert (swapped.created, swapped.current, swapped.stale) == (False, b"1", False)
    # The lease ran out at 2000: stale, nothing changes (also with another token in the lock).
    expired = fsm.apply(FencedWrite("lock", b"t1", "x", b"4", now=2_000))
    assert (expired.stale, expired.events) == (True, ())
    fsm.apply(SetElement("lock", b"t2"))
    assert fsm.apply(FencedWrite("lock", b"t1", "x", None, now=1_000)).stale
    assert fsm.get("x", 1_000) == b"1"
    assert fsm.apply(FencedWrite("lock", b"t2", "x", None, now=1_000)).events == (
        Changed("x", None),
    )
