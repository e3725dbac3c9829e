"""`MemberRegistry`: the Raft members running in this process, and their in-memory network.

Every context that names the same `node_id` shares one member (the first starts it, the last
one to close stops it). `local_members` is the registry of this process; tests make their own.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from dref.errors import ConfigurationError, NoLeaderError
from dref_raft.member.discovery import AddressPoller, Resolver, bootstrap, join_bootstrap
from dref_raft.member.follower_reads import FollowerReads
from dref_raft.member.handler import NodeClientHandler
from dref_raft.member.membership import NodeMembership, request_join
from dref_raft.member.node import NodeConfig, RaftNode
from dref_raft.member.watch_service import WatchService
from dref_raft.ops import open_leader_client
from dref_raft.settings import RaftSettings
from dref_raft.storage import open_stores
from dref_raft.transport.base import LeaderApi, PeerTransport
from dref_raft.transport.grpc_client import PeerClients
from dref_raft.transport.grpc_server import GrpcServer
from dref_raft.transport.memory import MemoryNetwork

__all__ = ["Member", "MemberRegistry", "local_members"]


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
    #: `join = true` with discovery: the request to the leader to add this member.
    joiner: asyncio.Task[None] | None = None

    def leader_client(self, node_id: str) -> LeaderApi:
        client = self.clients.get(node_id)
        if client is None:
            address = self.node.core.membership.address_of(node_id) or self.settings.members.get(
                node_id
            )
            if address is None:
                raise NoLeaderError(f"leader {node_id!r} is not a configured member")
            settings = self.settings
            client = open_leader_client(
                address,
                node_id,
                settings.op_timeout,
                self.network,
                settings.address,
                settings.security,
                settings.stream_window if settings.stream else None,
                channel=settings.channel,
            )
            self.clients[node_id] = client
        return client

    async def stop(self) -> None:
        """Stop serving (watch streams, then the server with a short grace), then the node, so
        no request reaches a closed node."""
        if self.joiner is not None:
            self.joiner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.joiner
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


class MemberRegistry:
    """Members by node id, and the in-memory network of `transport="memory"` members."""

    def __init__(self) -> None:
        self._members: dict[str, Member] = {}
        self._network: MemoryNetwork | None = None

    def members(self) -> list[Member]:
        """The members running now (started and not yet stopped)."""
        return list(self._members.values())

    def network(self) -> MemoryNetwork:
        """The in-memory network of `transport="memory"` members (created on first use)."""
        if self._network is None:
            self._network = MemoryNetwork()
        return self._network

    def reset_network(self) -> None:
        """Forget the in-memory network (tests; every member on it must be stopped)."""
        self._network = None

    async def acquire(
        self,
        settings: RaftSettings,
        change_buffer: int = 1024,
        *,
        resolver: Resolver | None = None,
    ) -> Member:
        """Start the member `settings.node_id` in this process, or join the one already running.

        With discovery the voter set is bootstrapped first (`dref_raft.member.discovery`; `resolver`
        resolves `node_services` names, the event loop's getaddrinfo by default)."""
        member = self._members.get(settings.node_id)
        if member is not None and (member.node.closed or member.node.failure is not None):
            self._members.pop(settings.node_id, None)
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
        joins = settings.discovers and settings.join
        if joins:  # found running members to ask; the node starts with no voter set
            settings, poller = await join_bootstrap(settings, resolver)
        elif settings.discovers:  # the voter set is fixed here, once
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
            address=settings.address,
            joining=settings.join,
            learner_promotion_lag=settings.learner_promotion_lag,
            read_mode=settings.read_mode,
            max_clock_drift=settings.max_clock_drift,
        )
        stores = open_stores(settings.storage_dir) if settings.storage_dir is not None else None
        network = self.network() if settings.transport == "memory" else None
        transport: PeerTransport = (
            network.peer_clients(settings.address)
            if network is not None
            else PeerClients(
                security=settings.security,
                stream_window=settings.stream_window if settings.stream else None,
                channel=settings.channel,
            )
        )
        node = await RaftNode.open(config, transport, stores=stores)
        handler = NodeClientHandler(node, settings)
        watch = WatchService(node, history=settings.watch_history, buffer=change_buffer)
        member = Member(
            settings, node, handler, transport, network=network, watch=watch, poller=poller, refs=1
        )
        handler.reads = FollowerReads(
            node,
            member.leader_client,
            timeout=settings.op_timeout,
            catch_up=settings.election_timeout,
        )
        try:
            if network is not None:
                network.serve(
                    settings.address,
                    settings.node_id,
                    node,
                    handler,
                    watch,
                    compare=handler,
                    info=handler,
                )
            else:
                member.server = GrpcServer(
                    settings.node_id,
                    node,
                    handler,
                    watch,
                    compare=handler,
                    info=handler,
                    stream_window=settings.stream_window if settings.stream else None,
                    membership=NodeMembership(node, settings),
                    snapshot=node.snapshots,
                    host=settings.host,
                    port=settings.port,
                    security=settings.security,
                    client_port=settings.client_port,
                    channel_port=settings.channel_port if settings.channel else None,
                )
                await member.server.start()
            node.start()
            if poller is not None:
                poller.start()
            if joins:
                member.joiner = asyncio.create_task(
                    request_join(settings), name=f"dref-raft-join:{settings.node_id}"
                )
        except BaseException:
            await member.stop()
            raise
        self._members[settings.node_id] = member
        return member

    async def release(self, member: Member) -> None:
        """Drop one reference; the last one stops the node."""
        member.refs -= 1
        if member.refs <= 0:
            if self._members.get(member.settings.node_id) is member:
                del self._members[member.settings.node_id]
            await member.stop()


local_members = MemberRegistry()
"""The members of this process (what `dref.connect("raft", ...)` starts and joins)."""
