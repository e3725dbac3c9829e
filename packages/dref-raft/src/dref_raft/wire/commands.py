"""Our dataclasses ⇄ upstream's protobuf bytes, byte for byte (docs/protocol.md#wire).

This is the edge: the generated `_pb` types are used here (and in storage/transport) and
never handed out. `StateCommand` is the replicated log entry; `ClusterSnapshot` is the
payload of snapshot files and of InstallSnapshot.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from google.protobuf.message import DecodeError, EncodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from dref_raft._pb import (
    dref_consensus_pb2,
    dref_fair_pb2,
    dref_membership_pb2,
    dref_session_pb2,
    state_command_pb2,
)
from dref_raft.commands import (
    Command,
    CompareAndDelete,
    CompareAndExpire,
    CompareAndSet,
    ConfigChange,
    DeleteElement,
    DeleteIfExpired,
    ExpireElement,
    FairSwap,
    FencedWrite,
    LeaveLine,
    Membership,
    NoOp,
    SessionCommand,
    SetElement,
    SetIfNotExist,
    StartNewTerm,
)
from dref_raft.errors import SnapshotAbandonedError, WireError
from dref_raft.fsm import (
    ChunkedTupleBuilder,
    ClusterSnapshot,
    NamesCopy,
    PackedEntries,
    SnapshotEntry,
    StateCopy,
    sorted_items,
    sorted_names,
)
from dref_raft.lines import LineState
from dref_raft.sessions import RecordedResult, SessionState

__all__ = [
    "COMPARE_AND_DELETE_FIELD",
    "COMPARE_AND_EXPIRE_FIELD",
    "COMPARE_AND_SET_FIELD",
    "CONFIG_CHANGE_FIELD",
    "EXT_TERM_FIELD",
    "FAIR_SWAP_FIELD",
    "FENCED_WRITE_FIELD",
    "LEAVE_LINE_FIELD",
    "SESSION_FIELD",
    "EntrySink",
    "SnapshotDecoder",
    "decode_command",
    "decode_command_term",
    "decode_snapshot",
    "encode_command",
    "encode_membership",
    "encode_names_parts",
    "encode_snapshot",
    "encode_snapshot_parts",
    "encode_state_parts",
    "fill_membership",
    "membership_of",
    "misplaced_field",
    "snapshot_of",
]


#: dref extensions (docs/raft-wire.md; upstream parsers skip unknown fields), all in the
#: `.proto` files: `StateCommand` oneof members for the compare commands (each with
#: `uint64 now = 1000`, the leader's clock) ...
COMPARE_AND_SET_FIELD = 1001
COMPARE_AND_DELETE_FIELD = 1002
COMPARE_AND_EXPIRE_FIELD = 1003
FENCED_WRITE_FIELD = 1004
#: `StateCommand` oneof member of the configuration change, and `ClusterSnapshot.membership`
#: (docs/raft-wire.md#membership).
CONFIG_CHANGE_FIELD = 1400
#: `StateCommand.session` (`SessionCommand`, dref_session.proto) and `ClusterSnapshot.sessions`:
#: exactly-once writes (docs/raft-wire.md#sessions).
SESSION_FIELD = 1600
#: `StateCommand` oneof members of fair updates (dref_fair.proto) and `ClusterSnapshot.lines`
#: (docs/raft-wire.md#fair-updates).
FAIR_SWAP_FIELD = 1700
LEAVE_LINE_FIELD = 1701
#: ... and `uint64 term = 1000` in `StartNewTermCommand` (the term of the leader that
#: proposed it, so stored entries' terms can be rebuilt) and `uint64 last_term = 1000` in
#: `ClusterSnapshot` (the term of the entry at `last_seq`).
EXT_TERM_FIELD = 1000


def encode_command(command: Command, *, term: int | None = None) -> bytes:
    """Encode a command as upstream `StateCommand` bytes.

    `term` (only for `StartNewTerm`) is stored in the extension field
    `StartNewTermCommand.term`; upstream nodes ignore it.
    """
    msg: Any = state_command_pb2.StateCommand()
    try:
        match command:
            case SetElement(name, value, expire_at):
                _fill_set(msg.set_element, name, value, expire_at)
            case SetIfNotExist(name, value, expire_at):
                _fill_set(msg.set_element_if_not_exist, name, value, expire_at)
            case DeleteElement(name):
                msg.delete_element.name = name
            case ExpireElement(name, expire_at):
                msg.expire_element.name = name
                msg.expire_element.expire_at = expire_at
            case DeleteIfExpired(name, now):
                msg.delete_if_expired.name = name
                msg.delete_if_expired.now = now
            case StartNewTerm():
                msg.start_new_term.SetInParent()
                if term:
                    msg.start_new_term.term = term
            case CompareAndSet(name, expected, value, expire_at, now):
                cas = msg.compare_and_set
                cas.name = name
                if expected is not None:
                    cas.expected = expected
                cas.value = value
                if expire_at is not None:
                    cas.expire_at = expire_at
                cas.now = now
            case CompareAndDelete(name, expected, now):
                msg.compare_and_delete.name = name
                msg.compare_and_delete.expected = expected
                msg.compare_and_delete.now = now
            case CompareAndExpire(name, expected, expire_at, now):
                msg.compare_and_expire.name = name
                msg.compare_and_expire.expected = expected
                msg.compare_and_expire.expire_at = expire_at
                msg.compare_and_expire.now = now
            case FencedWrite():
                fw = msg.fenced_write
                fw.lock = command.lock
                fw.token = command.token
                fw.name = command.name
                if command.value is not None:
                    fw.value = command.value
                if command.expire_at is not None:
                    fw.expire_at = command.expire_at
                fw.condition = command.condition
                if command.expected is not None:
                    fw.expected = command.expected
                fw.now = command.now
            case ConfigChange(membership):
                fill_membership(msg.config_change.membership, membership)
                msg.config_change.SetInParent()
            case SessionCommand():
                if isinstance(command.command, SessionCommand | StartNewTerm | NoOp):
                    raise TypeError(f"a session wraps a write, not {command.command!r}")
                sc = msg.session
                sc.session = command.session
                sc.request = command.request
                sc.first_incomplete = command.first_incomplete
                sc.now = command.now
                sc.idle_ms = command.idle_ms
                sc.command = encode_command(command.command)
            case FairSwap():
                fs = msg.fair_swap
                fs.name = command.name
                if command.expected is not None:
                    fs.expected = command.expected
                fs.value = command.value
                if command.expire_at is not None:
                    fs.expire_at = command.expire_at
                fs.ticket = command.ticket
                fs.rejoin = command.rejoin
                fs.life_ms = command.life_ms
                fs.now = command.now
            case LeaveLine(name, ticket, release, now):
                ll = msg.leave_line
                ll.name = name
                ll.ticket = ticket
                ll.release = release
                ll.now = now
                ll.SetInParent()
            case NoOp():
                pass
            case _:
                raise TypeError(f"not a state command: {command!r}")
        return bytes(msg.SerializeToString())
    except (ValueError, TypeError, EncodeError) as exc:
        raise ValueError(f"cannot encode {command!r}: {exc}") from exc


def decode_command(data: bytes) -> Command:
    """Decode upstream `StateCommand` bytes; no operation set (or an unknown one) is `NoOp`."""
    return decode_command_term(data)[0]


def decode_command_term(data: bytes) -> tuple[Command, int | None]:
    """`decode_command`, plus the term stored in a `StartNewTerm` (None when absent)."""
    msg: Any = _parse(state_command_pb2.StateCommand(), data, "StateCommand")
    op = msg.WhichOneof("op")
    if op == "start_new_term":
        term = int(msg.start_new_term.term)
        return StartNewTerm(), (term if term > 0 else None)
    if op is None:
        return NoOp(), None
    return _decode_upstream(msg, op), None


def _decode_upstream(msg: Any, op: str) -> Command:
    if op == "set_element":
        return SetElement(*_read_set(msg.set_element))
    if op == "set_element_if_not_exist":
        return SetIfNotExist(*_read_set(msg.set_element_if_not_exist))
    if op == "delete_element":
        return DeleteElement(str(msg.delete_element.name))
    if op == "expire_element":
        return ExpireElement(str(msg.expire_element.name), int(msg.expire_element.expire_at))
    if op == "delete_if_expired":
        return DeleteIfExpired(str(msg.delete_if_expired.name), int(msg.delete_if_expired.now))
    compare = _decode_compare(msg, op)
    return compare if compare is not None else NoOp()


def _decode_compare(msg: Any, op: str) -> Command | None:
    """The dref compare commands (oneof members 1001-1003)."""
    if op == "compare_and_set":
        c = msg.compare_and_set
        return CompareAndSet(
            str(c.name),
            bytes(c.expected) if c.HasField("expected") else None,
            bytes(c.value),
            int(c.expire_at) if c.HasField("expire_at") else None,
            int(c.now),
        )
    if op == "compare_and_delete":
        c = msg.compare_and_delete
        return CompareAndDelete(str(c.name), bytes(c.expected), int(c.now))
    if op == "compare_and_expire":
        c = msg.compare_and_expire
        return CompareAndExpire(str(c.name), bytes(c.expected), int(c.expire_at), int(c.now))
    if op == "config_change":
        return ConfigChange(membership_of(msg.config_change.membership))
    if op == "session":
        sc = msg.session
        inner = decode_command(bytes(sc.command))
        if isinstance(inner, SessionCommand | StartNewTerm | NoOp):
            raise WireError(f"a session command wraps {type(inner).__name__}, not a write")
        return SessionCommand(
            bytes(sc.session),
            int(sc.request),
            inner,
            int(sc.first_incomplete),
            int(sc.now),
            int(sc.idle_ms),
        )
    if op == "fenced_write":
        f = msg.fenced_write
        return FencedWrite(
            str(f.lock),
            bytes(f.token),
            str(f.name),
            bytes(f.value) if f.HasField("value") else None,
            int(f.expire_at) if f.HasField("expire_at") else None,
            int(f.condition),
            bytes(f.expected) if f.HasField("expected") else None,
            int(f.now),
        )
    if op == "fair_swap":
        c = msg.fair_swap
        return FairSwap(
            str(c.name),
            bytes(c.expected) if c.HasField("expected") else None,
            bytes(c.value),
            bytes(c.ticket),
            int(c.expire_at) if c.HasField("expire_at") else None,
            bool(c.rejoin),
            int(c.life_ms),
            int(c.now),
        )
    if op == "leave_line":
        c = msg.leave_line
        return LeaveLine(str(c.name), bytes(c.ticket), bool(c.release), int(c.now))
    return None


#: Entries per protobuf call when a snapshot is encoded or decoded: each call runs in C holding
#: the GIL, so a whole million-entry snapshot in one call would stall every other thread (the
#: event loop's) for as long; slices of this many keep each hold short.
SNAPSHOT_SLICE_ENTRIES = 4096


def encode_snapshot(snapshot: ClusterSnapshot) -> bytes:
    """Encode upstream `ClusterSnapshot` bytes, entries in the given order.

    Serialized a slice of entries at a time: a repeated field's bytes are its elements' bytes
    one after the other, and fields are written in number order, so the result is the same bytes
    as one `SerializeToString` of the whole message.
    """
    return b"".join(encode_snapshot_parts(snapshot))


def encode_snapshot_parts(snapshot: ClusterSnapshot) -> Iterator[bytes]:
    """`encode_snapshot`'s bytes, a slice of entries at a time (write them out as they come:
    memory stays bounded by a slice)."""
    entries = snapshot.entries
    try:
        if isinstance(entries, PackedEntries):
            yield from _encode_packed(entries)
        else:
            for start in range(0, len(entries), SNAPSHOT_SLICE_ENTRIES):
                msg: Any = dref_consensus_pb2.ClusterSnapshot()
                for entry in entries[start : start + SNAPSHOT_SLICE_ENTRIES]:
                    kv: Any = msg.entries.add(key=entry.key, value=entry.value)
                    if entry.expire_at is not None:
                        kv.expireAt = entry.expire_at
                yield bytes(msg.SerializeToString())
        yield _encode_tail(
            snapshot.last_seq,
            snapshot.last_term,
            snapshot.membership,
            snapshot.sessions,
            snapshot.lines,
        )
    except (ValueError, TypeError, EncodeError) as exc:
        raise ValueError(f"cannot encode snapshot: {exc}") from exc


def encode_state_parts(state: StateCopy, last_seq: int, last_term: int) -> Iterator[bytes]:
    """The bytes of `encode_snapshot_parts(snapshot_of_state(state, last_seq, last_term))`,
    encoded from the copy itself: its pairs in name order (`sorted_items`, which empties the
    copy), a slice at a time, never a snapshot's tuples of them all."""
    expiries = state.expiries
    items = sorted_items(state)
    try:
        while batch := list(itertools.islice(items, SNAPSHOT_SLICE_ENTRIES)):
            yield _encode_named(batch, expiries)
        yield _encode_tail(last_seq, last_term, state.membership, state.sessions, state.lines)
    except (ValueError, TypeError, EncodeError) as exc:
        raise ValueError(f"cannot encode snapshot: {exc}") from exc
    finally:
        state.clear()


