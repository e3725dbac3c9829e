"""`RaftClientBackend`: `mode="client"`, a full context in a process that is not a member.

No vote, no log. Every operation goes to the leader over `DRefRaft` (leader discovery from the
configured `endpoints`, following `not-leader:<id>` hints, bounded by `op_timeout`); `get` is
linearizable (the leader runs ReadIndex). Compare-and-set, `set_if_not_exist` and owner-checked
`refresh_lock` / `release_lock` are dref-only compare commands over `DRefExt/Compare`, shared with
the member backend (`ops.CompareOps`; not with `mixed_cluster`). Change streams come over
`DRefWatch`: one stream per subscribed name, preferably from the leader, that remembers the last
seq it received and, when it breaks, reconnects with backoff to another member and resumes from
that seq. The member replays what was missed, or answers `resync=True` with the current value,
which is delivered when it differs from the last one delivered (None: a delete). Guarantee:
ordered, no silent gaps: events carry their log seq as `revision`, and a resync beyond the seq a
stream had (the member's `watch_history` no longer reaches back to it) ends that name's
subscriptions with `ChangeStreamLaggedError` instead of collapsing the missed changes.
`subscribe_since` opens a private stream from the given seq, so the member replays from there.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from dref.changes import ChangeEvent, ChangeHub, Subscription
from dref.clock import Clock
from dref.errors import (
    BackendTimeoutError,
    ChangeStreamLaggedError,
    ClosedError,
    ConfigurationError,
    NoLeaderError,
)
from dref.settings import DRefSettings
from dref.spi import Backend, BackendStatus, Capabilities, LockGrant
from dref_raft.commands import (
    Command,
    CompareResult,
    DeleteElement,
    ExpireElement,
    MemberStatus,
    NamesPage,
    SetElement,
    WatchEvent,
)
from dref_raft.member.registry import local_members
from dref_raft.ops import (
    CompareOps,
    cluster_status,
    create_if_not_exist,
    expire_at_ms,
    fenced_try_lock,
    open_leader_client,
    paged_names,
    remote_expire,
    wall_clock_ms,
)
from dref_raft.reads import FOLLOWER_READ, ReadRequest
from dref_raft.sessions import WriteSession
from dref_raft.settings import RaftSettings, parse_endpoint
from dref_raft.transport.base import LeaderApi, WatchApi
from dref_raft.transport.grpc_client import WatchClient
from dref_raft.transport.memory import MemoryNetwork
from dref_raft.transport.retry import with_leader

__all__ = ["RaftClientBackend", "open_client_backend"]

logger = logging.getLogger("dref_raft.client.backend")
T = TypeVar("T")

_READER_TURNS = itertools.count()
"""With `read_from = "any"` the contexts of a process take the followers as readers in turn."""
_FIRST_DELAY = 0.05
_MAX_DELAY = 1.0


class _Unknown(enum.Enum):
    TOKEN = 0


_UNKNOWN = _Unknown.TOKEN


class _Hub(ChangeHub):
    """A `ChangeHub` that reports when a name loses its last subscriber."""

    def __init__(self, capacity: int, on_idle: Callable[[str], None]) -> None:
        super().__init__(capacity)
        self._on_idle = on_idle

    def _detach(self, sub: Subscription) -> None:
        super()._detach(sub)
        if not self.wants(sub.name):
            self._on_idle(sub.name)


class _Stream:
    """The resuming `DRefWatch` stream of one name, publishing into the backend's hub."""

    def __init__(
        self,
        backend: RaftClientBackend,
        name: str,
        *,
        since: int | None = None,
        hub: ChangeHub | None = None,
    ) -> None:
        self.backend = backend
        self.name = name
        self.hub = backend._hub if hub is None else hub
        self.seq = since or 0
        """Last seq received (0: none yet; the member then starts with a resync)."""
        self.strict = since is not None
        """Resumed from `since`: a resync beyond it is a gap even before the first event."""
        self.value: bytes | _Unknown | None = _UNKNOWN
        self.address: str | None = None
        """The member currently streaming (None while reconnecting)."""
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._created: dict[bytes, asyncio.Future[int]] = {}
        self.task = asyncio.create_task(self._run(), name=f"dref-raft-watch:{name}")

    def created(self, value: bytes) -> asyncio.Future[int]:
        """A future of the seq at which `name` is seen holding `value`."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._created[value] = future
        future.add_done_callback(
            lambda f: self._created.pop(value) if self._created.get(value) is f else None
        )
        return future

    async def _run(self) -> None:
        delay, failed = _FIRST_DELAY, None
        while True:
            address = self.backend._watch_target(failed)
            try:
                async for event in self.backend._watch_client(address).watch([self.name], self.seq):
                    self.address, delay, failed = address, _FIRST_DELAY, None
                    self._on_event(event)
                reason = "stream ended"
            except Exception as exc:  # any failure: resume elsewhere, never give up
                reason = str(exc) or type(exc).__name__
            self.address, failed = None, address
            logger.debug(
                "watch of %s from %s: %s; resuming after seq %d",
                self.name,
                address,
                reason,
                self.seq,
                extra={"dref_element": self.name},
            )
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _MAX_DELAY)

    def _on_event(self, event: WatchEvent) -> None:
        if event.seq < self.seq:
            return  # already seen (a replay overlapping what we had)
        # Equal seqs: the rest of one command's events (an expired element replaced: delete,
        # then the new value), or a resync at the seq we had (delivered only if it differs).
        known = self.value is not _UNKNOWN or self.strict
        if event.resync and known and event.seq > self.seq:
            # The member could not replay after our seq: changes may be missing. Say so.
            self.hub.end(self.name, ChangeStreamLaggedError(self.name, 0, since=self.seq))
            self.strict = False
            self.seq, self.value = event.seq, event.value
        elif event.resync and not known:
            self.seq, self.value = event.seq, event.value  # the baseline: not a change
        elif not event.resync or event.value != self.value:
            self.seq, self.value = event.seq, event.value
            self.hub.publish(ChangeEvent(self.name, event.value, event.seq))
        if event.value is not None:
            waiter = self._created.get(event.value)
            if waiter is not None and not waiter.done():
                waiter.set_result(event.seq)
        if not self.ready.done():
            self.ready.set_result(None)


class RaftClientBackend(CompareOps):
    """The `raft` backend in client mode; see the module docstring."""

    def __init__(
        self, settings: RaftSettings, *, change_buffer: int, network: MemoryNetwork | None
    ) -> None:
        members = dict(parse_endpoint(text) for text in settings.endpoints)
        if not members:
            raise ConfigurationError("mode = 'client' needs endpoints: the members to talk to")
        self.settings = settings
        self.default_ttl = settings.default_ttl
        # Not `exact_events`: after a resync (the member's history no longer reaches back to
        # the last seq seen) intermediate values are merged into the latest one, so a lock
        # waiter may miss a release; core then re-checks every `poll_interval` seconds. Resyncs
        # are rare (a broken stream resumed beyond `watch_history`), so the poll only bounds how
        # late a waiter can be: 0.2 s is about one reaper period, cheap at one `get` per waiter.
        self.poll_interval = 0.2
        # Compare commands (native CAS, owner-checked locks) need every voter to be a dref node;
        # a member without DRefExt answers them with `CompareUnsupportedError`.
        native = not settings.mixed_cluster
        self.capabilities = Capabilities(
            linearizable=True,
            distributed=network is None,
            fencing=True,
            native_cas=native,
            owner_checked_locks=native,
            fenced_writes=native,
            expiry_events=True,
            names=True,
            revisions=True,
            session_reads=native,
            exactly_once=native and settings.exactly_once,
            fair_updates=native and settings.fair_updates,
            lock_queue=native and settings.fair_updates,
        )
        self.waiter_life = settings.waiter_life
        if self.capabilities.lock_queue:
            # Lock waiters try again this often, renewing their place in the lock's line.
            self.poll_interval = min(self.poll_interval, settings.waiter_life / 4)
        if native and settings.exactly_once:
            self._session = WriteSession()
        self._members = members
        self._any_member = settings.read_from == "any" and native
        """Reads go to `_reader` (`read_from = "any"`); not with upstream members."""
        self._reader: str | None = None
        """The member this context reads from with `read_from = "any"` (None: not chosen yet;
        then a follower when the leader is known): kept while it answers, so its reads share one
        stream and batch well; the next member in the configured order after a failure."""
        self._order = list(members)
        self._rotation = 0
        self._network = network
        self._source = f"client-{settings.node_id}"
        self._leader: str | None = None
        self._leaders: dict[str, LeaderApi] = {}
        self._watchers: dict[str, WatchApi] = {}
        self._hub = _Hub(change_buffer, self._idle)
        self._streams: dict[str, _Stream] = {}
        self._resumed: set[_Stream] = set()
        """Private streams of `subscribe_since`, one per subscription."""
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- routing ----------------------------------------------------------------------------------
    def _check(self) -> None:
        if self._closed:
            raise ClosedError("the raft client context is closed")

    def _next_member(self, avoid: str | None = None) -> str:
        for _ in range(len(self._order)):
            node_id = self._order[self._rotation % len(self._order)]
            self._rotation += 1
            if node_id != avoid or len(self._order) == 1:
                return node_id
        return self._order[0]

    async def _find_leader(self) -> str | None:
        return self._leader if self._leader is not None else self._next_member()

    async def _call(self, remote: Callable[[LeaderApi, float], Awaitable[T]]) -> T:
        """Run `remote` on the leader over DRefRaft, retrying per `with_leader` (op_timeout)."""
        self._check()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.op_timeout

        async def op(target: str) -> T:
            if target not in self._members:
                raise NoLeaderError(f"leader {target!r} is not among the configured endpoints")
            client = self._client_of(target)
            try:
                result = await remote(client, max(0.001, deadline - loop.time()))
            except Exception:
                if self._leader == target:
                    self._leader = None
                raise
            self._leader = target
            return result

        return await with_leader(op, self._find_leader, deadline, bounded=True)

    def _expire_at(self, ttl: float | None) -> int | None:
        return expire_at_ms(wall_clock_ms(), ttl)

    async def _compare(self, command: Command) -> CompareResult:
        """`DRefExt/Compare` on the leader (the leader stamps it with its own clock)."""
        return await self._call(lambda c, left: c.compare(command, timeout=left))

    # -- change streams ---------------------------------------------------------------------------
    def _watch_target(self, failed: str | None) -> str:
        """Address to watch from: the leader if known (and not the one that just failed)."""
        avoid = next((i for i, a in self._members.items() if a == failed), None)
        leader = self._leader
        node_id = leader if leader is not None and leader != avoid else self._next_member(avoid)
        return self._members[node_id]

    def _watch_client(self, address: str) -> WatchApi:
        client = self._watchers.get(address)
        if client is None:
            if self._network is not None:
                client = self._network.watch_client(self._source, address)
            else:
                client = WatchClient(address, security=self.settings.security)
            self._watchers[address] = client
        return client

    def _idle(self, name: str) -> None:
        stream = self._streams.pop(name, None)
        if stream is not None:
            stream.task.cancel()
            self._stopping.add(stream.task)
            stream.task.add_done_callback(self._stopping.discard)

    async def subscribe(self, name: str) -> Subscription:
        self._check()
        if self._leader is None and name not in self._streams:
            await self.get(name)  # find the leader: its stream starts after every acked write
        sub = self._hub.subscribe(name)
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = _Stream(self, name)
        try:
            async with asyncio.timeout(self.settings.op_timeout):
                await asyncio.shield(stream.ready)
        except TimeoutError:
            await sub.aclose()
            raise BackendTimeoutError(
                f"no member answered the watch of {name} within {self.settings.op_timeout:g} s"
            ) from None
        except BaseException:
            await sub.aclose()
            raise
        return sub

    async def subscribe_since(self, name: str, since: int) -> Subscription:
        """A private stream asking the member to replay after `since` (its log seq); a resync
        answer (`watch_history` exceeded) ends it with `ChangeStreamLaggedError`."""
        self._check()
        if self._leader is None:
            await self.get(name)  # watch the leader: it has applied every acked write

        def idle(_: str) -> None:
            stream.task.cancel()
            self._stopping.add(stream.task)
            stream.task.add_done_callback(self._stopping.discard)

        hub = _Hub(self._hub.capacity, idle)
        sub = hub.subscribe(name)
        stream = _Stream(self, name, since=since, hub=hub)
        self._resumed.add(stream)
        stream.task.add_done_callback(lambda _: self._resumed.discard(stream))
        return sub

    async def get_with_revision(self, name: str) -> tuple[bytes | None, int]:
        """`get`, with the leader's applied seq of that very answer (`last_applied_seq`)."""

        async def read(client: LeaderApi, left: float) -> tuple[bytes | None, int]:
            value = await client.get_element(name, timeout=left)
            return value, client.last_applied_seq

        return await self._call(read)

    async def _wait_turn(self, name: str, ticket: bytes, wait: float) -> tuple[bool, bytes | None]:
        """A long poll (`DRefFair/WaitTurn`) on the leader, which answers from its applied
        state when `ticket` becomes the head, or after `wait`."""
        return await self._call(lambda c, left: c.wait_turn(name, ticket, wait, timeout=left))

    # -- reads ------------------------------------------------------------------------------------
    async def get(self, name: str) -> bytes | None:
        """Linearizable: on the leader, or with `read_from = "any"` on this context's reader
        (a follower serves it after asking the leader for its read index)."""
        if self._any_member:
            return await self._read_any(name, FOLLOWER_READ)
        return await self._call(lambda c, left: c.get_element(name, timeout=left))

    async def get_session(self, name: str) -> bytes | None:
        """At least every write and read of this context: the member (the leader, or with
        `read_from = "any"` this context's reader) answers from its own state once it has
        applied the highest seq any answer carried (docs/raft.md#read-modes)."""
        read = ReadRequest(session_seq=self._seen_seq())
        if self._any_member:
            return await self._read_any(name, read)
        return await self._call(lambda c, left: c.get_element(name, timeout=left, read=read))

    def _first_reader(self) -> str:
        """The next member in turn (across this process's contexts), skipping the leader when
        it is known: reads are spread over the followers, off the leader."""
        order = self._order
        followers = [m for m in order if m != self._leader] or order
        return followers[next(_READER_TURNS) % len(followers)]

    def _seen_seq(self) -> int:
        """The highest seq any member's answer carried (a write's, or a read's state)."""
        return max((client.applied_seq for client in self._leaders.values()), default=0)

    async def _read_any(self, name: str, read: ReadRequest) -> bytes | None:
        """`GetElement` with a dref read kind on this context's reader, retried as `_call`
        (a lagging member answers not-leader with the leader's id: the retry goes there)."""
        self._check()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.op_timeout

        async def op(target: str) -> bytes | None:
            if target not in self._members:
                raise NoLeaderError(f"leader {target!r} is not among the configured endpoints")
            left = max(0.001, deadline - loop.time())
            try:
                return await self._client_of(target).get_element(name, timeout=left, read=read)
            except Exception:
                if target == self._reader:  # read from the next member from now on
                    order = self._order
                    self._reader = order[(order.index(target) + 1) % len(order)]
                raise

        async def reader() -> str:
            if self._reader is None:
                self._reader = self._first_reader()
            return self._reader

        return await with_leader(op, reader, deadline, bounded=True)

    # -- operations -------------------------------------------------------------------------------

    async def set(self, name: str, value: bytes, ttl: float | None = None) -> None:
        expire_at = self._expire_at(ttl)
        if await self._session_write(SetElement(name, value, expire_at)) is not None:
            return
        await self._call(lambda c, left: c.set_element(name, value, expire_at, timeout=left))

    async def _set_if_not_exist(self, name: str, value: bytes, expire_at: int | None) -> bool:
        return await create_if_not_exist(
            lambda: self._call(
                lambda c, left: c.set_element_if_not_exist(name, value, expire_at, timeout=left)
            ),
            lambda: self.get(name),
            self.settings.reaper_interval / 2,
            self.settings.op_timeout,
        )

    async def delete(self, name: str) -> None:
        if await self._session_write(DeleteElement(name)) is not None:
            return
        await self._call(lambda c, left: c.delete_element(name, timeout=left))

    async def expire(self, name: str, ttl: float) -> bool:
        expire_at = self._expire_at(ttl)
        assert expire_at is not None
        written = await self._session_write(ExpireElement(name, expire_at))
        if written is not None:
            return written.matched
        return await self._call(lambda c, left: remote_expire(c, name, expire_at, left))

    async def try_lock(self, name: str, token: bytes, ttl: float) -> LockGrant | None:
        """Fenced: the fence is the seq at which the name's stream sees our token."""
        async with await self.subscribe(name):
            return await fenced_try_lock(
                lambda: self._acquire_lock(name, token, ttl),
                self._streams[name].created(token),
                self.settings.op_timeout,
                "by this client's watch",
            )

    # -- tools ------------------------------------------------------------------------------------
    def names(self, prefix: str = "") -> AsyncIterator[str]:
        """From the leader over `DRefExt/Names` (read barrier there), a page at a time; a leader
        without it (upstream) raises `UnsupportedOperationError`."""

        def page(after: str) -> Awaitable[NamesPage]:
            return self._call(lambda c, left: c.names(prefix, after, timeout=left))

        return paged_names(page)

    def _client_of(self, node_id: str) -> LeaderApi:
        client = self._leaders.get(node_id)
        if client is None:
            client = open_leader_client(
                self._members[node_id],
                node_id,
                self.settings.op_timeout,
                self._network,
                self._source,
                self.settings.security,
                self.settings.stream_window if self.settings.stream else None,
                channel=self.settings.channel,
            )
            self._leaders[node_id] = client
        return client

    async def status(self) -> BackendStatus:
        """Every configured member's own view over `DRefExt/Status`, asked at once."""
        self._check()
        timeout = self.settings.op_timeout

        async def fetch(node_id: str) -> MemberStatus:
            return await self._client_of(node_id).status(timeout=timeout)

        summary = f"raft client of {len(self._members)} members ({self.settings.transport})"
        return await cluster_status(summary, dict(self._members), fetch)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for name in list(self._streams):
            self._idle(name)
        for stream in list(self._resumed):
            stream.hub.close()
        if self._stopping:
            await asyncio.wait(list(self._stopping))
        self._hub.close()
        for leader in self._leaders.values():
            await leader.aclose()
        for watcher in self._watchers.values():
            await watcher.aclose()


async def open_client_backend(settings: RaftSettings, core: DRefSettings, clock: Clock) -> Backend:
    """A client-mode context: nothing starts until the first operation (no leader wait)."""
    network = local_members.network() if settings.transport == "memory" else None
    return RaftClientBackend(settings, change_buffer=core.change_buffer, network=network)
