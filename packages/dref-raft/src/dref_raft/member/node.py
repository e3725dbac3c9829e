"""`RaftNode`: the asyncio driver of one Raft member (the only place with asyncio).

It owns a `RaftCore`, the `StateMachine` and a `ChangeHub`. One driver task ticks the core,
feeds it queued inputs (received messages, responses, proposals, reads) and hands every `Ready`
to the one `dref_raft.apply.ReadyApplier` (the contract of docs/raft-consensus.md): a leader's
AppendEntries leave first (step 0), then the blocking persist step runs in one thread hop. The
node is the applier's `ReadyEffects`: it sends requests as fire-and-forget RPC tasks and
responses to the waiting handlers, publishes change events in commit order, completes
proposals and reads, and wakes `wait_applied` callers.

Inputs never touch the core between `ready()` and `advance()`: they are queued, and whatever
arrives during an fsync is handled by the next `Ready` as one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import heapq
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from dref.changes import ChangeEvent, ChangeHub
from dref.errors import (
    BackendError,
    BackendTimeoutError,
    ClosedError,
    ConsensusError,
    DRefError,
    NoLeaderError,
    NotLeaderError,
    QuorumLostError,
)
from dref_raft.apply import ReadyApplier, StoreWriter, log_records
from dref_raft.bulk import FREEZE_AFTER, built_large, paused_gc, release_in_slices
from dref_raft.commands import (
    Command,
    CompareAndSet,
    DeleteIfExpired,
    FairSwap,
    MemberInfo,
    Membership,
    MembersView,
    SessionCommand,
    SetIfNotExist,
)
from dref_raft.core import (
    AppendEntries,
    AppendEntriesResponse,
    ConfigRefused,
    CoreConfig,
    CoreState,
    Entry,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    NotLeader,
    PeerKind,
    PreVote,
    PreVoteResponse,
    RaftCore,
    ReadIndex,
    ReadIndexResponse,
    Request,
    Response,
    Role,
    Snapshot,
    SoftState,
    Vote,
    VoteResponse,
)
from dref_raft.errors import MembershipError, SnapshotAbandonedError
from dref_raft.fsm import (
    ApplyResult,
    Changed,
    ClusterSnapshot,
    NamesCopy,
    StateCopy,
    StateMachine,
    release_snapshot,
    snapshot_of_state,
)
from dref_raft.member.disk_thread import DiskThread
from dref_raft.member.snapshot_transfer import (
    BOOT_HELD_FILE,
    SnapshotTransfer,
    StreamingTransport,
    remove_held,
)
from dref_raft.member.turns import TurnWaiters
from dref_raft.ops import wall_clock_ms
from dref_raft.storage import SnapshotStore, Stores
from dref_raft.storage.recovery import boot
from dref_raft.storage.snapshot import FileEntries
from dref_raft.storage.snapshot_files import MonotonicSnapshotStore
from dref_raft.transport.base import PeerTransport
from dref_raft.wire.commands import encode_names_parts

__all__ = ["NodeConfig", "NodeStats", "RaftNode", "not_leader_error"]

logger = logging.getLogger("dref_raft.member.node")
_T = TypeVar("_T")
_Copy = TypeVar("_Copy", StateCopy, NamesCopy)

_REPLY_TYPE: dict[type[Request], type[Response]] = {
    AppendEntries: AppendEntriesResponse,
    Heartbeat: HeartbeatResponse,
    Vote: VoteResponse,
    PreVote: PreVoteResponse,
    ReadIndex: ReadIndexResponse,
    InstallSnapshot: InstallSnapshotResponse,
}
_REQUESTS = (AppendEntries, Heartbeat, Vote, PreVote, ReadIndex, InstallSnapshot)
#: Most inputs handled per driver turn before a Ready is processed (fairness).
_MAX_INPUTS_PER_TURN = 4096
#: Seconds before the driver builds again a snapshot for an upstream peer after a failure.
_OFFER_RETRY = 1.0
#: Most RPCs in flight to one peer; more are dropped (Raft tolerates loss).
_MAX_INFLIGHT_PER_PEER = 64
#: Most DeleteIfExpired proposals per reaper round.
_MAX_REAP = 256
#: Elements the reaper checks between two yields to the event loop.
_REAP_SCAN_SLICE = 20_000
#: Distinct non-member senders logged (later ones are refused silently).
_MAX_STRANGERS_LOGGED = 64
_CAMPAIGNING = (Role.CANDIDATE, Role.LEADER)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """What a node needs beyond its transport and stores (built from `RaftSettings`)."""

    node_id: str
    peers: dict[str, str]
    """Other voters: id → address."""
    heartbeat_interval: float = 0.08
    election_timeout: float = 0.4
    rpc_timeout: float = 0.5
    snapshot_every: int = 1000
    reaper_interval: float = 0.2
    max_pending: int = 1024
    change_buffer: int = 1024
    address: str = ""
    """This node's own address (host:port), written into configuration changes it proposes."""
    joining: bool = False
    """Start without a voter set, to be added by the leader (`dref raft member add`)."""
    learner_promotion_lag: int = 64
    catch_up_entries: int = 5000
    """A compaction keeps up to this many of the entries its snapshot covers (at most
    `snapshot_every`): a follower that far behind catches up from the log, not a snapshot."""
    read_mode: str = "read_index"
    """`lease`: lease reads, `max_clock_drift` (s) shorter than the election timeout."""
    max_clock_drift: float = 0.1

    def core_config(self) -> CoreConfig:
        heartbeat_ms = max(2, round(self.heartbeat_interval * 1000))
        tick_ms = max(1, heartbeat_ms // 2)
        election_ms = max(2 * heartbeat_ms, round(self.election_timeout * 1000))
        lease_ticks = 0
        if self.read_mode == "lease":
            # Whole ticks, minus one: a tick may be a whole period late.
            lease_ticks = max(1, (election_ms - round(self.max_clock_drift * 1000)) // tick_ms - 1)
        return CoreConfig(
            tick_ms=tick_ms,
            heartbeat_interval_ms=heartbeat_ms,
            election_timeout_ms=election_ms,
            lease_ticks=lease_ticks,
            learner_promotion_lag=self.learner_promotion_lag,
        )


@dataclass(slots=True)
class NodeStats:
    """Counts of rare events, read by `dref_raft.member.metrics` when scraped."""

    elections: int = 0
    """Elections this node started (it became candidate, or leader, in a new term)."""
    snapshots: int = 0
    """Snapshots this node took of its state machine (log compaction)."""
    snapshot_seconds: float = 0.0
    """Total time spent taking (and with storage, saving) them."""
    snapshot_entries: int = 0
    """Elements in the last one."""
    snapshot_bytes: int = 0
    """Bytes of the last snapshot file written (0 without `storage_dir`)."""


@dataclass(slots=True)
class _Pending:
    term: int
    future: asyncio.Future[tuple[int, ApplyResult]]


class _ReadBatch:
    """`read_barrier` callers that one ReadIndex request serves: all of them began before the
    driver made it (its read index covers every write committed before each began)."""

    __slots__ = ("futures", "request_id")

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[None]] = []
        self.request_id = 0
        """Its ReadIndex request (0: not made yet)."""

    def settle(self, error: BaseException | None) -> None:
        for future in self.futures:
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)

    def abandoned(self) -> bool:
        return all(future.done() for future in self.futures)


