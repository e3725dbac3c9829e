"""A simulated node: production's `ReadyApplier` and boot over the in-memory twins of the stores.

Every `Ready` is carried out by `dref_raft.apply.ReadyApplier`, exactly as a member does; the
stores are `dref_raft.storage.in_memory_stores()` (the real encoders and decoders, bytes in
memory), and a restart boots through `dref_raft.storage.recovery.boot`. So what the simulation
checks is the code a member runs, minus asyncio and sockets.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from dref_raft.apply import ReadyApplier, StoreWriter
from dref_raft.core import CoreConfig, Entry, Message, RaftCore, Ready, Role, Snapshot, SoftState
from dref_raft.fsm import ApplyResult, Changed, StateMachine
from dref_raft.simulation.invariants import Invariants
from dref_raft.storage import in_memory_stores
from dref_raft.storage.recovery import boot

__all__ = ["SimNode"]

ApplyHook = Callable[[str, Entry, ApplyResult], None]
ReadHook = Callable[[str, int, bool], None]
TraceHook = Callable[[str], None]


class SimNode:
    """One node; `core` is None while it is crashed. Its stores survive crashes."""

    def __init__(
        self,
        node_id: str,
        peers: list[str],
        config: CoreConfig,
        seed: int,
        invariants: Invariants,
        *,
        snapshot_every: int,
        on_apply: ApplyHook,
        on_read: ReadHook,
        trace: TraceHook | None = None,
        joining: bool = False,
        catch_up_entries: int = 0,
    ) -> None:
        self.id = node_id
        self.catch_up_entries = catch_up_entries
        #: Started to join a running cluster: it learns its configuration from the leader.
        self.joining = joining
        self.peers = peers
        self.config = config
        self.seed = seed
        self.invariants = invariants
        self.snapshot_every = snapshot_every
        self.on_apply = on_apply
        self.on_read = on_read
        self.trace = trace
        self.stores = in_memory_stores()
        self.machine = StateMachine()
        self.incarnation = 0
        self.core: RaftCore | None = None
        self._applier: ReadyApplier | None = None
        self._outbox: list[Message] = []
        self.start()

    def start(self) -> None:
        """Boot (or reboot) from what was persisted."""
        machine, state = boot(self.stores)
        self.invariants.check_recovered(self.id, state.commit, machine)
        self.machine = machine
        self.incarnation += 1
        rng = random.Random(f"{self.seed}/{self.id}/{self.incarnation}")
        core = RaftCore(
            self.id, self.peers, rng=rng, config=self.config, state=state, joining=self.joining
        )
        writer = StoreWriter(self.stores, term=state.term, vote=state.vote, commit=state.commit)
        self._applier = ReadyApplier(
            core,
            machine,
            writer,
            self,
            snapshot_every=self.snapshot_every,
            catch_up_entries=self.catch_up_entries,
        )
        self.core = core

    def crash(self) -> None:
        """Lose everything not persisted."""
        self.core = None
        self._applier = None

    @property
    def up(self) -> bool:
        """Whether the node is running."""
        return self.core is not None

    def drain(
        self, outbox: list[Message], crash_in_persist: Callable[[Ready], bool] | None = None
    ) -> bool:
        """Carry out every `Ready` (the messages go to `outbox`), taking snapshots as due.

        `crash_in_persist(ready)` True crashes the node after step 0 (its early messages are
        out) and before its persist of `ready`: False is returned, the node is down.
        """
        core, applier = self.core, self._applier
        assert core is not None
        assert applier is not None
        self._outbox = outbox
        while (ready := applier.next_ready()) is not None:
            applier.send_early(ready)
            if ready.entries:
                self.invariants.check_entries(core, ready.entries)
            if crash_in_persist is not None and crash_in_persist(ready):
                if core.role is Role.LEADER:
                    self.invariants.check_leader(core)  # its early messages name it leader
                self.crash()
                return False
            applier.persist(ready)
            applier.carry_out(ready)
            if self.trace is not None:
                self._trace(ready)
            if core.role is Role.LEADER:
                self.invariants.check_leader(core)
            else:
                self.invariants.check_known_leader(core)
            snapshot = applier.compact_due()
            if snapshot is not None:
                applier.writer.save_snapshot(snapshot)
        return True

    # ---------------------------------------------------------------- ReadyEffects

    def snapshot_installed(self, snapshot: Snapshot, changes: Sequence[Changed]) -> None:
        """Nothing waits on a snapshot in the simulation."""

    def entries_truncated(self, from_seq: int) -> None:
        """Clients notice a replaced entry when another one applies at its seq."""

    def send(self, messages: Sequence[Message]) -> None:
        self._outbox.extend(messages)

    def entry_applied(self, entry: Entry, result: ApplyResult) -> None:
        self.invariants.check_apply(self.id, entry)
        self.on_apply(self.id, entry, result)

    def read_done(self, request_id: int, ok: bool) -> None:
        self.on_read(self.id, request_id, ok)

    def role_changed(self, soft: SoftState) -> None:
        """Roles are traced from the `Ready` itself."""

    def _trace(self, ready: Ready) -> None:
        assert self.trace is not None
        if ready.soft_state is not None:
            s = ready.soft_state
            self.trace(f"{self.id} is {s.role.value} in term {s.term} (leader {s.leader_id})")
        if ready.snapshot is not None:
            self.trace(f"{self.id} installs snapshot at {ready.snapshot.seq}")
        if ready.truncate_from is not None:
            self.trace(f"{self.id} truncates its log from {ready.truncate_from}")
        if ready.committed:
            first, last = ready.committed[0].seq, ready.committed[-1].seq
            self.trace(f"{self.id} applies {first}..{last}")
