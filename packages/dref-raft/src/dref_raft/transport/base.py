"""The transport's interfaces: what the node implements (handlers) and what it calls (clients).

The gRPC server (`grpc_server.GrpcServer`) and the in-memory network (`memory.MemoryNetwork`)
both serve these handlers; `grpc_client` and `memory` both provide the client side with the
same methods, so the node is written once against these protocols.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from dref.errors import UnsupportedOperationError
from dref_raft.commands import Command, CompareResult, MemberStatus, NamesPage, WatchEvent
from dref_raft.core.messages import Request, Response
from dref_raft.reads import LEADER_READ, ReadRequest

__all__ = [
    "DEFAULT_PORT",
    "ClientHandler",
    "CompareHandler",
    "ConsensusHandler",
    "InfoHandler",
    "InstantReads",
    "LeaderApi",
    "PeerTransport",
    "WatchApi",
    "WatchHandler",
    "aclose_iterator",
    "read_index_of",
]

DEFAULT_PORT = 8082
"""Upstream's default gRPC port (docs/protocol.md#discovery)."""


def read_index_of(address: str, applied_seq: int) -> int:
    """The read index a leader answered (`applied_seq` of a `read_index` `GetElement`);
    `UnsupportedOperationError` when it sent none (an upstream leader)."""
    if applied_seq <= 0:
        raise UnsupportedOperationError(
            f"raft member at {address} answered no read index (an upstream leader?): "
            "follower reads need dref members; set mixed_cluster = true for mixed clusters"
        )
    return applied_seq


