"""An in-memory transport with the interfaces of the gRPC one, for tests without sockets.

`MemoryNetwork` hosts nodes by address. Consensus messages go through the real wire
conversion (`convert`), so an in-memory cluster sees exactly what gRPC peers would see
(including the response fields filled in for upstream peers). Faults:

* `drop_rate`: each request and each response is lost with this probability (the caller
  then waits out its timeout and gets `TransportError`);
* `delay`: (min, max) seconds added to each delivery, drawn uniformly;
* `partition(a, b, symmetric=True)`: nothing from `a` reaches `b` (and back if symmetric);
  `heal()` removes every partition;
* an address nobody serves (or `stop(address)`) fails at once, like a refused connection.

Given a seeded `random.Random`, the fault decisions are a deterministic function of the order
of calls.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from dref.errors import ClosedError, DRefError, UnsupportedOperationError
from dref_raft.commands import Command, CompareResult, MemberStatus, NamesPage, WatchEvent
from dref_raft.core.messages import Request, Response
from dref_raft.errors import (
    CompareUnsupportedError,
    TransportError,
    WatchUnsupportedError,
    WireError,
)
from dref_raft.reads import LEADER_READ, ReadRequest
from dref_raft.transport.base import (
    ClientHandler,
    CompareHandler,
    ConsensusHandler,
    InfoHandler,
    WatchHandler,
    aclose_iterator,
    read_index_of,
)
from dref_raft.transport.status import error_of, status_of
from dref_raft.wire import fair_messages, messages

__all__ = [
    "MemoryLeaderClient",
    "MemoryNetwork",
    "MemoryPeerClients",
    "MemoryWatchClient",
]

T = TypeVar("T")
_Call = Callable[[ClientHandler], Awaitable[T]]
_UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED


@dataclass
class _Host:
    node_id: str
    consensus: ConsensusHandler
    client: ClientHandler | None
    watch: WatchHandler | None
    compare: CompareHandler | None = None
    info: InfoHandler | None = None


@dataclass
class MemoryNetwork:
    """Addresses → served handlers, plus the faults between them."""

    rng: random.Random = field(default_factory=random.Random)
    drop_rate: float = 0.0
    delay: tuple[float, float] = (0.0, 0.0)
    _hosts: dict[str, _Host] = field(default_factory=dict)
    _blocked: set[tuple[str, str]] = field(default_factory=set)

    # ------------------------------------------------------------------ membership

    def serve(
        self,
        address: str,
        node_id: str,
        consensus: ConsensusHandler,
        client: ClientHandler | None = None,
        watch: WatchHandler | None = None,
        *,
        compare: CompareHandler | None = None,
        info: InfoHandler | None = None,
    ) -> None:
        """Start serving the handlers at `address` (like `GrpcServer.start`)."""
        self._hosts[address] = _Host(node_id, consensus, client, watch, compare, info)

    def stop(self, address: str) -> None:
        """Stop serving `address`; calls to it fail like a refused connection."""
        self._hosts.pop(address, None)

    def partition(self, a: str, b: str, *, symmetric: bool = True) -> None:
        """Lose every message from `a` to `b` (and from `b` to `a` if `symmetric`)."""
        self._blocked.add((a, b))
        if symmetric:
            self._blocked.add((b, a))

    def heal(self) -> None:
        """Remove every partition."""
        self._blocked.clear()

    def peer_clients(self, source: str) -> MemoryPeerClients:
        """Consensus clients of the node at `source` (partitions are judged from there)."""
        return MemoryPeerClients(self, source)

    def leader_client(self, source: str, address: str) -> MemoryLeaderClient:
        """`DRefRaft` client from `source` to `address`."""
        return MemoryLeaderClient(self, source, address)

    def watch_client(self, source: str, address: str) -> MemoryWatchClient:
        """`DRefWatch` client from `source` to `address`."""
        return MemoryWatchClient(self, source, address)

    # ------------------------------------------------------------------ delivery

    def _host(self, source: str, address: str, what: str) -> _Host:
        host = self._hosts.get(address)
        if host is None:
            raise TransportError(f"{address}: {what}: UNAVAILABLE: connection refused")
        return host

    async def _deliver(self, source: str, target: str, deadline: float, what: str) -> None:
        """One hop: wait the drawn delay; a lost message waits out the caller's deadline."""
        lost = (source, target) in self._blocked or (
            self.drop_rate > 0 and self.rng.random() < self.drop_rate
        )
        lo, hi = self.delay
        pause = self.rng.uniform(lo, hi) if hi > 0 else 0.0
        loop = asyncio.get_running_loop()
        if lost:
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            raise TransportError(f"{target}: {what}: DEADLINE_EXCEEDED (message lost)")
        if pause:
            if loop.time() + pause > deadline:
                await asyncio.sleep(max(0.0, deadline - loop.time()))
                raise TransportError(f"{target}: {what}: DEADLINE_EXCEEDED")
            await asyncio.sleep(pause)


