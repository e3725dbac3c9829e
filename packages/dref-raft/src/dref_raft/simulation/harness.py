"""A scripted, in-memory cluster of cores for interaction tests (no faults unless asked).

Messages are kept in a list so tests can inspect, drop or reorder them before delivery;
`stabilize()` delivers until nothing is left. Every `Ready` goes through the same
`dref_raft.apply.ReadyApplier` as a member's (with nothing persisted: memory only, and no
automatic snapshots, so tests compact when they choose).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence

from dref_raft.apply import ReadyApplier, StoreWriter
from dref_raft.core import (
    CoreConfig,
    CoreState,
    Entry,
    Message,
    RaftCore,
    ReadState,
    Ready,
    Snapshot,
    SoftState,
)
from dref_raft.fsm import ApplyResult, Changed, StateMachine

__all__ = ["Harness"]


class Harness:
    """Cores by id, the messages in flight, each node's applied entries and served reads."""

    def __init__(
        self,
        ids: Iterable[str],
        *,
        config: CoreConfig | None = None,
        seed: int = 0,
        states: dict[str, CoreState] | None = None,
        joining: Iterable[str] = (),
    ) -> None:
        self.ids = list(ids)
        self.config = config or CoreConfig()
        #: Nodes started to join later (`RaftCore(joining=True)`): not in the others' voters.
        joiners = set(joining)
        voters = [i for i in self.ids if i not in joiners]
        self.cores = {
            i: RaftCore(
                i,
                voters,
                rng=random.Random(f"{seed}/{i}"),
                config=self.config,
                state=(states or {}).get(i),
                joining=i in joiners,
            )
            for i in self.ids
        }
        self.machines = {i: StateMachine() for i in self.ids}
        self.applied: dict[str, list[Entry]] = {i: [] for i in self.ids}
        self.reads: dict[str, list[ReadState]] = {i: [] for i in self.ids}
        self.dropped_reads: dict[str, list[int]] = {i: [] for i in self.ids}
        self.readies: dict[str, list[Ready]] = {i: [] for i in self.ids}
        self.inflight: list[Message] = []
        self.down: set[str] = set()
        self._appliers: dict[str, ReadyApplier] = {}

    def drain(self, node: str) -> None:
        """Carry out every `Ready` of `node`, recording it and the reads it serves."""
        applier = self._applier(node)
        while (ready := applier.next_ready()) is not None:
            self.readies[node].append(ready)
            self.reads[node].extend(ready.reads)
            applier.handle(ready)

    def _applier(self, node: str) -> ReadyApplier:
        """The applier of `node`'s current core (a test may replace a core to restart it)."""
        core = self.cores[node]
        applier = self._appliers.get(node)
        if applier is None or applier.core is not core:
            writer = StoreWriter(None, term=core.term, vote=core.vote, commit=core.commit)
            effects = _Effects(self, node)
            applier = ReadyApplier(core, self.machines[node], writer, effects, snapshot_every=0)
            self._appliers[node] = applier
        return applier

    def drain_all(self) -> None:
        """Drain every node."""
        for node in self.ids:
            self.drain(node)

    def take(self, keep: Callable[[Message], bool] = lambda m: True) -> list[Message]:
        """Remove and return the messages in flight that `keep` selects."""
        taken = [m for m in self.inflight if keep(m)]
        self.inflight = [m for m in self.inflight if not keep(m)]
        return taken

    def deliver(self, msg: Message) -> None:
        """Step one message into its receiver (dropped if either end is down)."""
        if msg.to in self.down or msg.sender in self.down or msg.to not in self.cores:
            return
        self.cores[msg.to].step(msg)
        self.drain(msg.to)

    def stabilize(self, limit: int = 10_000) -> None:
        """Deliver messages until none are left."""
        self.drain_all()
        for _ in range(limit):
            if not self.inflight:
                return
            self.deliver(self.inflight.pop(0))
        raise AssertionError("messages did not settle")

    def tick(self, node: str, times: int = 1) -> None:
        """Tick `node` and drain it."""
        for _ in range(times):
            self.cores[node].tick()
            self.drain(node)

    def elect(self, node: str) -> None:
        """Make `node` time out and win an election, then settle."""
        core = self.cores[node]
        for _ in range(self.config.max_election_ticks + 1):
            core.tick()
            self.drain(node)
            if core.role.value != "follower":
                break
        self.stabilize()
        assert core.role.value == "leader", core.role


class _Effects:
    """What one node's `Ready`s do in the harness: queue messages (not while the node is down),
    record applied entries and dropped reads."""

    def __init__(self, harness: Harness, node: str) -> None:
        self.harness = harness
        self.node = node

    def snapshot_installed(self, snapshot: Snapshot, changes: Sequence[Changed]) -> None:
        """Nothing to record: tests look at `machines`."""

    def entries_truncated(self, from_seq: int) -> None:
        """Nothing waits on entries in the harness."""

    def send(self, messages: Sequence[Message]) -> None:
        if self.node not in self.harness.down:
            self.harness.inflight.extend(messages)

    def entry_applied(self, entry: Entry, result: ApplyResult) -> None:
        self.harness.applied[self.node].append(entry)

    def read_done(self, request_id: int, ok: bool) -> None:
        if not ok:
            self.harness.dropped_reads[self.node].append(request_id)

    def role_changed(self, soft: SoftState) -> None:
        """Tests read roles from the cores."""