def encode_names_parts(copy: NamesCopy, last_seq: int, last_term: int) -> Iterator[bytes]:
    """The bytes of the snapshot at `last_seq` of the state `copy` was taken of (the same as
    `encode_snapshot_parts` of it), from the copied names in order (`sorted_names`) and their
    values read through the copy-on-write record, a slice at a time.
    `SnapshotAbandonedError` when the machine's whole state was replaced meanwhile (checked
    after each slice is read)."""
    expiries, cow = copy.expiries, copy.cow
    value_of = cow.value_of
    names = sorted_names(copy)
    try:
        while batch := list(itertools.islice(names, SNAPSHOT_SLICE_ENTRIES)):
            values = [value_of(name) for name in batch]
            if cow.abandoned:
                raise SnapshotAbandonedError("the state was replaced while its snapshot was taken")
            found = [value for value in values if value is not None]
            if len(found) != len(batch):
                missing = batch[values.index(None)]
                raise RuntimeError(f"element {missing!r} has no value at the copy")
            yield _encode_named(zip(batch, found, strict=True), expiries)
        yield _encode_tail(last_seq, last_term, copy.membership, copy.sessions, copy.lines)
    except (ValueError, TypeError, EncodeError) as exc:
        raise ValueError(f"cannot encode snapshot: {exc}") from exc
    finally:
        copy.slices.clear()
        expiries.clear()


