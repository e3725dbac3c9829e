"""The dref-only `DRefMembership` gRPC service (docs/raft-wire.md#membership): the handlers a
`GrpcServer` registers for it, and `MembershipClient`, which calls it on one member.

Statuses are `DRefRaft`'s (`status.py`: a follower answers not-leader, so callers route to
the leader), plus a refused change: `FAILED_PRECONDITION` with `membership: <why>` →
`MembershipError`. A member that does not serve the service (upstream, or an older dref node)
answers `UNIMPLEMENTED` → `UnsupportedOperationError`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import grpc

from dref.errors import ClosedError, DRefError, UnsupportedOperationError
from dref.resources import AsyncResource
from dref_raft.commands import MembersView
from dref_raft.errors import MembershipError, TransportError, WireError
from dref_raft.transport.grpc_client import DEFAULT_TIMEOUT, _Channels
from dref_raft.transport.security import PLAINTEXT, TransportSecurity
from dref_raft.transport.status import error_of, status_of
from dref_raft.wire import membership as wire
from dref_raft.wire.messages import method_path

__all__ = ["MembershipClient", "MembershipHandler", "membership_handlers"]

logger = logging.getLogger("dref_raft.transport")

REFUSED: Final = "membership: "
_REBUILD_CODES: Final = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class MembershipHandler(Protocol):
    """What a member answers on `DRefMembership` (errors map to statuses as above)."""

    async def add_member(self, node_id: str, address: str) -> MembersView:
        """Add `node_id` at `address` as a learner (it is promoted once caught up)."""
        ...

    async def remove_member(self, node_id: str) -> MembersView:
        """Remove a voter or learner."""
        ...

    async def list_members(self) -> MembersView:
        """The configuration in force (leader only)."""
        ...

    async def transfer_leadership(self, node_id: str) -> str:
        """Hand leadership to `node_id` ("": any up-to-date voter); the new leader."""
        ...


def membership_handlers(handler: MembershipHandler, node_id: str, max_message_bytes: int) -> Any:
    """The generic gRPC handler of the `DRefMembership` service over `handler`."""

    def unary(method: str, fn: Callable[[bytes], Awaitable[bytes]]) -> Any:
        async def call(data: bytes, context: Any) -> bytes:
            try:
                return await fn(data)
            except WireError as exc:
                logger.warning(
                    "rejected an undecodable DRefMembership/%s request from %s: %s",
                    method,
                    context.peer(),
                    exc,
                )
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"undecodable request: {exc}")
            except MembershipError as exc:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, REFUSED + str(exc))
            except Exception as exc:
                code, details = status_of(exc)
                if code == grpc.StatusCode.INTERNAL or isinstance(exc, ClosedError):
                    logger.warning("node %s: DRefMembership/%s failed: %s", node_id, method, exc)
                await context.abort(code, details)
            raise AssertionError("unreachable")  # abort raises

        return grpc.unary_unary_rpc_method_handler(call)

    async def add(data: bytes) -> bytes:
        member, address = wire.decode_add_request(data, max_message_bytes)
        return wire.encode_members(await handler.add_member(member, address))

    async def remove(data: bytes) -> bytes:
        member = wire.decode_remove_request(data, max_message_bytes)
        return wire.encode_members(await handler.remove_member(member))

    async def list_(data: bytes) -> bytes:
        return wire.encode_members(await handler.list_members())

    async def transfer(data: bytes) -> bytes:
        target = wire.decode_transfer_request(data, max_message_bytes)
        return wire.encode_transfer_response(await handler.transfer_leadership(target))

    return grpc.method_handlers_generic_handler(
        wire.MEMBERSHIP_SERVICE,
        {
            wire.ADD_METHOD: unary(wire.ADD_METHOD, add),
            wire.REMOVE_METHOD: unary(wire.REMOVE_METHOD, remove),
            wire.LIST_METHOD: unary(wire.LIST_METHOD, list_),
            wire.TRANSFER_METHOD: unary(wire.TRANSFER_METHOD, transfer),
        },
    )


class MembershipClient(AsyncResource):
    """`DRefMembership` calls to the member at `address` (normally the leader), secured per
    `security` (with TLS the service is member-to-member traffic: it needs a certificate
    signed by the cluster CA, docs/security.md)."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        security: TransportSecurity = PLAINTEXT,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._channels = _Channels(security)
        self._max = security.max_message_bytes

    async def _call(self, method: str, data: bytes, timeout: float | None) -> bytes:
        wait = self.timeout if timeout is None else timeout
        channel = self._channels.get(self.address)
        rpc = channel.unary_unary(method_path(wire.MEMBERSHIP_SERVICE, method))
        try:
            answer: bytes = await rpc(data, timeout=wait)
        except grpc.aio.AioRpcError as exc:
            raise self._error(method, exc, channel, wait) from exc
        return answer

    def _error(self, method: str, exc: Any, channel: Any, wait: float) -> DRefError:
        code, details = exc.code(), exc.details() or ""
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return UnsupportedOperationError(
                f"raft member at {self.address} does not serve DRefMembership/{method} "
                "(an upstream node, or a dref node older than this method)"
            )
        if code == grpc.StatusCode.FAILED_PRECONDITION and details.startswith(REFUSED):
            return MembershipError(details.removeprefix(REFUSED))
        if code in _REBUILD_CODES:
            self._channels.drop(self.address, channel, wait)
        return error_of(code, details, self.address)

    def _members(self, method: str, answer: bytes) -> MembersView:
        try:
            return wire.decode_members(answer, self._max)
        except WireError as exc:
            raise TransportError(f"{self.address}: {method}: undecodable response: {exc}") from exc

    async def add_member(
        self, node_id: str, address: str, *, timeout: float | None = None
    ) -> MembersView:
        """`AddMember`: `node_id` joins as a learner; the configuration once committed."""
        data = wire.encode_add_request(node_id, address)
        return self._members(wire.ADD_METHOD, await self._call(wire.ADD_METHOD, data, timeout))

    async def remove_member(self, node_id: str, *, timeout: float | None = None) -> MembersView:
        """`RemoveMember`; the configuration once committed."""
        data = wire.encode_remove_request(node_id)
        method = wire.REMOVE_METHOD
        return self._members(method, await self._call(method, data, timeout))

    async def list_members(self, *, timeout: float | None = None) -> MembersView:
        """`ListMembers` (answered by the leader)."""
        data = wire.encode_list_request()
        return self._members(wire.LIST_METHOD, await self._call(wire.LIST_METHOD, data, timeout))

    async def transfer_leadership(self, node_id: str, *, timeout: float | None = None) -> str:
        """`TransferLeadership`; the new leader's id."""
        data = wire.encode_transfer_request(node_id)
        answer = await self._call(wire.TRANSFER_METHOD, data, timeout)
        try:
            return wire.decode_transfer_response(answer, self._max)
        except WireError as exc:
            raise TransportError(f"{self.address}: TransferLeadership: {exc}") from exc

    async def aclose(self) -> None:
        """Close the channel."""
        await self._channels.aclose()
