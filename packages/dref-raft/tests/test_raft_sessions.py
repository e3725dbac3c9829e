"""Exactly-once writes in the state machine (`dref_raft.sessions`, docs/raft-wire.md#sessions)
and through a member context whose answer is lost."""

from __future__ import annotations

from typing import Any

import pytest

from dref_raft.commands import CompareAndSet, SessionCommand, SetElement, StartNewTerm
from dref_raft.errors import WireError
from dref_raft.fsm import StateMachine
from dref_raft.sessions import WriteSession
from dref_raft.wire.commands import (
    decode_command,
    decode_snapshot,
    encode_command,
    encode_snapshot,
)

SID = b"s" * 16


def cas(request: int, expected: bytes | None, value: bytes, *, first: int = 0, now: int = 1000,
        idle: int = 60_000) -> SessionCommand:  # fmt: skip
    return SessionCommand(SID, request, CompareAndSet("k", expected, value), first, now, idle)


def test_a_repeated_request_gets_its_recorded_result_and_changes_nothing() -> None:
    machine = StateMachine()
    first = machine.apply(cas(1, None, b"1"))
    assert first.created is True
    assert [e.value for e in first.events] == [b"1"]
    machine.apply(SetElement("k", b"other"))  # someone else writes in between
    again = machine.apply(cas(1, None, b"1"))
    assert again.created is True  # the recorded answer, not a failed compare
    assert again.events == ()
    assert machine.get("k", 0) == b"other"
    assert machine.apply(cas(2, b"other", b"2")).created is True
    assert machine.get("k", 0) == b"2"


def test_results_below_first_incomplete_are_dropped() -> None:
    machine = StateMachine()
    for request in (1, 2, 3):
        machine.apply(
            cas(request, None if request == 1 else b"%d" % (request - 1), b"%d" % request)
        )
    state = dict(machine.sessions.states())[SID]
    assert sorted(state.results) == [1, 2, 3]
    machine.apply(cas(4, b"3", b"4", first=3))
    state = dict(machine.sessions.states())[SID]
    assert sorted(state.results) == [3, 4]
    stale = machine.apply(cas(1, None, b"1", first=3))  # answered long ago: nothing happens
    assert stale.events == ()
    assert machine.get("k", 0) == b"4"


def test_idle_sessions_expire_by_log_time_only() -> None:
    machine = StateMachine()
    machine.apply(cas(1, None, b"1", now=1_000, idle=500))
    other = SessionCommand(b"o" * 16, 1, SetElement("x", b"x"), 0, 1_400, 500)
    machine.apply(other)
    assert len(machine.sessions) == 2  # 1 000 + 500 > 1 400: still alive
    machine.apply(SessionCommand(b"o" * 16, 2, SetElement("x", b"y"), 2, 1_600, 500))
    assert [sid for sid, _ in machine.sessions.states()] == [b"o" * 16]  # SID expired
    # Two machines applying the same commands hold the same sessions, whatever the time.
    replica = StateMachine()
    for command in (cas(1, None, b"1", now=1_000, idle=500), other):
        replica.apply(command)
    replica.apply(SessionCommand(b"o" * 16, 2, SetElement("x", b"y"), 2, 1_600, 500))
    assert replica.sessions.states() == machine.sessions.states()


def test_sessions_travel_in_snapshots() -> None:
    machine = StateMachine()
    machine.apply(cas(1, None, b"1"))
    restored = StateMachine()
    restored.install(decode_snapshot(encode_snapshot(machine.snapshot(7))))
    again = restored.apply(cas(1, None, b"1"))
    assert (again.created, again.events) == (True, ())


def test_session_command_wire_round_trip_and_refusals() -> None:
    command = cas(3, b"a", b"b", first=2)
    assert decode_command(encode_command(command)) == command
    with pytest.raises(ValueError, match="session wraps a write"):
        encode_command(SessionCommand(SID, 1, StartNewTerm()))
    nested = SessionCommand(SID, 1, command)
    with pytest.raises(ValueError, match="session wraps a write"):
        encode_command(nested)
    # A hand-made nested one from the wire is refused too.
    from dref_raft._pb import state_command_pb2

    msg: Any = state_command_pb2.StateCommand()
    msg.session.session = SID
    msg.session.request = 1
    msg.session.command = encode_command(command)
    with pytest.raises(WireError, match="wraps SessionCommand"):
        decode_command(msg.SerializeToString())


def test_write_session_numbers_requests_and_tracks_the_oldest_in_flight() -> None:
    session = WriteSession(SID)
    one, two = session.start(), session.start()
    assert (one, two) == (1, 2)
    assert session.wrap(SetElement("k", b"v"), two).first_incomplete == 1
    session.finish(one)
    assert session.wrap(SetElement("k", b"v"), two).first_incomplete == 2
    session.finish(two)
    assert session.wrap(SetElement("k", b"v"), 3).first_incomplete == 3