def _encode_named(pairs: Iterable[tuple[str, bytes]], expiries: Mapping[str, int]) -> bytes:
    """One slice of a snapshot's entries: `pairs` (name, value) in order, each with its
    expiry in `expiries` (by name) if it has one."""
    msg: Any = dref_consensus_pb2.ClusterSnapshot()
    add = msg.entries.add
    if expiries:
        for name, value in pairs:
            kv: Any = add(key=name, value=value)
            expire_at = expiries.get(name)
            if expire_at is not None:
                kv.expireAt = expire_at
    else:
        for name, value in pairs:
            add(key=name, value=value)
    return bytes(msg.SerializeToString())


def _encode_tail(
    last_seq: int,
    last_term: int,
    membership: Membership | None,
    sessions: Sequence[tuple[bytes, SessionState]],
    lines: Sequence[tuple[str, LineState]],
) -> bytes:
    """A snapshot's fields after its entries: every other field has a number above the
    entries' (1), so it follows them."""
    tail: Any = dref_consensus_pb2.ClusterSnapshot()
    tail.last_seq = last_seq
    tail.last_term = last_term
    if membership is not None:
        fill_membership(tail.membership, membership)
    for sid, session in sessions:
        tail.sessions.append(_session_state(sid, session))
    for name, line in lines:
        tail.lines.append(_line_msg(name, line))
    return bytes(tail.SerializeToString())