async def aclose_iterator(iterator: AsyncIterator[object]) -> None:
    """Close an async iterator that has `aclose` (async generators do)."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


class ConsensusHandler(Protocol):
    """Serves `DRefConsensus`: one core request in, its response out."""

    async def handle(self, request: Request) -> Response:
        """Answer `request` (whose `to` is this node's id); the response type must match."""
        ...


class ClientHandler(Protocol):
    """Serves `DRefRaft` (the leader-facing data operations).

    Errors map to upstream's statuses (docs/protocol.md#wire-served): `NotLeaderError`,
    `NoLeaderError`,
    `QuorumLostError`, `CodecError`, other `BackendError` (see `status.py`).
    """

    async def set_element(self, name: str, value: bytes, expire_at: int | None) -> None: ...

    async def set_element_if_not_exist(
        self, name: str, value: bytes, expire_at: int | None
    ) -> bool: ...

    async def get_element(self, name: str, read: ReadRequest = LEADER_READ) -> bytes | None:
        """`GetElement`; `read` asks for one of dref's read kinds (`dref_raft.reads`)."""
        ...

    async def read_index(self) -> int:
        """dref-only, leader: a seq at least the read index, every entry through it applied
        here, after a ReadIndex round (docs/raft-wire.md#follower-reads)."""
        ...

    async def delete_element(self, name: str) -> None: ...

    async def expire_element(self, name: str, expire_at: int) -> None: ...

    def endpoint_ids(self) -> list[str]:
        """`GetEndpoints`: the member ids, this node's own id last."""
        ...

    def applied_seq(self) -> int:
        """Every entry through this seq is applied here (sent back in the data responses'
        `applied_seq` extension field, read after the operation; 0: not known)."""
        ...


@runtime_checkable
class InstantReads(Protocol):
    """A `ClientHandler` that answers some reads at once, without a task or a wait: over
    `DRefStream` such a read costs the member no task of its own (`grpc_stream.serve_session`)."""

    def read_now(self, name: str, read: ReadRequest) -> tuple[bool, bytes | None]:
        """(True, the value) when `get_element(name, read)` would return it without waiting
        (a session read of a seq applied here); else (False, None): `get_element` serves it.
        May raise what `get_element` would (the caller then serves it with `get_element`)."""
        ...


class CompareHandler(Protocol):
    """Serves `DRefExt/Compare` (dref-only): commit a compare command on the leader.

    Errors map like `ClientHandler`'s (`NotLeaderError`, `NoLeaderError`, ...).
    """

    async def compare(self, command: Command) -> CompareResult:
        """Propose `command` (a compare command; the leader stamps `now`) and await it."""
        ...

    async def wait_turn(
        self, name: str, ticket: bytes, timeout: float
    ) -> tuple[bool, bytes | None]:
        """`DRefFair/WaitTurn`: wait up to `timeout` s until `ticket` heads `name`'s line in
        this member's applied state: `(True, value)`, else `(False, None)`."""
        ...


class InfoHandler(Protocol):
    """Serves `DRefExt/Names` and `DRefExt/Status` (dref-only tools: `dref ls`, `dref status`)."""

    async def names(self, prefix: str, after: str, limit: int) -> NamesPage:
        """Live names starting with `prefix`, sorting after `after`, at most `limit` (0: the
        member's page size); on the leader after a read barrier (else `NotLeaderError`)."""
        ...

    def status(self) -> MemberStatus:
        """This member's own view of its Raft state."""
        ...


class WatchHandler(Protocol):
    """Serves `DRefWatch`: committed changes of `names` (all when empty) after `from_seq`."""

    def watch(self, names: list[str], from_seq: int) -> AsyncIterator[WatchEvent]: ...


class PeerTransport(Protocol):
    """Node-to-node consensus calls (`grpc_client.PeerClients`, `memory.MemoryPeerClients`)."""

    async def call(self, address: str, request: Request, timeout: float) -> Response:
        """Send `request` to `address`; raise `TransportError` if no answer comes in time."""
        ...

    async def aclose(self) -> None: ...


class LeaderApi(Protocol):
    """`DRefRaft` calls to one member (`grpc_client.LeaderClient`, `memory.MemoryLeaderClient`).

    `applied_seq` is the highest `applied_seq` any answer carried (0: none yet, or an
    upstream member, which does not send it): every entry through it was applied on the
    member when it answered, so a follower that waits for it has the answered writes applied.
    """

    applied_seq: int
    last_applied_seq: int
    """The `applied_seq` of the last answer (read right after a call returns: that call's)."""

    async def set_element(
        self, name: str, value: bytes, expire_at: int | None = None, *, timeout: float | None = None
    ) -> None: ...

    async def set_element_if_not_exist(
        self, name: str, value: bytes, expire_at: int | None = None, *, timeout: float | None = None
    ) -> bool: ...

    async def get_element(
        self, name: str, *, timeout: float | None = None, read: ReadRequest = LEADER_READ
    ) -> bytes | None:
        """`GetElement`; `read`: one of dref's read kinds (dref members only)."""
        ...

    async def read_index(self, *, timeout: float | None = None) -> int:
        """The leader's read index (`GetElement` with `read_index`; dref leaders only)."""
        ...

    async def delete_element(self, name: str, *, timeout: float | None = None) -> None: ...

    async def expire_element(
        self, name: str, expire_at: int, *, timeout: float | None = None
    ) -> None: ...

    async def get_endpoints(self, *, timeout: float | None = None) -> list[str]: ...

    async def compare(self, command: Command, *, timeout: float | None = None) -> CompareResult:
        """`DRefExt/Compare` (dref nodes only; `CompareUnsupportedError` from upstream)."""
        ...

    async def wait_turn(
        self, name: str, ticket: bytes, wait: float, *, timeout: float | None = None
    ) -> tuple[bool, bytes | None]:
        """`DRefFair/WaitTurn`: the member answers within `wait` s (dref nodes only;
        `UnsupportedOperationError` from upstream)."""
        ...

    async def names(
        self, prefix: str, after: str = "", limit: int = 0, *, timeout: float | None = None
    ) -> NamesPage:
        """`DRefExt/Names` (dref nodes only; `UnsupportedOperationError` from upstream)."""
        ...

    async def status(self, *, timeout: float | None = None) -> MemberStatus:
        """`DRefExt/Status` (dref nodes only; `UnsupportedOperationError` from upstream)."""
        ...

    async def aclose(self) -> None: ...


class WatchApi(Protocol):
    """`DRefWatch` calls to one member (`grpc_client.WatchClient`, `memory.MemoryWatchClient`)."""

    def watch(self, names: list[str], from_seq: int) -> AsyncIterator[WatchEvent]: ...

    async def aclose(self) -> None: ...
