"""Each entry's command is encoded once on the write path (`dref_raft.wire.command_bytes`):
the leader's log write and its AppendEntries share the bytes, a follower stores the bytes it
received; what goes on the wire and into the log is unchanged."""

from __future__ import annotations

import os

import pytest

from dref_raft import apply
from dref_raft.commands import SessionCommand, SetElement, StartNewTerm
from dref_raft.core import AppendEntries, Entry
from dref_raft.core.ready import Ready
from dref_raft.wire import command_bytes as memo
from dref_raft.wire import commands as wire_commands
from dref_raft.wire.command_bytes import MEMO_ENTRIES, MEMO_MAX_BYTES, command_bytes
from dref_raft.wire.commands import decode_command_term, encode_command
from dref_raft.wire.messages import decode_request, encode_request


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every command `command_bytes` really encodes."""
    seen: list[object] = []

    def counting(command: object, **kwargs: object) -> bytes:
        seen.append(command)
        return encode_command(command, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(memo, "encode_command", counting)
    return seen


def _session_write(i: int) -> SessionCommand:
    return SessionCommand(os.urandom(16), i, SetElement(f"k{i}", b"v", None), i, 1_700_000, 300)


def test_the_leader_encodes_an_entry_once_for_its_log_and_every_append_entries(
    encodes: list[object],
) -> None:
    command = _session_write(1)
    entry = Entry(7, 3, command)
    (record,) = apply.log_records(Ready(entries=(entry,)))
    assert record.command == encode_command(command)
    for follower in ("b", "c"):
        request = AppendEntries("a", follower, 3, 7, command, 6, ext=True, entries=(entry,))
        decoded = decode_request("AppendEntries", encode_request(request), follower)
        assert decoded == request
    assert encodes == [command]


def test_a_follower_stores_the_bytes_it_received_without_encoding_again(
    encodes: list[object],
) -> None:
    command = _session_write(2)
    request = AppendEntries("a", "b", 3, 7, command, 6, ext=True, entries=(Entry(7, 3, command),))
    received = decode_request("AppendEntries", encode_request(request), "b")
    encodes.clear()
    (record,) = apply.log_records(Ready(entries=received.entries))
    assert record.command == encode_command(command)
    assert encodes == []


def test_start_new_term_keeps_its_term_in_the_log_and_not_on_the_wire() -> None:
    entry = Entry(5, 9, StartNewTerm())
    (record,) = apply.log_records(Ready(entries=(entry,)))
    assert decode_command_term(record.command) == (StartNewTerm(), 9)
    assert command_bytes(entry.command) == encode_command(StartNewTerm())
    assert id(entry.command) not in memo._memo


def test_the_memo_is_bounded_in_entries_and_holds_no_large_command(
    encodes: list[object],
) -> None:
    big = SetElement("big", b"x" * (MEMO_MAX_BYTES + 1), None)
    assert command_bytes(big) == wire_commands.encode_command(big)
    assert command_bytes(big) == wire_commands.encode_command(big)
    assert encodes == [big, big]  # encoded each time, never held
    kept = [SetElement(f"n{i}", b"v", None) for i in range(MEMO_ENTRIES + 10)]
    for command in kept:
        command_bytes(command)
    assert len(memo._memo) == MEMO_ENTRIES
    assert id(kept[-1]) in memo._memo
    assert id(kept[0]) not in memo._memo