def _encode_packed(entries: PackedEntries) -> Iterator[bytes]:
    """The entries' bytes a slice at a time, straight from the parallel lists."""
    names, values = entries.names, entries.values
    timed = sorted(entries.expiries.items())
    t = 0
    for start in range(0, len(names), SNAPSHOT_SLICE_ENTRIES):
        end = start + SNAPSHOT_SLICE_ENTRIES
        msg: Any = dref_consensus_pb2.ClusterSnapshot()
        add = msg.entries.add
        for name, value in zip(names[start:end], values[start:end], strict=True):
            add(key=name, value=value)
        while t < len(timed) and timed[t][0] < end:
            index, expire_at = timed[t]
            msg.entries[index - start].expireAt = expire_at
            t += 1
        yield bytes(msg.SerializeToString())


def decode_snapshot(data: bytes) -> ClusterSnapshot:
    """Decode upstream `ClusterSnapshot` bytes (entries keep their encoded order, as
    `PackedEntries`).

    Parsed a slice of fields at a time (see `SNAPSHOT_SLICE_ENTRIES`); a message is the
    concatenation of its fields, and a later scalar field wins, as in one parse.
    """
    decoder = SnapshotDecoder()
    if not decoder.feed(data, final=True):  # malformed: one parse says what is wrong
        return snapshot_of(_parse(dref_consensus_pb2.ClusterSnapshot(), data, "ClusterSnapshot"))
    return decoder.result()


