"""A scripted, in-memory cluster of cores for interaction tests (no faults unless asked).

Messages are kept in a list so tests can inspect, drop or reorder them before delivery;
`stabilize()` delivers until nothing is left. Persistence is implicit (memory).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from dref_raft.core import CoreConfig, CoreState, Entry, Message, RaftCore, ReadState, Ready
from dref_raft.fsm import StateMachine

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
    ) -> None:
        self.ids = list(ids)
        self.config = config or CoreConfig()
        self.cores = {
            i: RaftCore(
                i,
                self.ids,
                rng=random.Random(f"{seed}/{i}"),
                config=self.config,
                state=(states or {}).get(i),
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

    def drain(self, node: str) -> None:
        """Process every `Ready` of `node` (persist implicitly, queue, apply, advance)."""
        core = self.cores[node]
        while core.has_ready():
            ready = core.ready()
            self.readies[node].append(ready)
            if node not in self.down:
                self.inflight.extend(ready.messages)
            if ready.snapshot is not None:
                self.machines[node].install(ready.snapshot.data)
            for entry in ready.committed:
                self.machines[node].apply(entry.command)
                self.applied[node].append(entry)
            self.reads[node].extend(ready.reads)
            self.dropped_reads[node].extend(ready.dropped_reads)
            core.advance(ready)

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
