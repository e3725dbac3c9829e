"""A simulated node: a core driven exactly as the driver contract says, over `SimStorage`."""

from __future__ import annotations

import random
from collections.abc import Callable

from dref_raft.core import CoreConfig, Entry, Message, RaftCore, Ready, Role
from dref_raft.fsm import ApplyResult, StateMachine
from dref_raft.simulation.invariants import Invariants
from dref_raft.simulation.storage import SimStorage

__all__ = ["SimNode"]

ApplyHook = Callable[[str, Entry, ApplyResult], None]
ReadHook = Callable[[str, int, bool], None]
TraceHook = Callable[[str], None]


class SimNode:
    """One node; `core` is None while it is crashed. Storage survives crashes."""

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
    ) -> None:
        self.id = node_id
        self.peers = peers
        self.config = config
        self.seed = seed
        self.invariants = invariants
        self.snapshot_every = snapshot_every
        self.on_apply = on_apply
        self.on_read = on_read
        self.trace = trace
        self.storage = SimStorage()
        self.machine = StateMachine()
        self.incarnation = 0
        self.applies_since_snapshot = 0
        self.core: RaftCore | None = None
        self.start()

    def start(self) -> None:
        """Boot (or reboot) from what was persisted."""
        state, machine = self.storage.recover()
        self.invariants.check_recovered(self.id, state.commit, machine)
        self.machine = machine
        self.incarnation += 1
        rng = random.Random(f"{self.seed}/{self.id}/{self.incarnation}")
        self.core = RaftCore(self.id, self.peers, rng=rng, config=self.config, state=state)
        self.applies_since_snapshot = 0

    def crash(self) -> None:
        """Lose everything not persisted."""
        self.core = None

    @property
    def up(self) -> bool:
        """Whether the node is running."""
        return self.core is not None

    def drain(self, outbox: list[Message]) -> None:
        """Process every `Ready`: persist, send, apply, serve reads, advance; then compact."""
        core = self.core
        assert core is not None
        while core.has_ready() or core.wants_snapshot:
            if core.wants_snapshot:
                core.offer_snapshot(core.applied, self.machine.snapshot(core.applied))
                continue
            ready = core.ready()
            self.storage.persist(ready)
            if ready.entries:
                self.invariants.check_entries(core, ready.entries)
            outbox.extend(ready.messages)
            if ready.snapshot is not None:
                self.machine.install(ready.snapshot.data)
            for entry in ready.committed:
                self.invariants.check_apply(self.id, entry)
                result = self.machine.apply(entry.command)
                self.applies_since_snapshot += 1
                self.on_apply(self.id, entry, result)
            for read in ready.reads:
                self.on_read(self.id, read.request_id, True)
            for request_id in ready.dropped_reads:
                self.on_read(self.id, request_id, False)
            if self.trace is not None:
                self._trace(ready)
            core.advance(ready)
            if core.role is Role.LEADER:
                self.invariants.check_leader(core)
            if self.snapshot_every and self.applies_since_snapshot >= self.snapshot_every:
                self.applies_since_snapshot = 0
                self._snapshot(core)

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

    def _snapshot(self, core: RaftCore) -> None:
        data = self.machine.snapshot(core.applied)
        core.compact(core.applied, data)
        self.storage.snapshot = core.log.snapshot
        self.storage.drop_through(core.applied)