class EntrySink(Protocol):
    """Where a `SnapshotDecoder` given one sends the entries instead of keeping them."""

    def add(self, names: list[str], values: list[bytes]) -> None:
        """The next entries, in the snapshot's order."""
        ...

    def expire(self, name: str, expire_at: int) -> None:
        """The entry `name` just added has this expiry."""
        ...


class SnapshotDecoder:
    """Decodes `ClusterSnapshot` bytes fed in pieces of any size (a file read a block at a
    time), a slice of fields per protobuf call, into `PackedEntries` (no object per entry).

    `reuse` (a member's current values): a decoded value equal to the one held under the same
    name is replaced by the held object, so a member that already holds most of a snapshot
    does not hold its values twice while it installs it; `reuse_names` (sorted names the
    member holds, e.g. its previous snapshot's) does the same for the names of a snapshot
    sorted by name. `state` (an empty dict): filled with name → value as the entries come
    (later duplicates win), the state a member without one installs, so that it is not built
    afterwards with the whole snapshot already in memory (`StateMachine.prepare_install`).
    `sink`: every entry goes there and none is kept (`result` has no entries, `count` says
    how many there were; the other arguments are unused).
    """

    def __init__(
        self,
        reuse: Mapping[str, bytes] | None = None,
        reuse_names: Sequence[str] | None = None,
        state: dict[str, bytes] | None = None,
        *,
        sink: EntrySink | None = None,
    ) -> None:
        if state:
            raise ValueError("the state to fill must start empty")
        self._sink = sink
        #: Entries decoded so far.
        self.count = 0
        self._state = state
        self._reuse = reuse
        #: `reuse_names` from the first not yet passed (None: none left).
        self._known: Iterator[str] = iter(reuse_names or ())
        self._known_at: str | None = next(self._known, None)
        self._pending = b""
        self._names: ChunkedTupleBuilder[str] = ChunkedTupleBuilder()
        self._values: ChunkedTupleBuilder[bytes] = ChunkedTupleBuilder()
        self._expiries: dict[int, int] = {}
        self._sessions: list[tuple[bytes, SessionState]] = []
        self._lines: list[tuple[str, LineState]] = []
        self._last_seq = 0
        self._last_term = 0
        self._membership: Membership | None = None

    def feed(self, data: bytes, *, final: bool = False) -> bool:
        """Decode the whole fields in what was fed so far (all of it when `final`); False when
        the bytes do not scan as fields (`WireError` when a slice does not parse).

        Entries of the common form (a name, a non-empty value, no expiry, short lengths) are
        read directly from the bytes; everything else a slice of fields per protobuf parse.
        """
        if self._pending:
            data = self._pending + data
        offset, size = 0, len(data)
        view = memoryview(data)
        while offset < size:
            names, values, offset = _plain_entries(data, offset)
            if names:
                self._add(names, values)
            if offset >= size:
                break
            end = _slice_end(data, offset, SNAPSHOT_SLICE_ENTRIES, partial=not final)
            if end is None:
                return False
            if end == offset:  # a field that the next bytes complete
                break
            msg = _parse(dref_consensus_pb2.ClusterSnapshot(), view[offset:end], "ClusterSnapshot")
            self._take(msg)
            offset = end
        self._pending = data[offset:]
        return True

    def _add(self, names: list[str], values: list[bytes]) -> None:
        self.count += len(names)
        if self._sink is not None:
            self._sink.add(names, values)
            return
        if self._reuse:
            held = self._reuse.get
            values = [
                old if (old := held(name)) == value else value
                for name, value in zip(names, values, strict=True)
            ]
        if self._known_at is not None:
            self._known_at = _reuse_sorted(names, self._known, self._known_at)
        self._names.extend(names)
        self._values.extend(values)
        if self._state is not None:
            self._state.update(zip(names, values, strict=True))

    def _take(self, msg: Any) -> None:
        kvs = msg.entries
        base = self._names.count
        self._add([kv.key for kv in kvs], [kv.value for kv in kvs])
        timed = [kv.HasField("expireAt") for kv in kvs]
        if any(timed):
            sink = self._sink
            for i in itertools.compress(range(len(timed)), timed):
                if sink is not None:
                    sink.expire(kvs[i].key, int(kvs[i].expireAt))
                else:
                    self._expiries[base + i] = int(kvs[i].expireAt)
        if msg.last_seq:
            self._last_seq = int(msg.last_seq)
        if msg.last_term:
            self._last_term = int(msg.last_term)
        if msg.HasField("membership"):
            self._membership = membership_of(msg.membership)
        self._sessions.extend(_session_of(s) for s in msg.sessions)
        self._lines.extend(_line_of(line) for line in msg.lines)

    def result(self) -> ClusterSnapshot:
        """The snapshot decoded (everything fed must have been decoded)."""
        if self._pending:
            raise WireError(f"ClusterSnapshot ends inside a field ({len(self._pending)} bytes)")
        # Tuples made as the entries came: no list of them all beside the tuples.
        entries: Sequence[SnapshotEntry] = (
            ()
            if self._sink
            else PackedEntries(self._names.build(), self._values.build(), self._expiries)
        )
        return ClusterSnapshot(
            entries,
            self._last_seq,
            self._last_term,
            self._membership,
            tuple(self._sessions),
            tuple(self._lines),
        )


