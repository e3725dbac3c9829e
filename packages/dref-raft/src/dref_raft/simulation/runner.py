"""One seeded simulation run: nodes, network, faults, clients, invariants, history check."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from dref_raft.core import CoreConfig, Entry, Message, Role
from dref_raft.fsm import ApplyResult
from dref_raft.simulation.clients import OP_TIMEOUT, RecordedOp, SimClient
from dref_raft.simulation.invariants import Invariants, InvariantViolation
from dref_raft.simulation.network import Network, NetworkFaults
from dref_raft.simulation.node import SimNode

__all__ = ["SimConfig", "SimResult", "run_seed"]

#: One simulation step is 5 ms; a core tick (40 ms) is about 8 steps, skewed per node.
STEP_MS = 5
#: Steps after the run in which the cluster must converge (liveness).
SETTLE_STEPS = 4000


@dataclass(frozen=True, slots=True)
class SimConfig:
    """The shape of a run; the seed decides everything else."""

    nodes: int = 3
    steps: int = 3000
    clients: int = 3
    keys: tuple[str, ...] = ("x", "y")
    snapshot_every: int = 25
    #: Faults happen during this share of the steps; then the network heals and all restart.
    fault_share: float = 0.7
    check_history: bool = True


@dataclass(slots=True)
class SimResult:
    """What a run found. `failure` is None when every check passed."""

    seed: int
    failure: str | None = None
    history: list[RecordedOp] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    trace: list[str] = field(default_factory=list)
    linearizability: str = "not checked"

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return self.failure is None


class _Run:
    def __init__(self, seed: int, cfg: SimConfig, trace: bool) -> None:
        self.seed, self.cfg = seed, cfg
        self.rng = random.Random(f"sim/{seed}")
        self.now = 0
        self.tracing = trace
        self.result = SimResult(seed)
        self.stats = self.result.stats
        rng = self.rng
        faults = NetworkFaults(
            loss=rng.choice([0.0, 0.01, 0.05, 0.1]),
            duplicate=rng.choice([0.0, 0.02, 0.05]),
            max_delay=rng.choice([2, 6, 12]),
            long_delay_chance=rng.choice([0.0, 0.01, 0.03]),
        )
        self.net = Network(random.Random(f"net/{seed}"), faults)
        self.invariants = Invariants()
        ids = [f"n{i}" for i in range(1, cfg.nodes + 1)]
        core_config = CoreConfig(
            max_batch_entries=rng.choice([1, 4, 64]), max_inflight=rng.choice([1, 2, 8])
        )
        self.nodes = {
            i: SimNode(
                i,
                ids,
                core_config,
                seed,
                self.invariants,
                snapshot_every=rng.choice([0, cfg.snapshot_every, 7]),
                on_apply=self.on_apply,
                on_read=self.on_read,
                trace=self.trace if trace else None,
            )
            for i in ids
        }
        base = core_config.tick_ms // STEP_MS
        self.tick_period = {i: rng.randint(base * 3 // 4, base * 5 // 4) for i in ids}
        self.tick_phase = {i: rng.randrange(self.tick_period[i]) for i in ids}
        self.restart_at: dict[str, int] = {}
        self.clients = [SimClient(c, rng.choice(ids)) for c in range(cfg.clients)]
        self.pending_writes: dict[tuple[str, int], SimClient] = {}
        self.pending_reads: dict[tuple[str, int], SimClient] = {}
        self.next_request = 0
        self.outbox: list[Message] = []

    def trace(self, line: str) -> None:
        if self.tracing:
            self.result.trace.append(f"{self.now:6d} {line}")

    # ---------------------------------------------------------------- hooks

    def on_apply(self, node: str, entry: Entry, result: ApplyResult) -> None:
        client = self.pending_writes.pop((node, entry.seq), None)
        if client is None or client.op is None:
            return
        op = client.op
        if entry.term == op.term:
            client.finish(self.now, result.created if op.kind == "set_if_absent" else None)
            self.stats["writes_ok"] = self.stats.get("writes_ok", 0) + 1
        else:
            client.discard()  # another entry took its seq: it can never commit

    def on_read(self, node: str, request_id: int, ok: bool) -> None:
        client = self.pending_reads.pop((node, request_id), None)
        if client is None or client.op is None:
            return
        if ok:
            client.finish(self.now, self.nodes[node].machine.get(client.op.key, 0))
            self.stats["reads_ok"] = self.stats.get("reads_ok", 0) + 1
        else:
            client.discard()

    # ---------------------------------------------------------------- steps

    def run(self) -> SimResult:
        cfg = self.cfg
        fault_end = int(cfg.steps * cfg.fault_share)
        client_end = cfg.steps - cfg.steps // 10
        try:
            for now in range(cfg.steps):
                self.now = now
                if self.now == fault_end:
                    self.end_faults()
                elif self.now < fault_end:
                    self.faults()
                self.restarts()
                self.deliver()
                self.ticks()
                if self.now < client_end:
                    self.client_steps()
                self.timeouts()
                self.flush()
            self.settle()
            self.final_checks()
        except InvariantViolation as exc:
            self.result.failure = f"step {self.now}: {exc}"
        self.result.history = [op for c in self.clients for op in c.history]
        if self.result.ok and cfg.check_history:
            self.check_history()
        return self.result

    def faults(self) -> None:
        rng, ids = self.rng, list(self.nodes)
        roll = rng.random()
        if roll < 0.003:
            rng.shuffle(ids)
            cut = rng.randint(1, len(ids) - 1)
            self.net.partition([ids[:cut], ids[cut:]])
            self.trace(f"partition {ids[:cut]} | {ids[cut:]}")
            self.count("partitions")
        elif roll < 0.005:
            a, b = rng.sample(ids, 2)
            self.net.cut_one_way(a, b)
            self.trace(f"cut {a} -> {b}")
            self.count("one_way_cuts")
        elif roll < 0.009:
            self.net.heal()
            self.trace("heal")
        elif roll < 0.0115:
            node = self.nodes[rng.choice(ids)]
            if node.up:
                node.crash()
                self.restart_at[node.id] = self.now + rng.randint(10, 400)
                self.trace(f"crash {node.id}")
                self.count("crashes")

    def end_faults(self) -> None:
        self.net.heal()
        self.net.faulty = False
        for node_id in self.restart_at:
            self.restart_at[node_id] = self.now
        self.trace("faults end: heal, restart all")

    def restarts(self) -> None:
        for node_id, at in list(self.restart_at.items()):
            if at <= self.now:
                del self.restart_at[node_id]
                self.nodes[node_id].start()
                self.trace(f"restart {node_id}")
                self.drain(node_id)

    def deliver(self) -> None:
        for msg in self.net.due(self.now):
            node = self.nodes[msg.to]
            if node.core is None:
                continue
            if self.tracing:
                self.trace(f"{msg.sender} -> {msg.to} {_describe(msg)}")
            node.core.step(msg)
            self.drain(msg.to)

    def ticks(self) -> None:
        for node_id, node in self.nodes.items():
            if (
                node.core is not None
                and self.now % self.tick_period[node_id] == self.tick_phase[node_id]
            ):
                node.core.tick()
                self.drain(node_id)

    def drain(self, node_id: str) -> None:
        self.nodes[node_id].drain(self.outbox)

    def flush(self) -> None:
        for msg in self.outbox:
            self.net.send(self.now, msg)
        self.outbox = []

    def client_steps(self) -> None:
        rng = self.rng
        for client in self.clients:
            if client.op is None:
                if rng.random() < 0.2:
                    new = client.new_op(rng, self.now, self.cfg.keys)
                    self.trace(f"client {client.id} calls {new.kind} {new.key} {new.value!r}")
                else:
                    continue
            op = client.op
            assert op is not None
            if op.node is not None:
                continue
            node = self.nodes[client.leader_guess]
            if node.core is None:
                client.leader_guess = rng.choice(list(self.nodes))
                continue
            if op.kind == "get":
                self.next_request += 1
                result = node.core.read_index(self.next_request)
                if client.submitted(result, node.id, self.now):
                    op.request_id = self.next_request
                    self.pending_reads[(node.id, self.next_request)] = client
            else:
                proposed = node.core.propose([op.command()])
                if client.submitted(proposed, node.id, self.now):
                    self.pending_writes[(node.id, op.seq)] = client
            if op.node is None and client.leader_guess == node.id:
                client.leader_guess = rng.choice(list(self.nodes))
            self.drain(node.id)

    def timeouts(self) -> None:
        for client in self.clients:
            op = client.op
            if op is None:
                continue
            if op.node is None:
                if self.now - op.call > OP_TIMEOUT:
                    client.discard()  # never proposed anywhere
                continue
            lost = not self.nodes[op.node].up or self.now - op.sent_at > OP_TIMEOUT
            if not lost:
                continue
            if op.kind == "get":
                self.pending_reads.pop((op.node, op.request_id), None)
                client.discard()
            else:
                self.pending_writes.pop((op.node, op.seq), None)
                client.finish(None)
                self.count("writes_unknown")

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    # ---------------------------------------------------------------- end

    def settle(self) -> None:
        """Without faults or clients, run until every node applied the leader's commit."""
        for now in range(self.cfg.steps, self.cfg.steps + SETTLE_STEPS):
            self.now = now
            if self.now % 50 == 0 and self.converged():
                return
            self.deliver()
            self.ticks()
            self.timeouts()
            self.flush()

    def converged(self) -> bool:
        leaders = [n.core for n in self.nodes.values() if n.core and n.core.role is Role.LEADER]
        return len(leaders) == 1 and all(
            n.core is not None and n.core.applied == leaders[0].commit for n in self.nodes.values()
        )

    def final_checks(self) -> None:
        leaders = [n for n in self.nodes.values() if n.core and n.core.role is Role.LEADER]
        if not leaders:
            raise InvariantViolation("liveness: no leader after the faults ended")
        leader = leaders[-1]
        assert leader.core is not None
        states = {i: dict(n.machine.elements()) for i, n in self.nodes.items()}
        for node_id, node in self.nodes.items():
            assert node.core is not None
            if node.core.applied != leader.core.commit or states[node_id] != states[leader.id]:
                raise InvariantViolation(
                    f"liveness: {node_id} applied {node.core.applied}, leader {leader.id} "
                    f"committed {leader.core.commit}; states equal: "
                    f"{states[node_id] == states[leader.id]}"
                )
        self.stats["committed"] = leader.core.commit
        self.stats["terms"] = len(self.invariants.leaders)

    def check_history(self) -> None:
        try:
            from dref_compat.history import Operation
            from dref_compat.linearizability import check_linearizable
        except ImportError:
            self.result.linearizability = "checker not available"
            return
        ops: list[Any] = [
            Operation(o.client, o.key, o.kind, o.value, o.expected, o.output, o.call, o.ret)  # type: ignore[arg-type]
            for o in self.result.history
        ]
        verdict = check_linearizable(ops, timeout=20.0)
        self.result.linearizability = str(verdict)
        if verdict.ok is False:
            self.result.failure = f"history is not linearizable: {verdict.explanation}"


def _describe(msg: Message) -> str:
    text = repr(msg)
    return text if len(text) <= 200 else text[:197] + "..."


def run_seed(seed: int, config: SimConfig | None = None, *, trace: bool = False) -> SimResult:
    """Run one seed; the same seed and config always give the same result and trace."""
    return _Run(seed, config or SimConfig(), trace).run()
