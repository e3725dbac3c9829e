"""Our dataclasses ⇄ upstream's protobuf bytes, byte for byte (spec §3).

This is the edge: the generated `_pb` types are used here (and in storage/transport) and
never handed out. `StateCommand` is the replicated log entry; `ClusterSnapshot` is the
payload of snapshot files and of InstallSnapshot.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError, EncodeError

from dref.errors import DRefError
from dref_raft._pb import dref_consensus_pb2, raft_pb2, state_command_pb2
from dref_raft.commands import (
    Command,
    CompareAndDelete,
    CompareAndExpire,
    CompareAndSet,
    DeleteElement,
    DeleteIfExpired,
    ExpireElement,
    NoOp,
    SetElement,
    SetIfNotExist,
    StartNewTerm,
)
from dref_raft.fsm import ClusterSnapshot, SnapshotEntry

__all__ = [
    "COMPARE_AND_DELETE_FIELD",
    "COMPARE_AND_EXPIRE_FIELD",
    "COMPARE_AND_SET_FIELD",
    "EXT_TERM_FIELD",
    "WireFormatError",
    "decode_command",
    "decode_command_term",
    "decode_snapshot",
    "encode_command",
    "encode_snapshot",
]


class WireFormatError(DRefError, ValueError):
    """Bytes are not a valid protobuf message of the expected type."""


#: dref extensions (upstream parsers skip unknown fields): `StateCommand` oneof members for
#: the compare commands (their `uint64 now = 1000`, the leader's clock, is hand-encoded) ...
COMPARE_AND_SET_FIELD = 1001
COMPARE_AND_DELETE_FIELD = 1002
COMPARE_AND_EXPIRE_FIELD = 1003
#: ... and `uint64 term = 1000` in `StartNewTermCommand` (the term of the leader that
#: proposed it, so stored entries' terms can be rebuilt) and `uint64 last_term = 1000` in
#: `ClusterSnapshot` (the term of the entry at `last_seq`).
EXT_TERM_FIELD = 1000


def encode_command(command: Command, *, term: int | None = None) -> bytes:
    """Encode a command as upstream `StateCommand` bytes.

    `term` (only for `StartNewTerm`) is stored in the extension field 1000 of
    `StartNewTermCommand`; upstream nodes ignore it.
    """
    match command:
        case CompareAndSet(name, expected, value, expire_at, now):
            cas: Any = state_command_pb2.StateCommand()
            cas.compare_and_set.name = name
            if expected is not None:
                cas.compare_and_set.expected = expected
            cas.compare_and_set.value = value
            if expire_at is not None:
                cas.compare_and_set.expire_at = expire_at
            return _with_now(cas, COMPARE_AND_SET_FIELD, "compare_and_set", now)
        case CompareAndDelete(name, expected, now):
            cad: Any = state_command_pb2.StateCommand()
            cad.compare_and_delete.name = name
            cad.compare_and_delete.expected = expected
            return _with_now(cad, COMPARE_AND_DELETE_FIELD, "compare_and_delete", now)
        case CompareAndExpire(name, expected, expire_at, now):
            cae: Any = state_command_pb2.StateCommand()
            cae.compare_and_expire.name = name
            cae.compare_and_expire.expected = expected
            cae.compare_and_expire.expire_at = expire_at
            return _with_now(cae, COMPARE_AND_EXPIRE_FIELD, "compare_and_expire", now)
        case StartNewTerm() if term:
            return _pb_bytes(6, _pb_uint(EXT_TERM_FIELD, term))
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
        term = _fields(bytes(msg.start_new_term.SerializeToString())).get(EXT_TERM_FIELD)
        return StartNewTerm(), (int(term) if isinstance(term, int) and term > 0 else None)
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
    """The dref compare commands; `now` is their extension field 1000."""
    if op == "compare_and_set":
        c = msg.compare_and_set
        return CompareAndSet(
            str(c.name),
            bytes(c.expected) if c.HasField("expected") else None,
            bytes(c.value),
            int(c.expire_at) if c.HasField("expire_at") else None,
            _now_of(c),
        )
    if op == "compare_and_delete":
        c = msg.compare_and_delete
        return CompareAndDelete(str(c.name), bytes(c.expected), _now_of(c))
    if op == "compare_and_expire":
        c = msg.compare_and_expire
        return CompareAndExpire(str(c.name), bytes(c.expected), int(c.expire_at), _now_of(c))
    return None


def _now_of(sub: Any) -> int:
    value = _fields(bytes(sub.SerializeToString())).get(EXT_TERM_FIELD)
    return value if isinstance(value, int) else 0


def _with_now(msg: Any, field: int, op: str, now: int) -> bytes:
    """Serialize `msg` whose oneof `op` (number `field`) gets the extension `now = 1000`."""
    if not now:
        return bytes(msg.SerializeToString())
    body = bytes(getattr(msg, op).SerializeToString()) + _pb_uint(EXT_TERM_FIELD, now)
    return _pb_bytes(field, body)


def encode_snapshot(snapshot: ClusterSnapshot) -> bytes:
    """Encode upstream `ClusterSnapshot` bytes, entries in the given order."""
    msg: Any = dref_consensus_pb2.ClusterSnapshot(last_seq=snapshot.last_seq)
    try:
        for entry in snapshot.entries:
            kv: Any = raft_pb2.KVEntry(key=entry.key, value=entry.value)
            if entry.expire_at is not None:
                kv.expireAt = entry.expire_at
            msg.entries.append(kv)
        data = bytes(msg.SerializeToString())
    except (ValueError, TypeError, EncodeError) as exc:
        raise ValueError(f"cannot encode snapshot: {exc}") from exc
    if snapshot.last_term:
        data += _pb_uint(EXT_TERM_FIELD, snapshot.last_term)
    return data


def decode_snapshot(data: bytes) -> ClusterSnapshot:
    """Decode upstream `ClusterSnapshot` bytes (entries keep their encoded order)."""
    msg: Any = _parse(dref_consensus_pb2.ClusterSnapshot(), data, "ClusterSnapshot")
    entries = tuple(
        SnapshotEntry(
            str(kv.key),
            bytes(kv.value),
            int(kv.expireAt) if kv.HasField("expireAt") else None,
        )
        for kv in msg.entries
    )
    term = _fields(data).get(EXT_TERM_FIELD)
    return ClusterSnapshot(entries, int(msg.last_seq), term if isinstance(term, int) else 0)


def _fill_set(target: Any, name: str, value: bytes, expire_at: int | None) -> None:
    target.name = name
    target.value = value
    if expire_at is not None:
        target.expire_at = expire_at


def _read_set(source: Any) -> tuple[str, bytes, int | None]:
    expire_at = int(source.expire_at) if source.HasField("expire_at") else None
    return str(source.name), bytes(source.value), expire_at


def _parse(msg: Any, data: bytes, what: str) -> Any:
    try:
        msg.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise WireFormatError(f"not a valid {what}: {exc}") from exc
    return msg


# -- minimal protobuf wire helpers for the extension fields ------------------------------------


def _varint(value: int) -> bytes:
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"{value} is not a uint64")
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _pb_uint(field: int, value: int, *, always: bool = False) -> bytes:
    if value == 0 and not always:
        return b""
    return _varint(field << 3) + _varint(value)


def _pb_bytes(field: int, value: bytes) -> bytes:
    return _varint((field << 3) | 2) + _varint(len(value)) + value


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireFormatError("not a valid protobuf message: truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> dict[int, int | bytes]:
    """Top-level fields of a protobuf message (the last occurrence wins)."""
    out: dict[int, int | bytes] = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field, kind = key >> 3, key & 7
        value: int | bytes
        if kind == 0:
            value, pos = _read_varint(data, pos)
        elif kind == 2:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise WireFormatError("not a valid protobuf message: truncated field")
            value, pos = data[pos : pos + length], pos + length
        elif kind == 1:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif kind == 5:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise WireFormatError(f"not a valid protobuf message: wire type {kind}")
        if pos > len(data):
            raise WireFormatError("not a valid protobuf message: truncated field")
        out[field] = value
    return out


def _str(value: int | bytes | None) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else ""


def _bytes(value: int | bytes | None) -> bytes:
    return value if isinstance(value, bytes) else b""


def _int(value: int | bytes | None) -> int:
    return value if isinstance(value, int) else 0