def _reuse_sorted(names: list[str], known: Iterator[str], at: str | None) -> str | None:
    """Replace each of `names` found in `known` (both ascending; `at` the first of `known` not
    yet passed, the rest to come from the iterator) by the object in `known`; the first of
    `known` not passed now (None: `known` is exhausted)."""
    for i, name in enumerate(names):
        while at is not None and at < name:
            at = next(known, None)
        if at is None:
            break
        if at == name:
            names[i] = at
    return at


def _plain_entries(data: bytes, offset: int) -> tuple[list[str], list[bytes], int]:
    """The entries from `offset` on that have exactly the form `0A len (0A klen name) (12 vlen
    value)` — a name below 128 bytes, a value of 1 to 16383 bytes, no expiry, nothing else — read
    straight from the bytes (what a protobuf parse gives for them, without a message object per
    entry); their names, values, and the offset of the first field that is not one of them."""
    names: list[str] = []
    values: list[bytes] = []
    add_name, add_value = names.append, values.append
    size = len(data)
    while offset + 8 <= size and data[offset] == 0x0A:
        length, at = data[offset + 1], offset + 2
        if length >= 0x80:
            if data[at] >= 0x80:
                break
            length, at = (length & 0x7F) | data[at] << 7, at + 1
        end = at + length
        if length < 5 or end > size or data[at] != 0x0A:
            break
        name_end = at + 2 + data[at + 1]  # a name length >= 0x80 fails the checks below
        if name_end + 2 > end or data[name_end] != 0x12:
            break
        value_length, value_at = data[name_end + 1], name_end + 2
        if value_length >= 0x80:
            if value_at >= end or data[value_at] >= 0x80:
                break
            value_length, value_at = (value_length & 0x7F) | data[value_at] << 7, value_at + 1
        if value_at + value_length != end or value_length == 0 or data[at + 1] >= 0x80:
            break
        try:
            add_name(data[at + 2 : name_end].decode())
        except UnicodeDecodeError:
            break  # the protobuf parse of this field says what is wrong
        add_value(data[value_at:end])
        offset = end
    return names, values, offset


