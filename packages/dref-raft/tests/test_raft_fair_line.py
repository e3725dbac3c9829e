"""The state machine's lines of contended writers (`dref_raft.lines`, docs/raft.md#the-fair-line):
decided by the log alone, carried by snapshots, applied once per session request, and the
waiters woken by a member's driver (`member/turns.py`)."""

from __future__ import annotations

import asyncio

from dref_raft.commands import FairSwap, LeaveLine, SessionCommand, SetElement
from dref_raft.fsm import StateMachine
from dref_raft.member.turns import TurnWaiters
from dref_raft.wire.commands import decode_command, decode_snapshot, encode_command, encode_snapshot

LIFE = 1000


def swap(expected: bytes | None, value: bytes, ticket: bytes, now: int, *,
         rejoin: bool = False) -> FairSwap:  # fmt: skip
    return FairSwap("k", expected, value, ticket, None, rejoin, LIFE, now)


def machine_with(value: bytes) -> StateMachine:
    machine = StateMachine()
    machine.apply(SetElement("k", value))
    return machine


def test_only_the_head_swaps_while_others_wait_and_its_swap_wakes_the_next() -> None:
    machine = machine_with(b"0")
    uncontended = machine.apply(swap(b"0", b"1", b"a", 10))
    assert (uncontended.created, uncontended.ahead, uncontended.turns) == (True, 0, ())
    assert len(machine.lines) == 0  # nobody waits: no line kept
    failed = [machine.apply(swap(b"stale", b"x", t, 20)) for t in (b"a", b"b", b"c")]
    assert [(r.created, r.current, r.ahead) for r in failed] == [
        (False, b"1", 0),
        (False, b"1", 1),
        (False, b"1", 2),
    ]
    # The right guess is not enough while someone else heads the line.
    assert machine.apply(swap(b"1", b"x", b"c", 30)).created is False
    assert machine.get("k", 0) == b"1"
    # The head's swap hands the turn to the next, with rejoin it goes to the end.
    head = machine.apply(swap(b"1", b"2", b"a", 40, rejoin=True))
    assert (head.created, head.ahead, head.turns) == (True, 2, (("k", b"b"),))
    assert machine.lines.position("k", b"a") == 2
    # A head that leaves hands the turn on too; a leave of a waiter behind it does not.
    assert machine.apply(LeaveLine("k", b"c", now=50)).turns == ()
    assert machine.apply(LeaveLine("k", b"b", now=50)).turns == (("k", b"a"),)
    last = machine.apply(swap(b"2", b"3", b"a", 60, rejoin=True))
    assert (last.created, last.ahead, last.turns) == (True, 0, ())  # nobody left: no place
    assert len(machine.lines) == 0


def test_a_dead_waiter_is_dropped_by_log_time_at_the_same_entry_on_every_member() -> None:
    commands = [
        SetElement("k", b"0"),
        swap(b"-", b"x", b"dead", 100),  # heads the line, alive until 1100, never returns
        swap(b"-", b"x", b"live", 200),  # alive until 1200
        swap(b"0", b"1", b"live", 1099),  # the dead one is still alive at 1099
        swap(b"0", b"1", b"live", 1100),  # ... and gone at 1100: the live one swaps
    ]
    outcomes = []
    for _ in range(2):  # two members applying the same log agree
        machine = StateMachine()
        outcomes.append([machine.apply(c) for c in commands])
        assert machine.get("k", 0) == b"1"
    assert outcomes[0] == outcomes[1]
    assert [r.created for r in outcomes[0][3:]] == [False, True]
    assert outcomes[0][3].ahead == 1


def test_dead_head_dropped_by_someone_elses_attempt_wakes_the_next() -> None:
    machine = machine_with(b"0")
    machine.apply(swap(b"-", b"x", b"dead", 0))
    machine.apply(swap(b"-", b"x", b"next", 500))
    late = machine.apply(swap(b"-", b"x", b"late", 1200))  # `dead` lapsed at 1000
    assert (late.ahead, late.turns) == (1, (("k", b"next"),))


def test_a_failed_attempt_renews_a_place_without_moving_it() -> None:
    machine = machine_with(b"0")
    machine.apply(swap(b"-", b"x", b"a", 0))
    machine.apply(swap(b"-", b"x", b"b", 0))
    assert machine.apply(swap(b"-", b"x", b"b", 950)).ahead == 1  # renewed, still second
    assert machine.apply(swap(b"-", b"x", b"a", 900)).ahead == 0  # renewed, still the head
    assert machine.apply(swap(b"-", b"x", b"c", 1500)).ahead == 2  # both alive past 1000
    late = machine.apply(swap(b"-", b"x", b"c", 1920))  # `a` lapsed at 1900, `b` lives
    assert (late.ahead, late.turns) == (1, (("k", b"b"),))