def _quorum_not_confirmed(future: asyncio.Future[None], node_id: str, timeout: float) -> None:
    if not future.done():
        future.set_exception(
            QuorumLostError(
                f"node {node_id}: leadership not confirmed by a majority within {timeout:g} s"
            )
        )


class RaftNode:
    """One member: create with `await RaftNode.open(...)`, then `start()`, finally `aclose()`."""

    def __init__(
        self,
        config: NodeConfig,
        transport: PeerTransport,
        *,
        stores: Stores | None = None,
        machine: StateMachine | None = None,
        state: CoreState | None = None,
        rng: random.Random | None = None,
        wall_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.config = config
        self.id = config.node_id
        self.peers = dict(config.peers)
        self._transport = transport
        self.machine = machine if machine is not None else StateMachine()
        self.machine.retired = []  # freed off the event loop (`snapshot_installed`)
        self.core = RaftCore(
            self.id,
            list(self.peers),
            rng=rng if rng is not None else random.Random(),
            config=config.core_config(),
            state=state,
            joining=config.joining,
        )
        self.wall_ms = wall_ms
        self.hub = ChangeHub(config.change_buffer)
        self.on_applied: list[Callable[[int, str, bytes | None], None]] = []
        """Called in commit order with (seq, name, value or None) for every change."""
        self.on_applied_batch: list[Callable[[int, Sequence[Changed]], None]] = []
        """Called in commit order with (seq, the changes at that seq): one call for all the
        changes of an entry, or of a snapshot install (DRefWatch)."""
        self._tick = self.core.config.tick_ms / 1000
        self._inputs: deque[Callable[[], None]] = deque()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_pending)
        self._pending: dict[int, _Pending] = {}
        #: ReadIndex requests made, by id; `_read_batch`: the callers waiting for the next one.
        self._reads: dict[int, _ReadBatch] = {}
        self._read_batch: _ReadBatch | None = None
        #: The highest applied seq the leader answered an operation of this process with
        #: (`acknowledged`): change streams opened here wait until this member applied it.
        self.acknowledged_seq = 0
        #: `wait_applied` callers: (seq, tiebreak, future), smallest seq first.
        self._applied_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_ids = itertools.count()
        self._read_ids = 0
        self._replies: dict[tuple[str, type[Response]], deque[asyncio.Future[Response]]] = {}
        self._unanswered: list[tuple[tuple[str, type[Response]], asyncio.Future[Response]]] = []
        self._created: dict[tuple[str, bytes], asyncio.Future[int]] = {}
        self.turns = TurnWaiters(self.machine)
        """Callers waiting for their turn in a line of contended writers (`wait_turn`)."""
        self._inflight: dict[str, int] = dict.fromkeys(self.peers, 0)
        #: Non-members that sent consensus requests (each logged once).
        self._strangers: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaping: set[str] = set()
        self._leader_changed = asyncio.Event()
        self._leader_contact: float | None = None  # time.monotonic() of the last leader message
        snapshot_store = stores.snapshot if stores is not None else None
        snapshot_dir = (
            snapshot_store.path.parent if isinstance(snapshot_store, SnapshotStore) else None
        )
        if stores is not None:  # snapshots are saved from the background too (`_compact`)
            booted = self.core.log.snapshot  # what `stores.snapshot` holds, if anything
            saved = (booted.seq, booted.term) if booted.seq > 0 else None
            store = MonotonicSnapshotStore(stores.snapshot, saved)
            stores = dataclasses.replace(stores, snapshot=store)
        writer = StoreWriter(
            stores, term=self.core.term, vote=self.core.vote, commit=self.core.commit
        )
        self._applier = ReadyApplier(
            self.core,
            self.machine,
            writer,
            self,
            snapshot_every=config.snapshot_every,
            offers_snapshots=False,  # `_offer_snapshot`, off the event loop
        )
        self._disk = DiskThread(f"dref-raft-disk:{self.id}")
        """Runs the driver's blocking writes (`persist`), one at a time."""
        self._driver: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        #: The snapshot being taken in the background, and one taken, saved, not yet compacted.
        self._compaction: asyncio.Task[None] | None = None
        self._compacted: ClusterSnapshot | None = None
        #: The snapshot an upstream peer waits for, being built; one built, not yet offered.
        self._offering: asyncio.Task[None] | None = None
        self._offered: ClusterSnapshot | None = None
        #: Callers of `copy_state_at_applied`, served by the driver between two turns.
        self._copies: list[asyncio.Future[tuple[StateCopy, int, int]]] = []
        #: Callers of `hold_snapshot_in_file`, served by the driver between two turns.
        self._holds: list[asyncio.Future[None]] = []
        self._closed = False
        self.failure: BaseException | None = None
        self.stats = NodeStats()
        self._election_term = -1
        self.snapshots = SnapshotTransfer(self, snapshot_dir)
        """Streams snapshots to and from dref peers (docs/raft-wire.md#snapshot-streaming)."""

    # ------------------------------------------------------------------ life cycle

    @classmethod
    async def open(
        cls,
        config: NodeConfig,
        transport: PeerTransport,
        *,
        stores: Stores | None = None,
        rng: random.Random | None = None,
        wall_ms: Callable[[], int] = wall_clock_ms,
    ) -> RaftNode:
        """Boot from `stores` (None: empty, in memory); `CorruptStateError` refuses to start."""
        machine, state = None, None
        if stores is not None:
            held = None
            if isinstance(stores.snapshot, SnapshotStore) and isinstance(
                transport, StreamingTransport
            ):  # its snapshot stays in its file (docs/raft.md#large-state)
                directory = stores.snapshot.path.parent
                held = directory / BOOT_HELD_FILE
                await asyncio.to_thread(remove_held, directory)  # left by a crash
            machine, state = await asyncio.to_thread(boot, stores, held)
        return cls(
            config, transport, stores=stores, machine=machine, state=state, rng=rng, wall_ms=wall_ms
        )

    def start(self) -> None:
        """Start the driver and the reaper (idempotent)."""
        if self._driver is None:
            self._driver = asyncio.create_task(self._run(), name=f"dref-raft-driver:{self.id}")
            self._reaper = asyncio.create_task(self._reap(), name=f"dref-raft-reaper:{self.id}")

    async def aclose(self) -> None:
        """Stop every task and fail whatever waits (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._compaction is not None:  # its worker thread would go on writing the files
            await asyncio.wait([self._compaction])
        tasks = [t for t in (self._driver, self._reaper, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._fail_all(ClosedError(f"raft node {self.id} stopped"))
        self.hub.close()
        self.snapshots.aclose()
        stores = self._applier.writer.stores  # after a write still running in the thread:
        await self._disk.close(stores.command_log.close if stores is not None else None)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def transport(self) -> PeerTransport:
        """The transport this node sends its consensus requests with."""
        return self._transport

    def track(self, task: asyncio.Task[None]) -> None:
        """Cancel `task` when the node stops."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def adopt_snapshot_file(self, path: Path, snapshot: ClusterSnapshot) -> None:
        """The verified DRFS file at `path` holds `snapshot`, about to be installed: saving it
        renames that file into place (`MonotonicSnapshotStore.adopt`)."""
        stores = self._applier.writer.stores
        if stores is not None and isinstance(stores.snapshot, MonotonicSnapshotStore):
            stores.snapshot.adopt(path, snapshot)

    def link_saved_snapshot(self, dest: Path, last_seq: int, last_term: int) -> bool:
        """Hard-link the saved `state-snapshot` file to `dest` if it holds the snapshot at
        (`last_seq`, `last_term`) (`MonotonicSnapshotStore.link_saved`; blocking)."""
        stores = self._applier.writer.stores
        if stores is None or not isinstance(stores.snapshot, MonotonicSnapshotStore):
            return False
        return stores.snapshot.link_saved(dest, last_seq, last_term)

    def deliver(self, response: Response) -> None:
        """Step a peer's `response` (received outside `PeerTransport.call`) into the core."""
        self._submit(lambda: self.core.step(response))

    # ------------------------------------------------------------------ state

    @property
    def role(self) -> Role:
        return self.core.role

    @property
    def is_leader(self) -> bool:
        return self.core.role is Role.LEADER

    @property
    def leader_id(self) -> str | None:
        return self.core.leader_id

    @property
    def term(self) -> int:
        return self.core.term

    @property
    def applied(self) -> int:
        return self.core.applied

    def last_contact(self) -> float | None:
        """Seconds since this node last heard from the leader (0 when it leads; None: never)."""
        if self.is_leader:
            return 0.0
        if self._leader_contact is None:
            return None
        return time.monotonic() - self._leader_contact

    def any_peer_upstream(self) -> bool:
        """Whether a member has shown itself to be an upstream node (no dref extensions)."""
        return any(kind is PeerKind.UPSTREAM for kind in self.core.peer_kinds.values())

    def get_local(self, name: str) -> bytes | None:
        """The value in this node's state machine (expiry by this node's wall clock)."""
        return self.machine.get(name, self.wall_ms())

    async def wait_for_leader(self, timeout: float) -> str | None:
        """The leader id, waiting up to `timeout` seconds for one to be known."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.leader_id is None and not self._closed:
            left = deadline - loop.time()
            if left <= 0:
                break
            event = self._leader_changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await event.wait()
        return self.leader_id

    async def step_down(self) -> bool:
        """Give up leadership (`RaftCore.step_down`); False if this node was not the leader.

        Proposals and reads are refused from then on; another member is elected within about
        two election timeouts (this one holds back its own campaign for one).
        """
        self._check_open()
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def go() -> None:
            if not future.done():
                future.set_result(self.core.step_down())

        self._submit(go)
        return await future

    # ------------------------------------------------------------------ membership

    def members_view(self) -> MembersView:
        """The configuration in force as this node sees it (match seqs: the leader's view)."""
        core = self.core
        m = self._addressed(core.membership)
        addresses = dict(m.addresses)
        rows = []
        for node_id in m.members:
            pr = core.progress(node_id)
            match = core.log.last_seq if node_id == self.id else (pr.match_seq if pr else 0)
            rows.append(MemberInfo(node_id, addresses.get(node_id, ""), node_id in m.voters, match))
        return MembersView(
            tuple(rows),
            core.config_seq,
            core.commit >= core.config_seq,
            core.leader_id or "",
            core.log.last_seq,
        )

    def _addressed(self, m: Membership) -> Membership:
        """`m` with an address for every member this node knows one of."""
        known = {**self.peers, self.id: self.config.address, **dict(m.addresses)}
        return Membership(
            m.voters,
            m.learners,
            tuple(sorted((i, a) for i, a in known.items() if a and i in m.members)),
        )

    async def change_membership(
        self, change: Callable[[Membership], Membership | None], timeout: float
    ) -> MembersView:
        """Propose `change(current configuration)` (None: nothing to change) on this node, the
        leader, and return once it is committed and applied here.

        A refusal that may pass later (the previous change is not committed yet) is retried
        every 50 ms until `timeout`. `NotLeaderError`/`NoLeaderError`: not the leader (nothing
        proposed); `MembershipError`: refused (why); `BackendTimeoutError`: not applied within
        `timeout` (outcome unknown).
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            future: asyncio.Future[tuple[int, ApplyResult]] = loop.create_future()
            refused: list[ConfigRefused] = []

            def go(
                future: asyncio.Future[tuple[int, ApplyResult]] = future,
                refused: list[ConfigRefused] = refused,
            ) -> None:
                if future.done():
                    return
                try:
                    new = change(self.core.membership)
                except MembershipError as exc:
                    future.set_exception(exc)
                    return
                if new is None:
                    future.set_result((0, ApplyResult()))
                    return
                result = self.core.propose_membership(self._addressed(new))
                if isinstance(result, NotLeader):
                    future.set_exception(_not_leader(result.leader_id))
                elif isinstance(result, ConfigRefused):
                    refused.append(result)
                    future.set_result((0, ApplyResult()))
                else:
                    self._pending[result.first_seq] = _Pending(result.term, future)

            self._submit(go)
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(future)
                if not refused:
                    return self.members_view()
            except TimeoutError:
                raise BackendTimeoutError(
                    f"node {self.id}: membership change not applied within {timeout:g} s "
                    "(outcome unknown: see `dref raft member list`)"
                ) from None
            finally:
                if not future.done():
                    future.cancel()
            if not refused[0].retriable or loop.time() + 0.05 >= deadline:
                raise MembershipError(refused[0].reason)
            await asyncio.sleep(0.05)

    async def transfer_leadership(self, target: str | None, timeout: float) -> str:
        """Hand leadership to `target` (None: the most up-to-date voter); the new leader.

        Proposals get `NotLeaderError(target)` meanwhile (retried by callers). The core gives
        up after one election timeout and this node leads on: then `BackendTimeoutError`.
        `MembershipError`: refused (not a voter, not a dref node); not-leader errors as usual.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        started: asyncio.Future[str] = loop.create_future()

        def go() -> None:
            if started.done():
                return
            result = self.core.transfer_leadership(target)
            if isinstance(result, NotLeader):
                started.set_exception(_not_leader(result.leader_id))
            elif isinstance(result, ConfigRefused):
                started.set_exception(MembershipError(result.reason))
            else:
                started.set_result(result)

        self._submit(go)
        chosen = await started
        deadline = loop.time() + timeout
        while self.is_leader and self.core.transfer_target == chosen:
            event = self._leader_changed
            left = deadline - loop.time()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, self._tick)):
                    await event.wait()
        if self.is_leader:
            raise BackendTimeoutError(
                f"node {self.id}: {chosen} did not take over leadership (gave up after one "
                "election timeout); this node still leads"
            )
        leader = await self.wait_for_leader(max(0.0, deadline - loop.time()))
        return leader or chosen

    # ------------------------------------------------------------------ operations

    async def propose(self, command: Command, timeout: float) -> tuple[int, ApplyResult]:
        """Replicate `command`; its seq and apply result once applied on this node.

        `NotLeaderError`: refused, or its entry was replaced (certainly not applied).
        `BackendTimeoutError`: not known to be applied within `timeout` (outcome unknown).
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        slots = self._slots
        if slots.locked():
            try:
                async with asyncio.timeout_at(deadline):
                    await slots.acquire()
            except TimeoutError:
                raise BackendTimeoutError(
                    f"node {self.id}: {self.config.max_pending} proposals in flight"
                ) from None
        else:
            await slots.acquire()  # free: returns at once
        future: asyncio.Future[tuple[int, ApplyResult]] = loop.create_future()
        # The caller awaits `future` itself and a plain timer fails it at the deadline: no
        # `shield` or `timeout` in between, whose callbacks would cost the write another loop
        # turn before its caller runs (a cancelled caller cancels `future`, as `finally` would).
        # (`TimeoutError`: no proposal's future is ever failed with one otherwise.)
        timer = loop.call_at(deadline, _fail, future, TimeoutError())
        try:

            def go() -> None:
                if future.done():
                    return
                result = self.core.propose([command])
                if isinstance(result, NotLeader):
                    future.set_exception(_not_leader(result.leader_id))
                else:
                    self._pending[result.first_seq] = _Pending(result.term, future)

            self._submit(go)
            try:
                return await future
            except TimeoutError:
                raise BackendTimeoutError(
                    f"node {self.id}: {type(command).__name__} not applied within "
                    f"{timeout:g} s (outcome unknown)"
                ) from None
        finally:
            timer.cancel()
            if not future.done():
                future.cancel()
            slots.release()

    async def read_barrier(self, timeout: float) -> None:
        """Return once every write committed before the call is applied here (leader only).

        Callers that arrive before the driver makes the next ReadIndex request share it (one
        quorum round and one request for every read waiting); `QuorumLostError` after
        `timeout` s."""
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        batch = self._read_batch
        if batch is None:
            batch = self._read_batch = _ReadBatch()
            self._submit(functools.partial(self._request_read, batch))
        batch.futures.append(future)
        timer = loop.call_later(timeout, _quorum_not_confirmed, future, self.id, timeout)
        try:
            await future
        finally:
            timer.cancel()
            if not future.done():
                future.cancel()
            failed = future.cancelled() or future.exception() is not None
            if failed and batch.request_id and batch.abandoned():
                self._reads.pop(batch.request_id, None)  # nobody waits for its answer

    def _request_read(self, batch: _ReadBatch) -> None:
        """On the driver's turn: the ReadIndex request of `batch` (callers from now on wait for
        the next one)."""
        if self._read_batch is batch:
            self._read_batch = None
        if batch.abandoned():
            return
        self._read_ids += 1
        result = self.core.read_index(self._read_ids)
        if isinstance(result, NotLeader):
            batch.settle(_not_leader(result.leader_id))
        else:
            batch.request_id = self._read_ids
            self._reads[self._read_ids] = batch

    def acknowledged(self, seq: int) -> None:
        """An operation forwarded from this process returned with the leader's applied `seq`:
        a subscription opened here from now on starts after it (`acknowledged_seq`)."""
        if seq > self.acknowledged_seq:
            self.acknowledged_seq = seq

    async def wait_applied(self, seq: int, timeout: float) -> bool:
        """Wait until every entry through `seq` is applied here; False if `timeout` ran out
        first (on a follower: until the leader's commit reached it)."""
        self._check_open()
        if seq <= self.core.applied:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        item = (seq, next(self._waiter_ids), future)
        heapq.heappush(self._applied_waiters, item)
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            return False
        finally:
            if not future.done():
                future.cancel()
                self._applied_waiters.remove(item)
                heapq.heapify(self._applied_waiters)
        return True

    def _wake_applied(self) -> None:
        waiters, applied = self._applied_waiters, self.core.applied
        while waiters and waiters[0][0] <= applied:
            _, _, future = heapq.heappop(waiters)
            if not future.done():
                future.set_result(None)

    def watch_created(self, name: str, value: bytes) -> asyncio.Future[int]:
        """A future of the seq at which `SetIfNotExist(name, value)` creates the element here."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._created[(name, value)] = future
        future.add_done_callback(lambda _: self._forget_created(name, value, future))
        return future

    def _forget_created(self, name: str, value: bytes, future: asyncio.Future[int]) -> None:
        if self._created.get((name, value)) is future:
            del self._created[(name, value)]

    def log_fields(self, element: str | None = None) -> dict[str, object]:
        """`extra=` of this node's log records: `dref_node`, `dref_term` (and `dref_element`)."""
        fields: dict[str, object] = {"dref_node": self.id, "dref_term": self.core.term}
        if element is not None:
            fields["dref_element"] = element
        return fields

    # ------------------------------------------------------------------ transport side

    async def handle(self, request: Request) -> Response:
        """`ConsensusHandler`: step `request` into the core, answer with the core's response."""
        self._check_open()
        if (
            request.sender not in self.peers
            and request.sender not in self.core.membership.members
            and request.sender != self.core.leader_id
            and request.sender not in self._strangers
            and len(self._strangers) < _MAX_STRANGERS_LOGGED
        ):
            self._strangers.add(request.sender)
            logger.warning(
                "node %s: %s from %r refused: not a member of this cluster (members: %s)",
                self.id,
                type(request).__name__,
                request.sender,
                ", ".join(sorted(self.peers)),
                extra=self.log_fields(),
            )
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        key = (request.sender, _REPLY_TYPE[type(request)])

        def go() -> None:
            if future.done():
                return
            if isinstance(request, InstallSnapshot):
                replaced = [self.core.log.snapshot.data]
                self.core.step(request)
                self.release_replaced(replaced)
            else:
                self.core.step(request)
            if request.sender == self.core.leader_id:
                self._leader_contact = time.monotonic()
            self._replies.setdefault(key, deque()).append(future)
            self._unanswered.append((key, future))

        self._submit(go)
        return await future

    # ------------------------------------------------------------------ driver

    def _submit(self, fn: Callable[[], None]) -> None:
        self._inputs.append(fn)
        self._wake.set()

    def _check_open(self) -> None:
        if self.failure is not None:
            raise ConsensusError(f"raft node {self.id} failed: {self.failure}") from self.failure
        if self._closed:
            raise ClosedError(f"raft node {self.id} is stopped")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self._tick
        try:
            while True:
                if not self._inputs:
                    delay = next_tick - loop.time()
                    if delay > 0:
                        self._wake.clear()
                        timer = loop.call_later(delay, self._wake.set)
                        try:
                            await self._wake.wait()
                        finally:
                            timer.cancel()
                now = loop.time()
                if now >= next_tick:
                    self.core.tick()
                    next_tick = max(next_tick + self._tick, now)
                for _ in range(_MAX_INPUTS_PER_TURN):
                    if not self._inputs:
                        break
                    self._inputs.popleft()()
                if self._offered is not None:
                    offered, self._offered = self._offered, None
                    self.core.offer_snapshot(offered.last_seq, offered)
                    del offered
                if self._offering is None and self.core.wants_snapshot:
                    # An upstream peer needs the state machine: a point-in-time copy now
                    # (nothing applied meanwhile), built in a worker thread, offered later.
                    state = await self._copy_state()
                    seq = self.core.applied
                    self._offering = asyncio.create_task(
                        self._offer_snapshot(state, seq, self.core.log.term_at(seq) or 0)
                    )
                    self.track(self._offering)
                    del state
                applier = self._applier
                while (ready := applier.next_ready()) is not None:
                    applier.send_early(ready)
                    if applier.must_persist(ready):
                        # Encoded here: the worker thread only writes and syncs (no GIL needed).
                        records = log_records(ready)
                        await self._disk.run(functools.partial(applier.persist, ready, records))
                    else:
                        applier.persist(ready)  # at most a commit seq: no fsync
                    applier.carry_out(ready)
                    self._wake_applied()
                self._fail_unanswered()
                if self._compacted is not None:
                    await self._compact_log()
                if self._compaction is None and (point := applier.compaction_due()) is not None:
                    # A point-in-time copy now (nothing applied meanwhile); sorted, encoded
                    # and saved in a worker thread. The snapshot it replaces is meanwhile
                    # held in its file, not in memory.
                    await self.snapshots.hold_in_file()
                    copy = await (
                        self._copy_names() if self.snapshots.holds_in_files else self._copy_state()
                    )
                    task = asyncio.create_task(self._compact(*point, copy))
                    self._compaction = task  # not cancelled by `aclose`: awaited
                if self._copies:
                    await self._serve_copies()
                if self._holds:
                    await self._serve_holds()
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            logger.exception(
                "raft node %s failed; it stops serving", self.id, extra=self.log_fields()
            )
            self.failure = exc
            self._fail_all(ConsensusError(f"raft node {self.id} failed: {exc}"))
            self.hub.close(ConsensusError(f"raft node {self.id} failed: {exc}"))

    async def _offer_snapshot(self, state: StateCopy, seq: int, term: int) -> None:
        """Build the snapshot at `seq` an upstream peer waits for from `state` (a copy) in a
        worker thread; the driver offers it to the core (`_offered`)."""
        try:
            self._offered = await asyncio.to_thread(snapshot_of_state, state, seq, term)
        except Exception:  # the core still wants one: the driver tries again, a second later
            logger.exception(
                "node %s: building a snapshot at seq %d for an upstream peer failed",
                self.id,
                seq,
                extra=self.log_fields(),
            )
            await asyncio.sleep(_OFFER_RETRY)
        finally:
            self._offering = None
        self._wake.set()

    async def _compact_log(self) -> None:
        """Compact the core and the stored log to the snapshot `_compact` took and saved (a
        method: no frame of the driver's loop keeps that snapshot alive once it is replaced)."""
        data, self._compacted = self._compacted, None
        assert data is not None
        replaced = [self.core.log.snapshot.data]
        config = self.config
        keep = min(config.catch_up_entries, config.snapshot_every)
        self.core.compact(data.last_seq, data, keep=keep)
        self.release_replaced(replaced)
        if self.core.log.snapshot.data is not data:  # older than the core's: not used
            self.release_replaced([data])
        writer = self._applier.writer
        if writer.stores is not None:
            await self._disk.run(functools.partial(writer.drop_log_through, data.last_seq))

    async def _copy_state(self) -> StateCopy:
        """The state machine's `StateCopy`, a slice at a time with the event loop running in
        between (the driver awaits it: nothing is applied meanwhile)."""
        return await _copied(self.machine.copy_state_in_slices())

    async def _copy_names(self) -> NamesCopy:
        """The state machine's `NamesCopy` (its values copied on write), as `_copy_state`."""
        return await _copied(self.machine.copy_names_in_slices())

    def release_replaced(self, box: list[ClusterSnapshot]) -> None:
        """The core's previous snapshot (in `box`), if a compaction, an install or
        `SnapshotTransfer.hold_in_file` replaced it, is freed in a worker thread a tuple of
        names or values at a time (`release_snapshot`): dropped here, its million-item tuples
        would go in one C call each on the loop. One held in its file: the file is removed."""
        replaced = box[0]
        if replaced is self.core.log.snapshot.data:
            box.clear()
        elif isinstance(replaced.entries, FileEntries):
            box.clear()
            path = replaced.entries.path
            self.track(asyncio.create_task(asyncio.to_thread(path.unlink, missing_ok=True)))
        else:
            del replaced
            self.track(asyncio.create_task(asyncio.to_thread(release_snapshot, box)))

    async def hold_snapshot_in_file(self) -> None:
        """`SnapshotTransfer.hold_in_file`, done by the driver between two of its turns (the
        core is not in the middle of a `Ready` then)."""
        self._check_open()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._holds.append(future)
        self._wake.set()
        await future

    async def _serve_holds(self) -> None:
        await self.snapshots.hold_in_file()
        holds, self._holds = self._holds, []
        for future in holds:
            if not future.done():
                future.set_result(None)

    async def copy_state_at_applied(self) -> tuple[StateCopy, int, int]:
        """A `StateCopy` of the state machine at `applied`, that seq and its term: copied by
        the driver between two of its turns, a slice at a time (`_copy_state`), so that the
        copy is consistent and the event loop runs meanwhile (`dref raft snapshot save`)."""
        self._check_open()
        future: asyncio.Future[tuple[StateCopy, int, int]] = (
            asyncio.get_running_loop().create_future()
        )
        self._copies.append(future)
        self._wake.set()
        return await future

    async def _serve_copies(self) -> None:
        """Answer the waiting `copy_state_at_applied` callers (the driver: nothing applied);
        each stays in `_copies` until answered, for `_fail_all` should the driver stop."""
        while self._copies:
            future = self._copies[0]
            if not future.done():  # else the caller gave up
                state = await self._copy_state()
                applied = self.core.applied
                if not future.done():
                    future.set_result((state, applied, self.core.log.term_at(applied) or 0))
            if self._copies and self._copies[0] is future:  # not failed meanwhile
                self._copies.pop(0)

    async def _compact(self, seq: int, term: int, copy: StateCopy | NamesCopy) -> None:
        """Take the snapshot at `seq` from `copy` and save it, off the event loop; the driver
        then compacts the log (`_compacted`)."""
        started = time.perf_counter()
        stores = self._applier.writer.stores
        store = stores.snapshot if stores is not None else None
        try:
            if isinstance(copy, NamesCopy):
                # Written straight from the copy into a file that holds it: never in memory.
                assert isinstance(store, MonotonicSnapshotStore)
                data = ClusterSnapshot(
                    FileEntries(self.snapshots.held_path(seq), len(copy)),
                    seq,
                    term,
                    copy.membership,
                    copy.sessions,
                    copy.lines,
                )
                parts = encode_names_parts(copy, seq, term)
                size = await asyncio.to_thread(store.save_written, parts, data)
            else:
                data = await asyncio.to_thread(snapshot_of_state, copy, seq, term)
                size = await asyncio.to_thread(store.save, data) if store is not None else 0
        except SnapshotAbandonedError as exc:  # an install brought a newer snapshot
            logger.debug("node %s: snapshot at seq %d given up: %s", self.id, seq, exc)
            return
        except Exception:  # a full disk...: the log stays as it is, the next one retries
            logger.exception(
                "node %s: taking a snapshot at seq %d failed", self.id, seq, extra=self.log_fields()
            )
            return
        finally:
            self._compaction = None
            if isinstance(copy, NamesCopy):
                self.machine.end_copy_on_write(copy.cow)
        self._compacted = data
        self._wake.set()
        stats = self.stats
        stats.snapshots += 1
        stats.snapshot_seconds += time.perf_counter() - started
        stats.snapshot_entries = len(data.entries)
        stats.snapshot_bytes = size

    # ------------------------------------------------------------------ ReadyEffects

    def snapshot_installed(self, snapshot: Snapshot, changes: Sequence[Changed]) -> None:
        retired = self.machine.retired
        if retired:  # the replaced state: freed a slice at a time off the event loop
            self.machine.retired = []
            self.track(asyncio.create_task(asyncio.to_thread(release_in_slices, retired)))
        hub = self.hub
        if hub.subscriber_count():  # a million-element install: skip the loop when nobody listens
            seq = snapshot.seq
            hub.publish_all(ChangeEvent(c.name, c.value, seq) for c in changes if hub.wants(c.name))
        self._report_applied(snapshot.seq, changes)
        self.turns.installed()
        for seq in [s for s in self._pending if s <= snapshot.seq]:
            _fail(
                self._pending.pop(seq).future,
                ConsensusError(
                    f"node {self.id}: entry {seq} was overtaken by a snapshot (outcome unknown)"
                ),
            )

    def entries_truncated(self, from_seq: int) -> None:
        for seq in [s for s in self._pending if s >= from_seq]:
            _fail(self._pending.pop(seq).future, _not_leader(self.core.leader_id))

    def send(self, messages: Sequence[Message]) -> None:
        for msg in messages:
            self._dispatch(msg)

    def entry_applied(self, entry: Entry, result: ApplyResult) -> None:
        command, seq = entry.command, entry.seq
        if isinstance(command, SessionCommand):
            command = command.command
        for change in result.events:
            self.hub.publish(ChangeEvent(change.name, change.value, seq))
        self._report_applied(seq, result.events)
        if result.turns:
            self.turns.applied(result.turns)
        if result.created and isinstance(command, SetIfNotExist | CompareAndSet | FairSwap):
            watcher = self._created.get((command.name, command.value))
            if watcher is not None and not watcher.done():
                watcher.set_result(seq)
        pending = self._pending.pop(seq, None)
        if pending is not None and not pending.future.done():
            if pending.term == entry.term:
                pending.future.set_result((seq, result))
            else:
                pending.future.set_exception(_not_leader(self.core.leader_id))

    def read_done(self, request_id: int, ok: bool) -> None:
        batch = self._reads.pop(request_id, None)
        if batch is not None:
            batch.settle(None if ok else _not_leader(self.core.leader_id))

    def role_changed(self, soft: SoftState) -> None:
        # A leader of term T campaigned in T, though a quick win may skip reporting CANDIDATE.
        if soft.role in _CAMPAIGNING and soft.term != self._election_term:
            self._election_term = soft.term
            self.stats.elections += 1
        self._leader_changed.set()
        self._leader_changed = asyncio.Event()
        logger.debug(
            "node %s: %s in term %s (leader %s)",
            self.id,
            soft.role.value,
            soft.term,
            soft.leader_id,
            extra=self.log_fields(),
        )

    def _report_applied(self, seq: int, changes: Sequence[Changed]) -> None:
        for batch_listener in self.on_applied_batch:
            batch_listener(seq, changes)
        for listener in self.on_applied:
            for change in changes:
                listener(seq, change.name, change.value)

    def _dispatch(self, msg: Message) -> None:
        if not isinstance(msg, _REQUESTS):
            waiting = self._replies.get((msg.to, type(msg)))
            while waiting:
                future = waiting.popleft()
                if not future.done():
                    future.set_result(msg)
                    break
            return
        peer = msg.to
        address = self.core.membership.address_of(peer) or self.peers.get(peer)
        if address is None:
            return
        if isinstance(msg, InstallSnapshot) and self.snapshots.ship(peer, address, msg):
            return
        if self._inflight.get(peer, 0) >= _MAX_INFLIGHT_PER_PEER:
            return
        self._inflight[peer] = self._inflight.get(peer, 0) + 1
        task = asyncio.create_task(self._call(peer, address, msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, peer: str, address: str, msg: Request) -> None:
        try:
            response = await self._transport.call(address, msg, self.config.rpc_timeout)
        except (DRefError, OSError) as exc:
            logger.debug("node %s → %s: %s", self.id, peer, exc, extra=self.log_fields())
            return
        finally:
            self._inflight[peer] -= 1
        self._submit(lambda: self.core.step(response))

    def _fail_unanswered(self) -> None:
        for key, future in self._unanswered:
            if not future.done():
                future.set_exception(ConsensusError(f"node {self.id} has no answer to that"))
            waiting = self._replies.get(key)
            if waiting is not None:
                with contextlib.suppress(ValueError):
                    waiting.remove(future)
                if not waiting:
                    del self._replies[key]
        self._unanswered.clear()

    async def _reap(self) -> None:
        """As leader, propose `DeleteIfExpired` for every element past its expiry
        (docs/protocol.md#ttl-expiry)."""
        while True:
            await asyncio.sleep(self.config.reaper_interval)
            if not self.is_leader or self.failure is not None:
                continue
            now = self.wall_ms()
            for name in await self._expired(now):
                self._reaping.add(name)
                task = asyncio.create_task(self._reap_one(name, now))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _expired(self, now: int) -> list[str]:
        """Up to `_MAX_REAP` names past their expiry at `now` and not being reaped, scanned a
        slice at a time (only the elements that have a TTL; many would stall the event loop)."""
        expiries = self.machine.expiries()
        names = list(expiries)  # one C-level copy of the keys
        due: list[str] = []
        for start in range(0, len(names), _REAP_SCAN_SLICE):
            for name in names[start : start + _REAP_SCAN_SLICE]:
                expire_at = expiries.get(name)
                if expire_at is not None and expire_at <= now and name not in self._reaping:
                    due.append(name)
            if len(due) >= _MAX_REAP:
                break
            if start + _REAP_SCAN_SLICE < len(names):
                await asyncio.sleep(0)
        return due[:_MAX_REAP]

    async def _reap_one(self, name: str, now: int) -> None:
        try:
            await self.propose(DeleteIfExpired(name, now), self.config.election_timeout * 4)
        except BackendError as exc:
            logger.debug("node %s: reaping %s: %s", self.id, name, exc, extra=self.log_fields(name))
        finally:
            self._reaping.discard(name)

    def _fail_all(self, error: BaseException) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)
        self._pending.clear()
        for batch in self._reads.values():
            batch.settle(error)
        self._reads.clear()
        if self._read_batch is not None:
            self._read_batch.settle(error)
            self._read_batch = None
        for _, _, future in self._applied_waiters:
            if not future.done():
                future.set_exception(error)
        self._applied_waiters.clear()
        for waiting in self._replies.values():
            for reply in waiting:
                if not reply.done():
                    reply.set_exception(error)
        self._replies.clear()
        for created in self._created.values():
            if not created.done():
                created.set_exception(error)
        self.turns.close()
        self._inputs.clear()
        for copy in self._copies:
            _fail(copy, error)
        self._copies.clear()
        for hold in self._holds:
            _fail(hold, error)
        self._holds.clear()


async def _copied(steps: Generator[None, None, _Copy]) -> _Copy:
    """Run a state machine's copy in slices (`copy_state_in_slices`, `copy_names_in_slices`)
    with the event loop running between the slices; the copy."""
    # The copy's lists grow to a million references while the loop runs: a collection
    # meanwhile (or the first one after) would walk them all, the GIL held (`bulk`).
    with paused_gc():
        while True:
            try:
                next(steps)
            except StopIteration as done:
                copy: _Copy = done.value
                if len(copy) >= FREEZE_AFTER:
                    built_large()
                return copy
            await asyncio.sleep(0)


def _fail(future: asyncio.Future[_T], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def not_leader_error(leader_id: str | None) -> ConsensusError:
    """`NotLeaderError` with the hint, or `NoLeaderError` when no leader is known."""
    return NotLeaderError(leader_id) if leader_id is not None else NoLeaderError()


_not_leader = not_leader_error