class MemoryPeerClients:
    """`PeerTransport` over a `MemoryNetwork`, sending from `source`."""

    def __init__(self, network: MemoryNetwork, source: str) -> None:
        self._net = network
        self.source = source
        self._closed = False

    async def call(self, address: str, request: Request, timeout: float) -> Response:
        """Deliver `request` to `address` through the wire conversion; see `PeerClients.call`."""
        if self._closed:
            raise ClosedError("the transport client is closed")
        net, method = self._net, messages.method_of(request)
        data = messages.encode_request(request)
        if timeout <= 0:
            raise TransportError(f"{address}: {method}: no time left")
        deadline = asyncio.get_running_loop().time() + timeout
        host = net._host(self.source, address, method)
        await net._deliver(self.source, address, deadline, method)
        try:
            received = messages.decode_request(method, data, host.node_id)
        except WireError as exc:
            raise TransportError(f"{address}: {method}: INVALID_ARGUMENT: {exc}") from exc
        try:
            async with asyncio.timeout_at(deadline):
                response = await host.consensus.handle(received)
        except TimeoutError as exc:
            raise TransportError(f"{address}: {method}: DEADLINE_EXCEEDED") from exc
        except Exception as exc:
            raise TransportError(f"{address}: {method}: UNAVAILABLE: {exc}") from exc
        answer = messages.encode_response(response)
        await net._deliver(address, self.source, deadline, method)
        try:
            return messages.decode_response(request, answer)
        except WireError as exc:
            raise TransportError(f"{address}: {method}: undecodable response: {exc}") from exc

    async def aclose(self) -> None:
        self._closed = True