def test_a_repeated_session_swap_gets_its_recorded_answer_and_swaps_once() -> None:
    machine = machine_with(b"0")
    machine.apply(swap(b"-", b"x", b"other", 0))  # someone heads the line
    sid = b"s" * 16
    wrapped = SessionCommand(sid, 1, swap(b"0", b"1", b"mine", 10), 0, 10, 60_000)
    first = machine.apply(wrapped)
    assert (first.created, first.current, first.ahead) == (False, b"0", 1)
    machine.apply(LeaveLine("k", b"other", now=20))  # now `mine` heads the line
    again = machine.apply(SessionCommand(sid, 1, swap(b"0", b"1", b"mine", 30), 0, 30, 60_000))
    assert (again.created, again.current, again.ahead) == (False, b"0", 1)  # recorded, not re-run
    assert machine.get("k", 0) == b"0"
    swapped = machine.apply(SessionCommand(sid, 2, swap(b"0", b"1", b"mine", 40), 0, 40, 60_000))
    assert swapped.created
    assert [e.value for e in swapped.events] == [b"1"]
    repeat = machine.apply(SessionCommand(sid, 2, swap(b"1", b"2", b"mine", 50), 0, 50, 60_000))
    assert repeat.created
    assert repeat.events == ()
    assert machine.get("k", 0) == b"1"


def test_the_lines_survive_a_snapshot_round_trip_and_install() -> None:
    machine = machine_with(b"0")
    for i, ticket in enumerate((b"a", b"b", b"c")):
        machine.apply(swap(b"-", b"x", ticket, 100 * i))
    machine.apply(SessionCommand(b"s" * 16, 1, swap(b"-", b"x", b"d", 300), 0, 300, 60_000))
    snapshot = machine.snapshot(9)
    assert snapshot.lines == (("k", ((b"a", 1000), (b"b", 1100), (b"c", 1200), (b"d", 1300))),)
    decoded = decode_snapshot(encode_snapshot(snapshot))
    assert decoded == snapshot
    assert dict(decoded.sessions)[b"s" * 16].results[1].ahead == 3
    restored = StateMachine()
    restored.install(decoded)
    assert restored.lines.states() == machine.lines.states()
    # The restored member decides the next entries exactly as the original one.
    for m in (machine, restored):
        result = m.apply(swap(b"0", b"1", b"b", 1050))  # `a` lapsed at 1000: `b` heads
        assert (result.created, result.turns) == (True, (("k", b"c"),))


def test_fair_commands_round_trip_through_the_wire() -> None:
    for command in (
        FairSwap("k", None, b"v", b"t", 99, True, 1500, 7),
        FairSwap("k", b"e", b"v", b"t"),
        LeaveLine("k", b"t"),
        LeaveLine("k", b"t", True, 5),
        SessionCommand(b"s" * 16, 3, FairSwap("k", b"e", b"v", b"t", None, False, 10, 1), 2, 1, 9),
    ):
        assert decode_command(encode_command(command)) == command


def test_a_release_leaves_the_line_and_deletes_only_its_own_lock() -> None:
    machine = StateMachine()
    assert machine.apply(FairSwap("lock", None, b"t1", b"t1", 5000, False, LIFE, 10)).created
    assert not machine.apply(FairSwap("lock", None, b"t2", b"t2", 5000, False, LIFE, 20)).created
    gave_up = machine.apply(LeaveLine("lock", b"t2", True, 30))  # a waiter gives up
    assert (gave_up.created, gave_up.events) == (False, ())
    assert machine.get("lock", 30) == b"t1"
    assert len(machine.lines) == 0
    released = machine.apply(LeaveLine("lock", b"t1", True, 40))
    assert released.created
    assert machine.get("lock", 40) is None


async def test_waiters_are_woken_by_the_applied_entry_with_the_value_it_left() -> None:
    machine = machine_with(b"0")
    turns = TurnWaiters(machine)
    machine.apply(swap(b"-", b"x", b"a", 0))
    machine.apply(swap(b"-", b"x", b"b", 0))
    assert await turns.wait("k", b"a", 5) == (True, b"0")  # already the head: at once
    assert await turns.wait("k", b"nobody", 5) == (False, None)  # not in line: at once
    waiting = asyncio.create_task(turns.wait("k", b"b", 5))
    await asyncio.sleep(0)
    assert len(turns) == 1
    turns.applied(machine.apply(swap(b"0", b"1", b"a", 10)).turns)  # as the driver does
    machine.apply(SetElement("k", b"later"))  # applied before the waiter runs again
    assert await asyncio.wait_for(waiting, 5) == (True, b"1")
    assert len(turns) == 0
    machine.apply(swap(b"-", b"x", b"c", 20))
    assert await turns.wait("k", b"c", 0.01) == (False, None)  # not woken: "not yet"
    closing = asyncio.create_task(turns.wait("k", b"c", 5))
    await asyncio.sleep(0)
    turns.close()
    assert await asyncio.wait_for(closing, 5) == (False, None)
