"""Address discovery: upstream's `DREF_NODE_ADDRESSES` / `DREF_NODE_SERVICES`
(docs/protocol.md#discovery).

Unlike upstream, discovery never changes the quorum. `bootstrap` fixes the voter set once:

1. the node serves `DRefRaft/GetEndpoints` (its own id) on its bind address, so the others can
   identify it before it runs a Raft node;
2. it finds the member addresses (`node_addresses` as listed, or every A/AAAA record of every
   `node_services` name) and its own address among them (`host` when it names one, else the
   first local non-loopback interface address, as Rust does);
3. it asks every other address for its node id over `GetEndpoints` (the last element of the
   answer is the responder's id: dref and upstream nodes alike), retrying until
   `discovery_timeout`, until exactly `expected_size` members (self included) are identified;
4. the voter set becomes static `endpoints` (real node ids), as if configured by hand.

More addresses than `expected_size`, two addresses with one id, or no own address are
`ConfigurationError`s; running out of time is a `BackendUnavailableError` naming what was found.
After bootstrap an `AddressPoller` re-resolves the addresses every `address_poll_interval` and
only logs (WARNING, once per change) addresses that appear or disappear.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from dref.errors import (
    BackendUnavailableError,
    ClosedError,
    ConfigurationError,
    DRefError,
    NoLeaderError,
)
from dref.resources import AsyncResource
from dref_raft.core.messages import Request, Response
from dref_raft.reads import LEADER_READ, ReadRequest
from dref_raft.settings import WILDCARD_HOSTS, RaftSettings, format_address
from dref_raft.transport.grpc_client import LeaderClient
from dref_raft.transport.grpc_server import GrpcServer
from dref_raft.transport.security import PLAINTEXT, TransportSecurity

__all__ = [
    "AddressPoller",
    "AddressSource",
    "Resolver",
    "bootstrap",
    "identify",
    "is_local_address",
    "join_bootstrap",
    "resolve_name",
]

logger = logging.getLogger("dref_raft.member.discovery")

#: A DNS name → its IP addresses (every A/AAAA record), in the resolver's order.
Resolver = Callable[[str], Awaitable[list[str]]]

RESOLVE_TIMEOUT = 5.0
"""Deadline of one resolution round of every `node_services` name (seconds)."""
RETRY_INTERVAL = 0.2
"""Pause between two bootstrap rounds (seconds)."""


async def resolve_name(name: str) -> list[str]:
    """Every A/AAAA address of `name` (the event loop's `getaddrinfo`), deduplicated."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        name, None, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    out: list[str] = []
    for family, *_, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = str(ipaddress.ip_address(str(sockaddr[0]).partition("%")[0]))
            if address not in out:
                out.append(address)
    return out


def is_local_address(address: str) -> bool:
    """Whether `address` is an IP of an interface of this host (it can be bound to)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))  # a syscall, no I/O: fine on the event loop
    except OSError:
        return False
    return True


class AddressSource:
    """The member addresses: `node_addresses` as listed, or what `node_services` resolve to."""

    def __init__(self, settings: RaftSettings, resolver: Resolver | None = None) -> None:
        self.static = list(settings.node_addresses)
        self.services = list(settings.node_services)
        self.resolver = resolver or resolve_name

    @property
    def description(self) -> str:
        if self.static:
            return f"node_addresses {', '.join(self.static)}"
        return f"node_services {', '.join(self.services)}"

    async def find(self, timeout: float = RESOLVE_TIMEOUT) -> list[str]:
        """The addresses now, in order, deduplicated; DRefError if a name does not resolve in
        `timeout` seconds or at all (its error names it)."""
        if self.static:
            return list(self.static)
        out: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                for name in self.services:
                    try:
                        found = await self.resolver(name)
                    except OSError as exc:
                        raise BackendUnavailableError(f"{name} does not resolve: {exc}") from exc
                    out.extend(a for a in found if a not in out)
        except TimeoutError:
            raise BackendUnavailableError(
                f"{', '.join(self.services)} did not resolve within {timeout:g} s"
            ) from None
        return out


def own_address(settings: RaftSettings, addresses: Sequence[str]) -> str | None:
    """This node's address among `addresses`: `host` when it names one, else the first local
    non-loopback interface address; None if none is."""
    explicit = settings.own_address
    if explicit is not None:
        return explicit if explicit in addresses else None
    for address in addresses:
        try:
            loopback = ipaddress.ip_address(address).is_loopback
        except ValueError:
            continue  # a host name: only an explicit host can name it
        if not loopback and is_local_address(address):
            return address
    return None


async def identify(
    address: str, timeout: float, security: TransportSecurity = PLAINTEXT
) -> list[str]:
    """The `GetEndpoints` answer of the member at `address` (host:port): member ids, the
    responder's own id last. DRefError if it cannot answer within `timeout` seconds."""
    async with LeaderClient(address, timeout=timeout, security=security) as client:
        ids = await client.get_endpoints(timeout=timeout)
    if not ids or not ids[-1]:
        raise BackendUnavailableError(f"{address}: GetEndpoints answered no node id")
    return ids


class _Identity:
    """What a node serves while it discovers its cluster: its id over `GetEndpoints`; every
    other call is refused (no leader yet, or UNAVAILABLE for consensus requests)."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def endpoint_ids(self) -> list[str]:
        return [self.node_id]

    def applied_seq(self) -> int:
        return 0

    async def handle(self, request: Request) -> Response:
        raise ClosedError(f"node {self.node_id} is still discovering its cluster")

    async def set_element(self, name: str, value: bytes, expire_at: int | None) -> None:
        raise NoLeaderError()

    async def set_element_if_not_exist(
        self, name: str, value: bytes, expire_at: int | None
    ) -> bool:
        raise NoLeaderError()

    async def get_element(self, name: str, read: ReadRequest = LEADER_READ) -> bytes | None:
        raise NoLeaderError()

    async def read_index(self) -> int:
        raise NoLeaderError()

    async def delete_element(self, name: str) -> None:
        raise NoLeaderError()

    async def expire_element(self, name: str, expire_at: int) -> None:
        raise NoLeaderError()


@dataclass
class _Round:
    """What one bootstrap round found: addresses, own address, and what went wrong."""

    addresses: list[str]
    own: str | None
    errors: dict[str, str]
    problem: str | None = None

    def describe(self, settings: RaftSettings, ids: dict[str, str]) -> str:
        if not self.addresses:
            return "no address" + (f" ({self.problem})" if self.problem else "")
        parts = []
        for address in self.addresses:
            where = format_address(address, settings.port)
            if address == self.own:
                parts.append(f"{where} (this node, {settings.node_id})")
            elif address in ids:
                parts.append(f"{where} ({ids[address]})")
            else:
                parts.append(f"{where} ({self.errors.get(address, 'not identified')})")
        return ", ".join(parts)


async def bootstrap(
    settings: RaftSettings, resolver: Resolver | None = None
) -> tuple[RaftSettings, AddressPoller]:
    """Discover and identify exactly `expected_size` members; the settings with that voter set
    as static `endpoints` (and `host` the own address unless set) and the poller (not yet
    started) of the addresses."""
    expected = settings.expected_size
    assert expected is not None, "bootstrap needs discovery settings with expected_size"
    source = AddressSource(settings, resolver)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.discovery_timeout
    # `host` set: bind it from the start; else bind the own address once it is found.
    keep_host = settings.own_address is not None or settings.host in WILDCARD_HOSTS
    identity = _Identity(settings.node_id)
    server: GrpcServer | None = None
    ids: dict[str, str] = {}  # address → node id
    voters: dict[str, list[str]] = {}  # address → its GetEndpoints answer
    try:
        while True:
            found = await _one_round(settings, source, ids, voters, deadline - loop.time())
            if server is None and (keep_host or found.own is not None):
                host = settings.host if keep_host else (found.own or settings.host)
                server = GrpcServer(
                    settings.node_id,
                    identity,
                    identity,
                    host=host,
                    port=settings.port,
                    security=settings.security,
                )
                await server.start()
            if len(found.addresses) > expected:
                raise ConfigurationError(
                    f"discovery ({source.description}) found {len(found.addresses)} addresses, "
                    f"more than expected_size (DREF_RAFT_EXPECTED_SIZE) {expected}: "
                    f"{found.describe(settings, ids)}"
                )
            own = found.own
            if (
                own is not None
                and len(found.addresses) == expected
                and all(a == own or a in ids for a in found.addresses)
            ):
                break
            if loop.time() >= deadline:
                _give_up(settings, source, found, ids)
            await asyncio.sleep(min(RETRY_INTERVAL, max(0.0, deadline - loop.time())))
    finally:
        if server is not None:
            await server.aclose(grace=0)
    assert own is not None
    endpoints = [
        f"{settings.node_id if a == own else ids[a]}={format_address(a, settings.port)}"
        for a in found.addresses
    ]
    # Bind where the others dial it (an IPv6 literal in brackets, as in the endpoints).
    host = settings.host if settings.host in WILDCARD_HOSTS else _bracketed(own)
    fixed = RaftSettings(
        **{
            **settings.model_dump(),
            "endpoints": endpoints,
            "node_addresses": [],
            "node_services": [],
            "host": host,
        }
    )
    _warn_other_voter_sets(
        settings.node_id, {ids.get(a, settings.node_id) for a in found.addresses}, voters
    )
    logger.info(
        "raft node %s: voters fixed at bootstrap (%s): %s",
        settings.node_id,
        source.description,
        ", ".join(endpoints),
    )
    return fixed, AddressPoller(source, found.addresses, settings.address_poll_interval, fixed)


async def join_bootstrap(
    settings: RaftSettings, resolver: Resolver | None = None
) -> tuple[RaftSettings, AddressPoller]:
    """`join = true` with discovery: find the own address and at least one running member
    (identified over `GetEndpoints`); the settings with those members as static `endpoints`
    (for routing the join request; the node starts with no voter set) and the poller."""
    source = AddressSource(settings, resolver)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.discovery_timeout
    ids: dict[str, str] = {}
    voters: dict[str, list[str]] = {}
    while True:
        found = await _one_round(settings, source, ids, voters, deadline - loop.time())
        own = found.own
        if own is not None and any(a in ids for a in found.addresses):
            break
        if loop.time() >= deadline:
            _give_up(settings, source, found, ids)
        await asyncio.sleep(min(RETRY_INTERVAL, max(0.0, deadline - loop.time())))
    endpoints = [
        f"{settings.node_id if a == own else ids[a]}={format_address(a, settings.port)}"
        for a in found.addresses
        if a == own or a in ids
    ]
    host = settings.host if settings.host in WILDCARD_HOSTS else _bracketed(own)
    fixed = RaftSettings(
        **{
            **settings.model_dump(),
            "endpoints": endpoints,
            "node_addresses": [],
            "node_services": [],
            "host": host,
            "expected_size": None,
        }
    )
    logger.info(
        "raft node %s: joining through discovery (%s); running members: %s",
        settings.node_id,
        source.description,
        ", ".join(e for e in endpoints if not e.startswith(f"{settings.node_id}=")),
    )
    return fixed, AddressPoller(source, found.addresses, settings.address_poll_interval, fixed)


def _warn_other_voter_sets(node_id: str, ours: set[str], voters: dict[str, list[str]]) -> None:
    """A member already running with other voters (one restarted with another node_id?)."""
    for address, answer in voters.items():
        if len(answer) > 1 and answer[-1] in ours and set(answer) != ours:
            logger.warning(
                "raft node %s: the member %s at %s runs with voters %s, this node fixed %s: "
                "did a member restart with another node_id? (upstream nodes discovering by "
                "address list addresses here)",
                node_id,
                answer[-1],
                address,
                ", ".join(sorted(answer)),
                ", ".join(sorted(ours)),
            )


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _give_up(
    settings: RaftSettings, source: AddressSource, found: _Round, ids: dict[str, str]
) -> NoReturn:
    where = f"discovery ({source.description})"
    if found.own is None and found.addresses:
        if settings.own_address is not None:
            raise ConfigurationError(
                f"{where}: host (DREF_RAFT_HOST) {settings.host} is not among the addresses "
                f"found: {', '.join(found.addresses)}"
            )
        raise ConfigurationError(
            f"{where}: none of the addresses found ({', '.join(found.addresses)}) is a local "
            "non-loopback address of this node; set host (DREF_RAFT_HOST) to the address the "
            "others reach this node at"
        )
    if settings.join:
        raise BackendUnavailableError(
            f"{where}: no running member identified within discovery_timeout "
            f"{settings.discovery_timeout:g} s (join = true); found: "
            f"{found.describe(settings, ids)}"
        )
    raise BackendUnavailableError(
        f"{where}: {settings.expected_size} members (expected_size) not identified within "
        f"discovery_timeout {settings.discovery_timeout:g} s; found: "
        f"{found.describe(settings, ids)}"
    )


async def _one_round(
    settings: RaftSettings,
    source: AddressSource,
    ids: dict[str, str],
    voters: dict[str, list[str]],
    left: float,
) -> _Round:
    """Find the addresses and identify the not yet identified ones (concurrently)."""
    try:
        addresses = await source.find(max(0.05, min(RESOLVE_TIMEOUT, left)))
    except DRefError as exc:
        return _Round([], None, {}, str(exc))
    own = own_address(settings, addresses)
    todo = [a for a in addresses if a != own and a not in ids]
    timeout = max(0.05, min(settings.rpc_timeout, left))
    answers = await asyncio.gather(
        *(identify(format_address(a, settings.port), timeout, settings.security) for a in todo),
        return_exceptions=True,
    )
    errors: dict[str, str] = {}
    for address, answer in zip(todo, answers, strict=True):
        if isinstance(answer, DRefError):
            errors[address] = f"no answer: {answer}"
        elif isinstance(answer, BaseException):
            raise answer
        else:
            ids[address] = answer[-1]
            voters[address] = answer
    _check_unique(settings, addresses, own, ids)
    return _Round(addresses, own, errors)


def _check_unique(
    settings: RaftSettings, addresses: Sequence[str], own: str | None, ids: dict[str, str]
) -> None:
    seen: dict[str, str] = {}
    if own is not None:
        seen[settings.node_id] = f"{format_address(own, settings.port)} (this node)"
    for address in addresses:
        node_id = ids.get(address)
        if node_id is None or address == own:
            continue
        where = format_address(address, settings.port)
        if node_id in seen:
            raise ConfigurationError(
                f"node id {node_id!r} answers at {seen[node_id]} and at {where}: give every "
                "member its own node_id (DREF_RAFT_NODE_ID)"
            )
        seen[node_id] = where


class AddressPoller(AsyncResource):
    """Re-resolves the member addresses every `interval` seconds after bootstrap. It never
    changes the voter set: addresses that appear or disappear are logged at WARNING, once per
    change; resolution errors are logged once until the next success."""

    def __init__(
        self,
        source: AddressSource,
        addresses: Sequence[str],
        interval: float,
        settings: RaftSettings,
    ) -> None:
        self.source = source
        self.seen = list(addresses)
        self.interval = interval
        self.settings = settings
        self.polls = 0
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start polling (on the running loop); a no-op for static `node_addresses`."""
        if self._task is None and not self.source.static:
            self._task = asyncio.create_task(
                self._run(), name=f"dref-raft-address-poll:{self.settings.node_id}"
            )

    @property
    def running(self) -> bool:
        """Whether the polling task runs."""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.poll()

    async def poll(self) -> None:
        """One poll: resolve, compare with the last addresses seen, log a change."""
        self.polls += 1
        try:
            found = await self.source.find(min(RESOLVE_TIMEOUT, max(self.interval, 0.05)))
        except DRefError as exc:
            if not self._failing:
                logger.warning(
                    "raft node %s: address poll failed (%s); membership is unchanged",
                    self.settings.node_id,
                    exc,
                )
            self._failing = True
            return
        self._failing = False
        appeared = [a for a in found if a not in self.seen]
        gone = [a for a in self.seen if a not in found]
        if appeared or gone:
            logger.warning(
                "raft node %s: %s now lists %s (appeared: %s; disappeared: %s); discovery does "
                "not change the voters (bootstrap: %s): use dref raft member add/remove",
                self.settings.node_id,
                self.source.description,
                ", ".join(found) or "nothing",
                ", ".join(appeared) or "none",
                ", ".join(gone) or "none",
                ", ".join(self.settings.endpoints),
            )
            self.seen = found

    async def aclose(self) -> None:
        """Cancel the polling task and wait for it (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
