"""`RaftBackend`: the dref SPI over a Raft member running in this process.

`dref.connect("raft", ...)` starts (or, when a member with the same `node_id` already runs in
this process, joins) a voting member and waits up to `leader_wait` for a leader. Writes are
proposals: on the leader directly, from a follower forwarded to the leader over `DRefRaft`
(compare commands over the dref-only `DRefExt/Compare`) with upstream's retry policy bounded by
`op_timeout`. Reads are linearizable (ReadIndex on the
leader). Change events come from the member's own state machine: every member sees every
committed change, in commit order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from dref.changes import Subscription
from dref.clock import Clock
from dref.errors import (
    ClosedError,
    ConfigurationError,
    ConsensusError,
    NoLeaderError,
    NotLeaderError,
)
from dref.settings import DRefSettings
from dref.spi import Backend, Capabilities, LockGrant
from dref_raft.commands import (
    COMPARE_COMMANDS,
    Command,
    CompareAndDelete,
    CompareAndExpire,
    CompareAndSet,
    DeleteElement,
    ExpireElement,
    SetElement,
    SetIfNotExist,
)
from dref_raft.discovery import AddressPoller, Resolver, bootstrap
from dref_raft.fsm import ApplyResult
from dref_raft.node import NodeConfig, RaftNode
from dref_raft.ops import (
    CompareOps,
    expire_at_ms,
    fenced_try_lock,
    open_leader_client,
    remote_expire,
)
from dref_raft.settings import RaftSettings
from dref_raft.storage import open_stores
from dref_raft.transport.base import CompareResult, LeaderApi, PeerTransport
from dref_raft.transport.grpc_client import PeerClients
from dref_raft.transport.grpc_server import GrpcServer
from dref_raft.transport.memory import MemoryNetwork
from dref_raft.transport.retry import with_leader
from dref_raft.watch_service import WatchService

__all__ = [
    "Member",
    "NodeClientHandler",
    "RaftBackend",
    "acquire_member",
    "memory_network",
    "open_backend",
    "reset_memory_network",
]

logger = logging.getLogger("dref_raft")
T = TypeVar("T")

_network: MemoryNetwork | None = None
_members: dict[str, Member] = {}


def memory_network() -> MemoryNetwork:
    """The process-wide in-memory network of `transport="memory"` members."""
    global _network
    if _network is None:
        _network = MemoryNetwork()
    return _network


def reset_memory_network() -> None:
    """Forget the in-memory network (tests; every member on it must be stopped)."""
    global _network
    _network = None


class NodeClientHandler:
    """`ClientHandler` (DRefRaft) and `CompareHandler` (DRefExt) of a member.

    Serves data operations when this member leads.
    """

    def __init__(self, node: RaftNode, settings: RaftSettings) -> None:
        self.node = node
        self.settings = settings

    def _check_leader(self) -> None:
        if not self.node.is_leader:
            leader = self.node.leader_id
            raise NotLeaderError(leader) if leader is not None else NoLeaderError()

    async def _propose(self, command: Command) -> tuple[int, ApplyResult]:
        self._check_leader()
        return await self.node.propose(command, self.settings.op_timeout)

    async def set_element(self, name: str, value: bytes, expire_at: int | None) -> None:
        await self._propose(SetElement(name, value, expire_at))

    async def set_element_if_not_exist(
        self, name: str, value: bytes, expire_at: int | None
    ) -> bool:
        _, result = await self._propose(SetIfNotExist(name, value, expire_at))
        return bool(result.created)

    async def get_element(self, name: str) -> bytes | None:
        self._check_leader()
        await self.node.read_barrier(self.settings.op_timeout)
        return self.node.get_local(name)

    async def delete_element(self, name: str) -> None:
        await self._propose(DeleteElement(name))

    async def expire_element(self, name: str, expire_at: int) -> None:
        await self._propose(ExpireElement(name, expire_at))

    def endpoint_ids(self) -> list[str]:
        return [*self.node.peers, self.node.id]

    def applied_seq(self) -> int:
        return self.node.applied

    async def compare(self, command: Command) -> CompareResult:
        """dref-only (`DRefExt/Compare`): propose a compare command, stamped with this leader's
        clock, and await its outcome."""
        if not isinstance(command, COMPARE_COMMANDS):
            raise ConsensusError(f"not a compare command: {type(command).__name__}")
        self._check_leader()
        if not self.node.all_peers_dref():
            raise ConsensusError(
                "a voter has not advertised the dref extensions (upstream node?): "
                "compare commands are refused; set mixed_cluster=True for mixed clusters"
            )
        now = self.node.wall_ms()
        stamped: Command
        match command:
            case CompareAndSet():
                stamped = CompareAndSet(
                    command.name, command.expected, command.value, command.expire_at, now
                )
            case CompareAndDelete():
                stamped = CompareAndDelete(command.name, command.expected, now)
            case CompareAndExpire():
                stamped = CompareAndExpire(command.name, command.expected, command.expire_at, now)
        seq, result = await self.node.propose(stamped, self.settings.op_timeout)
        return CompareResult(bool(result.created), result.current, seq)


@dataclass(eq=False)
class Member:
    """A member node running in this process, shared by every context that names it."""

    settings: RaftSettings
    node: RaftNode
    handler: NodeClientHandler
    transport: PeerTransport
    server: GrpcServer | None = None
    network: MemoryNetwork | None = None
    watch: WatchService | None = None
    poller: AddressPoller | None = None
    refs: int = 0
    clients: dict[str, LeaderApi] = field(default_factory=dict)

    def leader_client(self, node_id: str) -> LeaderApi:
        client = self.clients.get(node_id)
        if client is None:
            address = self.settings.members.get(node_id)
            if address is None:
                raise NoLeaderError(f"leader {node_id!r} is not a configured member")
            client = open_leader_client(
                address, node_id, self.settings.op_timeout, self.network, self.settings.address
            )
            self.clients[node_id] = client
        return client

    async def stop(self) -> None:
        """Stop serving (watch streams, then the server with a short grace), then the node, so
        no request reaches a closed node."""
        if self.poller is not None:
            await self.poller.aclose()
        if self.watch is not None:
            self.watch.close()
        if self.network is not None:
            self.network.stop(self.settings.address)
        if self.server is not None:
            await self.server.aclose(grace=0.2)
        await self.node.aclose()
        for client in self.clients.values():
            await client.aclose()
        await self.transport.aclose()


async def acquire_member(
    settings: RaftSettings, change_buffer: int = 1024, *, resolver: Resolver | None = None
) -> Member:
    """Start the member `settings.node_id` in this process, or join the one already running.

    With discovery the voter set is bootstrapped first (`dref_raft.discovery`; `resolver`
    resolves `node_services` names, the event loop's getaddrinfo by default)."""
    member = _members.get(settings.node_id)
    if member is not None and (member.node.closed or member.node.failure is not None):
        _members.pop(settings.node_id, None)
        member = None
    if member is not None:
        # A discovering node binds the address it finds: only the port is known beforehand.
        if member.settings.port != settings.port or (
            not settings.discovers and member.settings.address != settings.address
        ):
            raise ConfigurationError(
                f"raft node {settings.node_id} already runs in this process at "
                f"{member.settings.address}, not {settings.address}"
            )
        member.refs += 1
        return member
    poller = None
    if settings.discovers:  # the voter set is fixed here, once
        settings, poller = await bootstrap(settings, resolver)
    config = NodeConfig(
        node_id=settings.node_id,
        peers=settings.peers,
        heartbeat_interval=settings.heartbeat_interval,
        election_timeout=settings.election_timeout,
        rpc_timeout=settings.rpc_timeout,
        snapshot_every=settings.snapshot_every,
        reaper_interval=settings.reaper_interval,
        max_pending=settings.max_pending,
        change_buffer=change_buffer,
    )
    stores = open_stores(settings.storage_dir) if settings.storage_dir is not None else None
    network = memory_network() if settings.transport == "memory" else None
    transport: PeerTransport = (
        network.peer_clients(settings.address) if network is not None else PeerClients()
    )
    node = await RaftNode.open(config, transport, stores=stores)
    handler = NodeClientHandler(node, settings)
    watch = WatchService(node, history=settings.watch_history, buffer=change_buffer)
    member = Member(
        settings, node, handler, transport, network=network, watch=watch, poller=poller, refs=1
    )
    try:
        if network is not None:
            network.serve(settings.address, settings.node_id, node, handler, watch, compare=handler)
        else:
            member.server = GrpcServer(
                settings.node_id,
                node,
                handler,
                watch,
                compare=handler,
                host=settings.host,
                port=settings.port,
            )
            await member.server.start()
        node.start()
        if poller is not None:
            poller.start()
    except BaseException:
        await member.stop()
        raise
    _members[settings.node_id] = member
    return member


async def release_member(member: Member) -> None:
    """Drop one reference; the last one stops the node."""
    member.refs -= 1
    if member.refs <= 0:
        if _members.get(member.settings.node_id) is member:
            del _members[member.settings.node_id]
        await member.stop()


class RaftBackend(CompareOps):
    """The `raft` backend: one context's view of the member running in this process."""

    def __init__(self, member: Member, *, clock: Clock, change_buffer: int) -> None:
        self.member = member
        self.node = member.node
        self.settings = member.settings
        self.clock = clock
        self.default_ttl = self.settings.default_ttl
        self.poll_interval = 1.0
        self._change_buffer = change_buffer
        self._closed = False
        # Compare commands need every voter to be a dref node (upstream would apply them as
        # no-ops); they reach the leader over DRefExt/Compare on either transport.
        native = not self.settings.mixed_cluster
        self.capabilities = Capabilities(
            linearizable=True,
            durable=self.settings.storage_dir is not None,
            distributed=self.settings.transport == "grpc",
            fencing=True,
            native_cas=native,
            owner_checked_locks=native,
            exact_events=True,
            expiry_events=True,
        )

    # -- routing ----------------------------------------------------------------------------------
    def _check(self) -> None:
        if self._closed:
            raise ClosedError("the raft context is closed")

    async def _find_leader(self) -> str | None:
        return await self.node.wait_for_leader(0.05)

    async def _route(
        self,
        local: Callable[[NodeClientHandler], Awaitable[T]],
        remote: Callable[[LeaderApi, float], Awaitable[T]],
    ) -> T:
        """Run on the leader: `local` when it is this node, else `remote` over DRefRaft."""
        self._check()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.op_timeout

        async def op(target: str) -> T:
            if target == self.node.id:
                return await local(self.member.handler)
            client = self.member.leader_client(target)
            result = await remote(client, max(0.001, deadline - loop.time()))
            # Read your writes in events too: return once this member has applied what the
            # leader had when it answered, so a subscription opened next starts after it.
            await self.node.wait_applied(client.applied_seq, max(0.0, deadline - loop.time()))
            return result

        return await with_leader(op, self._find_leader, deadline)

    def _expire_at(self, ttl: float | None) -> int | None:
        return expire_at_ms(self.node.wall_ms(), ttl)

    async def _compare(self, command: Command) -> CompareResult:
        return await self._route(
            lambda h: h.compare(command),
            lambda c, left: c.compare(command, timeout=left),
        )

    # -- required ---------------------------------------------------------------------------------
    async def get(self, name: str) -> bytes | None:
        return await self._route(
            lambda h: h.get_element(name),
            lambda c, left: c.get_element(name, timeout=left),
        )

    async def set(self, name: str, value: bytes, ttl: float | None = None) -> None:
        expire_at = self._expire_at(ttl)
        await self._route(
            lambda h: h.set_element(name, value, expire_at),
            lambda c, left: c.set_element(name, value, expire_at, timeout=left),
        )

    async def _set_if_not_exist(self, name: str, value: bytes, expire_at: int | None) -> bool:
        return await self._route(
            lambda h: h.set_element_if_not_exist(name, value, expire_at),
            lambda c, left: c.set_element_if_not_exist(name, value, expire_at, timeout=left),
        )

    async def delete(self, name: str) -> None:
        await self._route(
            lambda h: h.delete_element(name),
            lambda c, left: c.delete_element(name, timeout=left),
        )

    async def expire(self, name: str, ttl: float) -> bool:
        expire_at = self._expire_at(ttl)
        assert expire_at is not None

        async def local(h: NodeClientHandler) -> bool:
            _, result = await h._propose(ExpireElement(name, expire_at))
            return bool(result.created)

        async def remote(c: LeaderApi, left: float) -> bool:
            return await remote_expire(c, name, expire_at, left)

        return await self._route(local, remote)

    async def subscribe(self, name: str) -> Subscription:
        self._check()
        return self.node.hub.subscribe(name, self._change_buffer)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await release_member(self.member)

    # -- native paths -----------------------------------------------------------------------------
    async def try_lock(self, name: str, token: bytes, ttl: float) -> LockGrant | None:
        self._check()
        return await fenced_try_lock(
            lambda: self.set_if_absent(name, token, ttl),
            self.node.watch_created(name, token),
            self.settings.op_timeout,
            f"on node {self.node.id}",
        )


async def open_backend(settings: RaftSettings, core: DRefSettings, clock: Clock) -> Backend:
    """Start or join this process's member and wait up to `leader_wait` for a leader."""
    if settings.mode == "client":
        raise ConfigurationError(
            "mode = 'client': client mode (DRefRaft + DRefWatch to a member) is not implemented "
            "yet; run a member (mode = 'member')"
        )
    member = await acquire_member(settings, core.change_buffer)
    backend = RaftBackend(member, clock=clock, change_buffer=core.change_buffer)
    try:
        leader = await member.node.wait_for_leader(settings.leader_wait)
    except BaseException:
        await backend.aclose()
        raise
    if leader is None:
        logger.warning(
            "raft node %s: no leader within %g s; operations retry until op_timeout",
            settings.node_id,
            settings.leader_wait,
        )
    return backend
