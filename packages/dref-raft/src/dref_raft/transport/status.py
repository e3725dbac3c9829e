"""dref errors ⇄ upstream's `DRefRaft` gRPC statuses (docs/protocol.md#wire-served), both
directions.

| error                         | code                  | description                 |
|-------------------------------|-----------------------|-----------------------------|
| `NotLeaderError(id)`          | `FAILED_PRECONDITION` | `not-leader:<id>` / `not-leader:unknown` |
| `NoLeaderError`               | `FAILED_PRECONDITION` | `no-leader:unknown`         |
| `QuorumLostError`             | `UNAVAILABLE`         | `quorum-lost`               |
| `CodecError(m)`               | `INTERNAL`            | `serialize: <m>`            |
| `LimitExceededError(m)`       | `INVALID_ARGUMENT`    | `limit: <m>`                |
| other `BackendError(m)`       | `UNAVAILABLE`         | `<m>`                       |
| anything else                 | `INTERNAL`            | `internal: <type>: <m>`     |

Client side, as upstream's clients read them: prefix `not-leader:` → `NotLeaderError` (hint
unless empty or `unknown`); prefix `no-leader:` → `NoLeaderError`; `UNAVAILABLE` +
`quorum-lost` → `QuorumLostError`; other `UNAVAILABLE`, `DEADLINE_EXCEEDED` (and `CANCELLED`,
a server going away) → `TransportError`; `INTERNAL` + `serialize: ` → `CodecError`; anything
else → a fatal `BackendError`. dref additions (docs/security.md): `UNAUTHENTICATED` and
`PERMISSION_DENIED` → `AccessDeniedError`; `RESOURCE_EXHAUSTED` (gRPC's message size limit) and
`INVALID_ARGUMENT` + `limit: ` → `LimitExceededError`; all fatal (not retried).
"""

from __future__ import annotations

from typing import Final

import grpc

from dref.errors import (
    BackendError,
    ClosedError,
    CodecError,
    DRefError,
    NoLeaderError,
    NotLeaderError,
    QuorumLostError,
)
from dref_raft.errors import (
    AccessDeniedError,
    CompareUnsupportedError,
    LimitExceededError,
    TransportError,
)

__all__ = ["error_of", "status_of"]

NOT_LEADER: Final = "not-leader:"
NO_LEADER: Final = "no-leader:"
QUORUM_LOST: Final = "quorum-lost"
SERIALIZE: Final = "serialize: "
LIMIT: Final = "limit: "
UNKNOWN_ID: Final = "unknown"

_TRANSPORT_CODES: Final = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status a `DRefRaft` server answers for `exc` (docs/protocol.md#wire-served)."""
    match exc:
        case NotLeaderError():
            return grpc.StatusCode.FAILED_PRECONDITION, NOT_LEADER + (exc.leader_id or UNKNOWN_ID)
        case NoLeaderError():
            return grpc.StatusCode.FAILED_PRECONDITION, NO_LEADER + UNKNOWN_ID
        case QuorumLostError():
            return grpc.StatusCode.UNAVAILABLE, QUORUM_LOST
        case ClosedError():  # shutting down: the caller retries another member
            return grpc.StatusCode.UNAVAILABLE, f"closed: {exc}"
        case CodecError():
            return grpc.StatusCode.INTERNAL, SERIALIZE + str(exc)
        case LimitExceededError():
            return grpc.StatusCode.INVALID_ARGUMENT, LIMIT + str(exc)
        case CompareUnsupportedError():  # a leader with an upstream voter refuses DRefExt
            return grpc.StatusCode.UNIMPLEMENTED, str(exc)
        case BackendError():
            return grpc.StatusCode.UNAVAILABLE, str(exc) or type(exc).__name__
        case _:
            return grpc.StatusCode.INTERNAL, f"internal: {type(exc).__name__}: {exc}"


def error_of(code: grpc.StatusCode, details: str | None, address: str) -> DRefError:
    """The dref error for a failed `DRefRaft` call to `address` (upstream's interpretation)."""
    text = details or ""
    if text.startswith(NOT_LEADER):
        hint = text.removeprefix(NOT_LEADER)
        return NotLeaderError(None if hint in ("", UNKNOWN_ID) else hint)
    if text.startswith(NO_LEADER):
        return NoLeaderError()
    if code == grpc.StatusCode.UNAVAILABLE and text == QUORUM_LOST:
        return QuorumLostError(QUORUM_LOST)
    if code in _TRANSPORT_CODES:
        return TransportError(f"{address}: {code.name}: {text}")
    if code == grpc.StatusCode.INTERNAL and text.startswith(SERIALIZE):
        return CodecError(text.removeprefix(SERIALIZE))
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return AccessDeniedError(f"{address}: the member refused the call: {text}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return LimitExceededError(f"{address}: {code.name}: {text} (see max_message_bytes)")
    if code == grpc.StatusCode.INVALID_ARGUMENT and text.startswith(LIMIT):
        return LimitExceededError(f"{address}: {text.removeprefix(LIMIT)}")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return CompareUnsupportedError(f"{address}: {text}")
    return BackendError(f"{address}: {code.name}: {text}")