def _slice_end(data: bytes, offset: int, fields: int, *, partial: bool) -> int | None:
    """The offset after up to `fields` whole protobuf fields from `offset`; None if the bytes do
    not scan as fields. `partial`: `data` may end inside a field, which then ends the slice."""
    size = len(data)
    for _ in range(fields):
        if offset >= size:
            break
        end = _field_end(data, offset)
        if end is None:
            return None
        if end < 0 or end > size:
            return offset if partial else None
        offset = end
    return offset


def _field_end(data: bytes, offset: int) -> int | None:
    """Where the field at `offset` ends (-1, or past the end, if `data` ends inside it); None
    for a wire type a message cannot hold."""
    if data[offset] == 0x0A and offset + 1 < len(data) and data[offset + 1] < 0x80:
        return offset + 2 + data[offset + 1]  # the common case: a short entry (field 1, length)
    key, offset = _varint(data, offset)
    if offset < 0:
        return -1
    wire_type = key & 7
    if wire_type == 0:
        return _varint(data, offset)[1]
    if wire_type == 2:
        length, offset = _varint(data, offset)
        return -1 if offset < 0 else offset + length
    if wire_type == 1:
        return offset + 8
    if wire_type == 5:
        return offset + 4
    return None


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    """The varint at `offset` and the offset after it; (0, -1) if it runs past the end."""
    value, shift, size = 0, 0, len(data)
    while offset < size and shift < 64:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7
    return 0, -1


def _entries_of(msg: Any) -> list[SnapshotEntry]:
    return [
        SnapshotEntry(
            str(kv.key),
            bytes(kv.value),
            int(kv.expireAt) if kv.HasField("expireAt") else None,
        )
        for kv in msg.entries
    ]


def snapshot_of(msg: Any) -> ClusterSnapshot:
    """A parsed (and checked) `ClusterSnapshot` message as ours, entries in their order."""
    membership = membership_of(msg.membership) if msg.HasField("membership") else None
    sessions = tuple(_session_of(s) for s in msg.sessions)
    lines = tuple(_line_of(line) for line in msg.lines)
    return ClusterSnapshot(
        tuple(_entries_of(msg)), int(msg.last_seq), int(msg.last_term), membership, sessions, lines
    )


def fill_membership(target: Any, membership: Membership) -> None:
    """Write `membership` into a `Membership` protobuf message."""
    target.voters.extend(membership.voters)
    target.learners.extend(membership.learners)
    for node_id, address in membership.addresses:
        target.addresses.add(node_id=node_id, address=address)
    target.SetInParent()


def membership_of(msg: Any) -> Membership:
    """A parsed `Membership` protobuf message as ours (voters and learners sorted)."""
    return Membership(
        tuple(sorted(str(v) for v in msg.voters)),
        tuple(sorted(str(v) for v in msg.learners)),
        tuple(sorted((str(a.node_id), str(a.address)) for a in msg.addresses)),
    )


def encode_membership(membership: Membership) -> bytes:
    """`Membership` protobuf bytes."""
    msg: Any = dref_membership_pb2.Membership()
    fill_membership(msg, membership)
    return bytes(msg.SerializeToString())


def _session_state(sid: bytes, state: SessionState) -> Any:
    out: Any = dref_session_pb2.SessionState(
        session=sid, last_seen=state.last_seen, first_incomplete=state.first_incomplete
    )
    for request, result in state.results.items():
        r: Any = out.results.add(request=request, stale=result.stale, ahead=result.ahead)
        if result.created is not None:
            r.created = result.created
        if result.current is not None:
            r.current = result.current
    return out


def _session_of(msg: Any) -> tuple[bytes, SessionState]:
    results = {
        int(r.request): RecordedResult(
            bool(r.created) if r.HasField("created") else None,
            bytes(r.current) if r.HasField("current") else None,
            bool(r.stale),
            int(r.ahead),
        )
        for r in msg.results
    }
    return bytes(msg.session), SessionState(int(msg.last_seen), int(msg.first_incomplete), results)