class MemoryLeaderClient:
    """`LeaderApi` over a `MemoryNetwork`; errors pass through upstream's status strings."""

    def __init__(
        self, network: MemoryNetwork, source: str, address: str, *, timeout: float = 5.0
    ) -> None:
        self._net = network
        self.source = source
        self.address = address
        self.timeout = timeout
        self.applied_seq = 0
        self.last_applied_seq = 0

    async def _run(self, what: str, timeout: float | None, call: _Call[T]) -> T:
        wait = self.timeout if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + wait
        host = self._net._host(self.source, self.address, what)
        if host.client is None:
            raise error_of(_UNIMPLEMENTED, f"{what} not served", self.address)
        await self._net._deliver(self.source, self.address, deadline, what)
        try:
            async with asyncio.timeout_at(deadline):
                result = await call(host.client)
        except TimeoutError as exc:
            raise TransportError(f"{self.address}: {what}: DEADLINE_EXCEEDED") from exc
        except Exception as exc:
            code, details = status_of(exc)
            raise error_of(code, details, self.address) from exc
        answered = host.client.applied_seq()
        self.applied_seq = max(self.applied_seq, answered)
        await self._net._deliver(self.address, self.source, deadline, what)
        self.last_applied_seq = answered
        return result

    async def set_element(
        self, name: str, value: bytes, expire_at: int | None = None, *, timeout: float | None = None
    ) -> None:
        await self._run("SetElement", timeout, lambda h: h.set_element(name, value, expire_at))

    async def set_element_if_not_exist(
        self, name: str, value: bytes, expire_at: int | None = None, *, timeout: float | None = None
    ) -> bool:
        return await self._run(
            "SetElementIfNotExist",
            timeout,
            lambda h: h.set_element_if_not_exist(name, value, expire_at),
        )

    async def get_element(
        self, name: str, *, timeout: float | None = None, read: ReadRequest = LEADER_READ
    ) -> bytes | None:
        return await self._run("GetElement", timeout, lambda h: h.get_element(name, read))

    async def read_index(self, *, timeout: float | None = None) -> int:
        seq = await self._run("GetElement", timeout, lambda h: h.read_index())
        return read_index_of(self.address, seq)

    async def delete_element(self, name: str, *, timeout: float | None = None) -> None:
        await self._run("DeleteElement", timeout, lambda h: h.delete_element(name))

    async def expire_element(
        self, name: str, expire_at: int, *, timeout: float | None = None
    ) -> None:
        await self._run("ExpireElement", timeout, lambda h: h.expire_element(name, expire_at))

    async def get_endpoints(self, *, timeout: float | None = None) -> list[str]:
        async def ids(h: ClientHandler) -> list[str]:
            return list(h.endpoint_ids())

        return await self._run("GetEndpoints", timeout, ids)

    async def compare(self, command: Command, *, timeout: float | None = None) -> CompareResult:
        """`DRefExt/Compare` through the wire conversion, like `LeaderClient.compare`."""
        what = messages.COMPARE_METHOD
        data = messages.encode_compare_request(command)
        host = self._net._host(self.source, self.address, what)
        handler = host.compare
        if handler is None:
            raise CompareUnsupportedError(
                f"{self.address} does not serve DRefExt/Compare (an upstream node?): "
                "set mixed_cluster = true for clusters with upstream nodes"
            )
        received = messages.decode_compare_request(data)

        async def call(_: ClientHandler) -> bytes:
            return messages.encode_compare_response(await handler.compare(received))

        result = messages.decode_compare_response(await self._run(what, timeout, call))
        self.applied_seq = max(self.applied_seq, result.seq)
        return result

    async def wait_turn(
        self, name: str, ticket: bytes, wait: float, *, timeout: float | None = None
    ) -> tuple[bool, bytes | None]:
        """`DRefFair/WaitTurn` through the wire conversion, like `LeaderClient.wait_turn`."""
        what = "WaitTurn"
        handler = self._net._host(self.source, self.address, what).compare
        if handler is None:
            raise UnsupportedOperationError(
                f"raft member at {self.address} does not serve DRefFair/WaitTurn "
                "(an upstream node, or a dref node older than fair updates)"
            )
        data = fair_messages.encode_wait_turn_request(name, ticket, max(1, round(wait * 1000)))
        received = fair_messages.decode_wait_turn_request(data)

        async def call(_: ClientHandler) -> bytes:
            turn, value = await handler.wait_turn(received[0], received[1], received[2] / 1000)
            return fair_messages.encode_wait_turn_response(turn, value)

        return fair_messages.decode_wait_turn_response(await self._run(what, timeout, call))

    def _info(self, what: str) -> InfoHandler:
        handler = self._net._host(self.source, self.address, what).info
        if handler is None:
            raise UnsupportedOperationError(
                f"raft member at {self.address} does not serve DRefExt/{what} "
                "(an upstream node, or a dref node older than this method)"
            )
        return handler

    async def names(
        self, prefix: str, after: str = "", limit: int = 0, *, timeout: float | None = None
    ) -> NamesPage:
        """`DRefExt/Names` through the wire conversion, like `LeaderClient.names`."""
        what = messages.NAMES_METHOD
        handler = self._info(what)
        data = messages.encode_names_request(prefix, after, limit)
        received = messages.decode_names_request(data)

        async def call(_: ClientHandler) -> bytes:
            return messages.encode_names_response(await handler.names(*received))

        return messages.decode_names_response(await self._run(what, timeout, call))

    async def status(self, *, timeout: float | None = None) -> MemberStatus:
        """`DRefExt/Status` through the wire conversion, like `LeaderClient.status`."""
        what = messages.STATUS_METHOD
        handler = self._info(what)

        async def call(_: ClientHandler) -> bytes:
            return messages.encode_member_status(handler.status())

        return messages.decode_member_status(await self._run(what, timeout, call))

    async def aclose(self) -> None:
        pass


class MemoryWatchClient:
    """`WatchApi` over a `MemoryNetwork` (events are not subject to drops or delays)."""

    def __init__(self, network: MemoryNetwork, source: str, address: str) -> None:
        self._net = network
        self.source = source
        self.address = address

    async def watch(self, names: list[str], from_seq: int) -> AsyncIterator[WatchEvent]:
        host = self._net._host(self.source, self.address, "Watch")
        if host.watch is None:
            raise WatchUnsupportedError(f"{self.address} does not serve DRefWatch")
        if (self.source, self.address) in self._net._blocked:
            raise TransportError(f"{self.address}: Watch: UNAVAILABLE (partitioned)")
        events = host.watch.watch(list(names), from_seq)
        try:
            async for event in events:
                if self.address not in self._net._hosts:
                    raise TransportError(f"{self.address}: Watch: UNAVAILABLE (stopped)")
                yield messages.decode_watch_event(messages.encode_watch_event(event))
        except DRefError:
            raise
        except Exception as exc:
            code, details = status_of(exc)
            raise error_of(code, details, self.address) from exc
        finally:
            await aclose_iterator(events)

    async def aclose(self) -> None:
        pass
