"""`DRefFair` messages (dref_fair.proto, docs/raft-wire.md#fair-updates): the long poll with
which a client waits for its turn in an element's line of contended writers."""

from __future__ import annotations

from typing import Any, Final

from dref_raft._pb import dref_fair_pb2
from dref_raft.errors import WireError
from dref_raft.wire.messages import DEFAULT_MAX_MESSAGE_BYTES, PACKAGE, parse

__all__ = [
    "FAIR_SERVICE",
    "WAIT_TURN_METHOD",
    "decode_wait_turn_request",
    "decode_wait_turn_response",
    "encode_wait_turn_request",
    "encode_wait_turn_response",
]

FAIR_SERVICE: Final = f"{PACKAGE}.DRefFair"
WAIT_TURN_METHOD: Final = "WaitTurn"


def encode_wait_turn_request(name: str, ticket: bytes, timeout_ms: int) -> bytes:
    """Encode a `WaitTurnRequest`."""
    try:
        msg: Any = dref_fair_pb2.WaitTurnRequest(name=name, ticket=ticket, timeout_ms=timeout_ms)
        return bytes(msg.SerializeToString())
    except (ValueError, TypeError) as exc:
        raise WireError(f"cannot encode WaitTurnRequest: {exc}") from exc


def decode_wait_turn_request(
    data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> tuple[str, bytes, int]:
    """Decode a `WaitTurnRequest` into (name, ticket, timeout_ms)."""
    msg = parse(dref_fair_pb2.WaitTurnRequest, data, "WaitTurnRequest", max_bytes)
    return str(msg.name), bytes(msg.ticket), int(msg.timeout_ms)


def encode_wait_turn_response(turn: bool, value: bytes | None) -> bytes:
    """Encode a `WaitTurnResponse` (`value` only with `turn`; None: the element is absent)."""
    msg: Any = dref_fair_pb2.WaitTurnResponse(turn=turn)
    if turn and value is not None:
        msg.value = value
    return bytes(msg.SerializeToString())


def decode_wait_turn_response(
    data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> tuple[bool, bytes | None]:
    """Decode a `WaitTurnResponse` into (turn, value)."""
    msg = parse(dref_fair_pb2.WaitTurnResponse, data, "WaitTurnResponse", max_bytes)
    return bool(msg.turn), bytes(msg.value) if msg.HasField("value") else None