def _line_msg(name: str, line: LineState) -> Any:
    out: Any = dref_fair_pb2.FairLine(name=name)
    for ticket, alive_until in line:
        out.waiters.add(ticket=ticket, alive_until=alive_until)
    return out


def _line_of(msg: Any) -> tuple[str, LineState]:
    return str(msg.name), tuple((bytes(w.ticket), int(w.alive_until)) for w in msg.waiters)


def _fill_set(target: Any, name: str, value: bytes, expire_at: int | None) -> None:
    target.name = name
    target.value = value
    if expire_at is not None:
        target.expire_at = expire_at


def _read_set(source: Any) -> tuple[str, bytes, int | None]:
    expire_at = int(source.expire_at) if source.HasField("expire_at") else None
    return str(source.name), bytes(source.value), expire_at


def _parse(msg: Any, data: bytes | memoryview, what: str) -> Any:
    try:
        msg.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise WireError(f"not a valid {what}: {exc}") from exc
    misplaced = misplaced_field(msg)
    if misplaced is not None:
        raise WireError(f"not a valid {what}: {misplaced}")
    return msg


def misplaced_field(msg: Any) -> str | None:
    """What is wrong if a declared field of the parsed `msg` (or of a message inside it)
    arrived with a wire type its type does not use; None if none did. Protobuf keeps such a
    field as an unknown one and reads the field as absent, which would silently turn e.g. a
    misplaced snapshot into an empty one; upstream's Rust decoder (prost) rejects it."""
    return _misplaced_field(msg, "") if _has_unknown_fields(msg) else None


@functools.cache
def _flat(descriptor: Any) -> bool:
    """Whether messages of `descriptor` hold no message-typed field (cached per type)."""
    return all(fd.message_type is None for fd in descriptor.fields)


@functools.cache
def _shallow(descriptor: Any) -> bool:
    """Whether every message-typed field of `descriptor` is singular and of a flat type (a
    `SnapshotChunk` and its header): cached per type."""
    return all(
        fd.message_type is None or (not _repeated(fd) and _flat(fd.message_type))
        for fd in descriptor.fields
    )


def _has_unknown_fields(msg: Any) -> bool:
    """Whether `msg` or a message inside it kept unknown fields (a cheap test, in C)."""
    if _flat(msg.DESCRIPTOR):
        return len(UnknownFieldSet(msg)) > 0  # no message inside: only its own to look at
    if _shallow(msg.DESCRIPTOR):  # each message inside looked at, not a copy of the whole
        return len(UnknownFieldSet(msg)) > 0 or any(
            len(UnknownFieldSet(value)) > 0
            for fd, value in msg.ListFields()
            if fd.message_type is not None
        )
    bare = type(msg)()
    bare.CopyFrom(msg)
    bare.DiscardUnknownFields()
    return bool(bare.ByteSize() != msg.ByteSize())


def _misplaced_field(msg: Any, path: str) -> str | None:
    """The first declared field of `msg` or of a message inside it that arrived with a wire
    type its type does not use (protobuf keeps such a field as an unknown one); None if none."""
    declared = msg.DESCRIPTOR.fields_by_number
    unknowns = UnknownFieldSet(msg)
    for unknown in (unknowns[i] for i in range(len(unknowns))):
        fd = declared.get(unknown.field_number)
        if fd is not None:
            return (
                f"field {path}{fd.name} (number {fd.number}) has wire type {unknown.wire_type}, "
                "which its type does not use"
            )
    for fd, value in msg.ListFields():
        if fd.message_type is None:
            continue
        items = enumerate(value) if _repeated(fd) else [(None, value)]
        for index, item in items:
            at = fd.name if index is None else f"{fd.name}[{index}]"
            found = _misplaced_field(item, f"{path}{at}.")
            if found is not None:
                return found
    return None


def _repeated(fd: Any) -> bool:
    is_repeated = getattr(fd, "is_repeated", None)  # protobuf ≥ 6; `label` before
    return bool(is_repeated) if is_repeated is not None else fd.label == fd.LABEL_REPEATED
