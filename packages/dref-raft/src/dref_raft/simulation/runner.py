"""One seeded simulation run: nodes, network, faults and nemeses, clients, invariants, and the
history and lock checks (dref-compat)."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dref_raft.commands import (
    Command,
    CompareAndDelete,
    DeleteIfExpired,
    ExpireElement,
    FairSwap,
    LeaveLine,
    Membership,
    SetElement,
    SetIfNotExist,
)
from dref_raft.core import CoreConfig, Entry, Message, Proposed, RaftCore, Ready, Role
from dref_raft.errors import MissingSimulationDependency
from dref_raft.fsm import ApplyResult
from dref_raft.simulation.clients import (
    OP_TIMEOUT,
    ClientOp,
    LockClient,
    RecordedOp,
    SimClient,
)
from dref_raft.simulation.invariants import Invariants, InvariantViolation
from dref_raft.simulation.network import Network, NetworkFaults
from dref_raft.simulation.node import SimNode

if TYPE_CHECKING:
    from dref_compat.fencing import Hold, HoldRecorder

__all__ = ["NEMESES", "SimConfig", "SimResult", "run_seed"]

#: One simulation step is 5 ms; a core tick (40 ms) is about 8 steps, skewed per node.
STEP_MS = 5
#: `fair_locks`, `fair_swaps`: steps a waiter's place in line lives without another attempt.
FAIR_WAITER_STEPS = 40
FAIR_WAITER_MS = FAIR_WAITER_STEPS * STEP_MS
#: Steps after the run in which the cluster must converge (liveness).
SETTLE_STEPS = 4000
#: The simulated wall clock (epoch ms) at step 0; node clocks are offset by the seed's skew.
EPOCH_MS = 1_000_000
#: The leader's reaper looks for expired elements every 40 steps (200 ms, as `reaper_interval`).
REAP_PERIOD = 40
#: Nemeses a seed mixes into its random fault schedule (see docs/simulation.md):
#: `stale_leader` isolates the leader on a minority side, pins clients to it and lets the rest
#: elect another; `figure8` crashes a leader right after an earlier term's entry reached a
#: majority, then lets a member with a divergent log of a higher term win; `stale_messages`
#: replays messages (InstallSnapshot more often) hundreds of steps later, across terms;
#: `membership` adds fresh nodes as learners, promotes them and removes voters (the leader
#: too), one change at a time, between 3 and 5 voters.
#: `crash_in_persist` (drawn on its own generator, so the others' draws are unchanged) crashes
#: a node now and then between sending a `Ready`'s early messages and persisting it.
NEMESES = ("stale_leader", "figure8", "stale_messages", "membership", "crash_in_persist")
#: Voters the membership nemesis keeps (it never removes below, nor adds above).
MIN_VOTERS, MAX_MEMBERS = 3, 5
#: Chance that a `Ready` with something to persist crashes its node mid-persist (that nemesis).
CRASH_IN_PERSIST = 0.01
#: Lease reads' lease in ticks (election timeout: 10 ticks): node clocks run 3/4 to 5/4 of the
#: base rate with PreVote, so 10 ticks of the slowest-ticking follower last at least
#: 10 * 3/5 = 6 ticks of the fastest leader, less one tick of phase.
LEASE_TICKS = 4
#: The key of the nemeses' filler writes (no client reads or writes it).
FILLER_KEY = "_nemesis"
#: Steps a crashed node waits for a nemesis to restart it (or the faults to end).
NEVER = 1 << 40


def _require_checkers() -> None:
    try:
        import dref_compat.fencing
        import dref_compat.linearizability  # noqa: F401
    except ImportError as exc:
        raise MissingSimulationDependency(
            "the Raft simulation checks histories and locks with dref-compat, which is not "
            "installed: install the extra, pip install 'dref-raft[simulation]'"
        ) from exc


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
    #: Lease-lock clients (`LockClient`), contending for `locks`; 0 leaves the run as it was
    #: without them (they and the clock skew draw from their own seeded generator).
    lock_clients: int = 2
    locks: tuple[str, ...] = ("L1", "L2")
    #: Steps a lock client adds to its lease (it trusts it that long past the expiry it asked
    #: for): 0 is a correct client; a positive value is a deliberately broken one (tests show
    #: that the lock checks catch it).
    lease_slack: int = 0
    #: Lock clients acquire in the state machine's line (`FairSwap`, the lock's token as the
    #: ticket) and release with `LeaveLine(release=True)`, as contexts with `lock_queue` do.
    fair_locks: bool = False
    #: Register clients also update with `FairSwap` (as `modify` does with `fair_updates`):
    #: a compare-and-set of the value they last saw, in their own place in the key's line.
    fair_swaps: bool = False
    #: Nemeses of this run (names from `NEMESES`); None: each seed picks its own mix.
    nemeses: tuple[str, ...] | None = None
    #: Share of the reads served as follower reads (docs/raft.md#read-modes): a random node
    #: asks the leader it knows for a read index and answers from its own state once it has
    #: applied it. 0 leaves the run as it was (the choices come from their own generator).
    follower_reads: float = 0.0
    #: False: a deliberately broken follower that answers without waiting for the read index
    #: (tests show that the history check catches it).
    follower_read_wait: bool = True
    #: Entries each compaction keeps of those its snapshot covers (`RaftCore.compact`'s
    #: `keep`, as members keep `catch_up_entries`); 0 leaves the run as it was.
    catch_up_entries: int = 0


@dataclass(slots=True)
class SimResult:
    """What a run found. `failure` is None when every check passed."""

    seed: int
    failure: str | None = None
    history: list[RecordedOp] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    trace: list[str] = field(default_factory=list)
    linearizability: str = "not checked"
    #: The lock clients' holds (`dref_compat.fencing.Hold`, client = owner token) and the grants
    #: the state machine decided (fence = seq of the creating entry, from its commit to its
    #: deletion), as checked at the end of the run.
    holds: list[Hold] = field(default_factory=list)
    grants: list[Hold] = field(default_factory=list)
    locks: str = "not checked"

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return self.failure is None


@dataclass(slots=True)
class _Episode:
    """A scripted nemesis in progress; it moves to its next `phase` when a condition holds."""

    kind: str
    phase: str
    deadline: int
    #: The leader it started from (isolated first).
    old: str
    #: figure8: the leader elected meanwhile, its term, and its first entry's seq (where the
    #: two logs diverge).
    new: str = ""
    term: int = 0
    first_seq: int = 0


class _Run:
    def __init__(self, seed: int, cfg: SimConfig, trace: bool) -> None:
        _require_checkers()
        self.seed, self.cfg = seed, cfg
        self.rng = random.Random(f"sim/{seed}")
        self.now = 0
        self.tracing = trace
        self.result = SimResult(seed)
        self.stats = self.result.stats
        rng = self.rng
        nem = self.nemesis_rng = random.Random(f"nemesis/{seed}")
        unknown = set(cfg.nemeses or ()) - set(NEMESES)
        if unknown:
            raise ValueError(f"SimConfig: unknown nemeses {sorted(unknown)}")
        picked = [n for n in NEMESES if n != "crash_in_persist" and nem.random() < 0.5]
        self.persist_rng = random.Random(f"persist/{seed}")
        if self.persist_rng.random() < 0.5:
            picked.append("crash_in_persist")
        self.nemeses = frozenset(picked if cfg.nemeses is None else cfg.nemeses)
        for name in sorted(self.nemeses):
            self.stats[f"nemesis_{name}"] = 1
        self.episode_kinds = [k for k in ("stale_leader", "figure8") if k in self.nemeses]
        self.episode: _Episode | None = None
        stale = "stale_messages" in self.nemeses
        faults = NetworkFaults(
            loss=rng.choice([0.0, 0.01, 0.05, 0.1]),
            duplicate=rng.choice([0.0, 0.02, 0.05]),
            max_delay=rng.choice([2, 6, 12]),
            long_delay_chance=rng.choice([0.0, 0.01, 0.03]),
            replay_chance=nem.choice([0.005, 0.02]) if stale else 0.0,
            hold_blocked=nem.choice([0.1, 0.3]) if stale else 0.0,
        )
        self.net = Network(random.Random(f"net/{seed}"), faults)
        self.invariants = Invariants()
        ids = [f"n{i}" for i in range(1, cfg.nodes + 1)]
        # Without PreVote a Vote's log check is the only guard; without check-quorum a
        # partitioned leader keeps leading until it hears of a higher term.
        pre_vote, check_quorum = nem.random() < 0.6, nem.random() < 0.6
        self.stats["pre_vote"], self.stats["check_quorum"] = int(pre_vote), int(check_quorum)
        members = "membership" in self.nemeses
        self.member_rng = random.Random(f"membership/{seed}")
        # Lease reads in half the seeds that can have them (own generator: the other draws
        # are unchanged), with a lease that the clocks' skew (below) cannot outrun.
        lease = pre_vote and check_quorum and random.Random(f"lease/{seed}").random() < 0.5
        self.stats["lease_reads"] = int(lease)
        core_config = CoreConfig(
            max_batch_entries=rng.choice([1, 4, 64]),
            max_inflight=rng.choice([1, 2, 8]),
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            # membership runs: automatic promotion, or the nemesis promotes (-1)
            learner_promotion_lag=self.member_rng.choice([-1, 0, 8]) if members else 64,
            lease_ticks=LEASE_TICKS if lease else 0,
        )
        self.core_config = core_config
        #: Nodes removed from the configuration (stopped for good once that committed), and
        #: the number of the next fresh node id.
        self.decommissioned: set[str] = set()
        self.next_node = cfg.nodes + 1
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
                catch_up_entries=cfg.catch_up_entries,
            )
            for i in ids
        }
        base = core_config.tick_ms // STEP_MS
        # Clock rates differ by up to 25 % (12 % without PreVote: a node whose log is behind
        # and whose clock runs 1.5 times as fast would time out first forever, and without
        # PreVote each of its elections resets the others' timers, as in etcd).
        low, high = (base * 3 // 4, base * 5 // 4) if pre_vote else (base * 7 // 8, base * 9 // 8)
        self.tick_period = {i: rng.randint(low, high) for i in ids}
        self.tick_phase = {i: rng.randrange(self.tick_period[i]) for i in ids}
        self.restart_at: dict[str, int] = {}
        self.clients = [SimClient(c, rng.choice(ids)) for c in range(cfg.clients)]
        self.pending_writes: dict[tuple[str, int], SimClient] = {}
        self.pending_reads: dict[tuple[str, int], SimClient] = {}
        self.follower_rng = random.Random(f"follower-reads/{seed}")
        #: Follower reads whose read index came: waiting for their node to apply it.
        self.follower_waits: list[tuple[SimClient, ClientOp]] = []
        self.next_request = 0
        self.outbox: list[Message] = []
        #: Each node's snapshot base at its last check, and the terms whose leader was seen.
        self.bases: dict[str, int] = {}
        self.elected: set[int] = set()
        self.max_leader_term = 0
        self._init_locks(ids)

    def _init_locks(self, ids: list[str]) -> None:
        """Lock clients, node clock offsets and grant tracking (own generator: see SimConfig)."""
        cfg = self.cfg
        overlap = set(cfg.locks) & set(cfg.keys)
        if overlap:
            raise ValueError(f"SimConfig: lock names {sorted(overlap)} are also register keys")
        self.lock_rng = rng = random.Random(f"locks/{self.seed}")
        self.lock_names = frozenset(cfg.locks)
        self.recorder: HoldRecorder | None = None
        if cfg.lock_clients:
            from dref_compat.fencing import HoldRecorder

            self.recorder = HoldRecorder(clock=lambda: float(self.now))
        count = cfg.lock_clients
        skew = rng.choice([0, 10, 40]) if count else 0
        self.clock_offset = {i: rng.randint(-skew, skew) for i in ids}
        #: Steps by which a client's lease ends before the expiry it asked for: clocks differ
        #: by up to 2 * skew ms, and the reaper compares expiries with the leader's clock.
        self.lease_margin = -(-2 * skew // STEP_MS)
        self.lock_clients = [LockClient(c, rng.choice(ids)) for c in range(count)]
        self.pending_locks: dict[tuple[str, int], LockClient] = {}
        #: fence → [name, token, granted at, ended at (None: still held)], as applied.
        self.grant_log: dict[int, list[Any]] = {}
        self.open_grants: dict[str, int] = {}
        self.tracked_seq = 0

    def clock_ms(self, node_id: str) -> int:
        """The simulated wall clock of `node_id`, in epoch ms."""
        return EPOCH_MS + self.now * STEP_MS + self.clock_offset[node_id]

    def trace(self, line: str) -> None:
        if self.tracing:
            self.result.trace.append(f"{self.now:6d} {line}")

    # ---------------------------------------------------------------- hooks

    def on_apply(self, node: str, entry: Entry, result: ApplyResult) -> None:
        if self.lock_clients:
            if entry.seq > self.tracked_seq:
                self.track_grants(entry, result)
            lock_client = self.pending_locks.pop((node, entry.seq), None)
            if lock_client is not None:
                self.lock_outcome(lock_client, node, entry, result)
                return
        client = self.pending_writes.pop((node, entry.seq), None)
        if client is None or client.op is None:
            return
        op = client.op
        if entry.term == op.term and op.kind == "fair_swap":
            client.finish_fair_swap(self.now, bool(result.created), result.current)
            self.count("fair_swaps_ok" if result.created else "fair_swaps_refused")
            if result.ahead:
                self.count("fair_swaps_queued_behind")
        elif entry.term == op.term:
            client.finish(self.now, result.created if op.kind == "set_if_not_exist" else None)
            self.stats["writes_ok"] = self.stats.get("writes_ok", 0) + 1
        else:
            client.discard()  # another entry took its seq: it can never commit

    def on_read(self, node: str, request_id: int, ok: bool) -> None:
        client = self.pending_reads.pop((node, request_id), None)
        if client is None or client.op is None:
            return
        op = client.op
        if ok and op.reader is not None:
            # The leader answers its commit seq (the member answers its applied seq, which
            # is at least the read index too); the follower serves once it has applied it.
            op.index, op.node = _core(self.nodes[node]).commit, op.reader
            reader = self.nodes.get(op.reader)
            if reader is not None and reader.core is not None and reader.core.applied < op.index:
                self.count("follower_reads_waited")
            self.follower_waits.append((client, op))
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
                if self.follower_waits:
                    self.follower_steps()
                if self.lock_clients:
                    self.lock_steps(starting=self.now < client_end)
                    if self.now % REAP_PERIOD == 0:
                        self.reap()
                self.timeouts()
                self.flush()
                if "membership" in self.nemeses:
                    self.decommission()
            self.settle()
            self.final_checks()
        except InvariantViolation as exc:
            self.result.failure = f"step {self.now}: {exc}"
        except Exception as exc:  # the core (or a node) crashed: as much a failure
            self.result.failure = f"step {self.now}: {type(exc).__name__} raised: {exc}"
        if self.net.replays:
            self.stats["replays"] = self.net.replays
        self.result.history = [op for c in self.clients for op in c.history]
        if self.result.ok and cfg.check_history:
            self.check_history()
        if self.result.ok and self.recorder is not None:
            self.check_locks()
        return self.result

    def faults(self) -> None:
        if self.episode is not None:
            self.step_episode()
            return
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
        elif roll < 0.0155 and self.episode_kinds:
            self.start_episode(self.nemesis_rng.choice(self.episode_kinds))
        elif 0.0155 <= roll < 0.0205 and "membership" in self.nemeses:
            self.change_membership()
            if self.member_rng.random() < 0.3:
                self.change_membership()  # at once: refused while the first is uncommitted

    # ---------------------------------------------------------------- membership

    def change_membership(self) -> None:
        """One single-server change on the current leader: add a fresh node as a learner,
        promote a learner (when the core does not), remove a learner or a voter (the leader
        itself too)."""
        leader = self.leader()
        if leader is None:
            return
        core, rng = _core(leader), self.member_rng
        m = core.membership
        voters, learners = set(m.voters), set(m.learners)
        moves = []
        if len(voters) + len(learners) < MAX_MEMBERS:
            moves.append("add")
        if learners:
            moves += ["promote", "remove_learner"]
        if len(voters) > MIN_VOTERS:
            moves.append("remove_voter")
        if not moves:
            moves.append("transfer")
        if rng.random() < 0.2:
            moves = ["transfer"]  # leadership transfer (TimeoutNow) instead of a change
        move = rng.choice(moves)
        if move == "transfer":
            target = core.transfer_leadership(rng.choice([None, *core.peers]))
            self.trace(f"membership transfer on {leader.id}: {target}")
            self.count("transfers" if isinstance(target, str) else "transfers_refused")
            self.drain(leader.id)
            return
        new_id = f"n{self.next_node}"
        if move == "add":
            learners.add(new_id)
        elif move == "promote":
            chosen = rng.choice(sorted(learners))
            learners.discard(chosen)
            voters.add(chosen)
        elif move == "remove_learner":
            learners.discard(rng.choice(sorted(learners)))
        else:
            voters.discard(rng.choice(sorted(voters)))
        proposed = core.propose_membership(
            Membership(tuple(sorted(voters)), tuple(sorted(learners)))
        )
        self.trace(f"membership {move} on {leader.id}: {sorted(voters)} + {sorted(learners)}")
        if not isinstance(proposed, Proposed):
            self.count("membership_refused")
            return
        self.count(f"membership_{move}")
        if move == "add":
            self.next_node += 1
            self.add_node(new_id)
        self.drain(leader.id)

    def add_node(self, node_id: str) -> None:
        """A fresh node that joins (it knows no configuration until the leader's entries)."""
        rng = self.member_rng
        self.nodes[node_id] = SimNode(
            node_id,
            [],
            self.core_config,
            self.seed,
            self.invariants,
            snapshot_every=rng.choice([0, self.cfg.snapshot_every, 7]),
            on_apply=self.on_apply,
            on_read=self.on_read,
            trace=self.trace if self.tracing else None,
            joining=True,
            catch_up_entries=self.cfg.catch_up_entries,
        )
        base = self.core_config.tick_ms // STEP_MS
        self.tick_period[node_id] = rng.randint(base * 7 // 8, base * 9 // 8)
        self.tick_phase[node_id] = rng.randrange(self.tick_period[node_id])
        self.clock_offset[node_id] = 0

    def decommission(self) -> None:
        """Stop, for good, every node whose removal the newest leader committed (as an
        operator stops a removed machine; it never comes back under the same id)."""
        leader = self.leader()
        if leader is None:
            return
        core = _core(leader)
        if core.commit < core.config_seq:
            return
        members = set(core.membership.members)
        for node_id in self.nodes:
            if node_id not in members and node_id not in self.decommissioned:
                self.decommissioned.add(node_id)
                self.nodes[node_id].crash()
                self.restart_at.pop(node_id, None)
                self.trace(f"decommission {node_id}")
                self.count("decommissioned")

    def live_ids(self) -> list[str]:
        """Every node not decommissioned."""
        return [i for i in self.nodes if i not in self.decommissioned]

    # ---------------------------------------------------------------- nemeses

    def leader(self, among: list[str] | None = None) -> SimNode | None:
        """The up node that leads in the highest term (among `among`), if any."""
        best: SimNode | None = None
        for node_id in among if among is not None else list(self.nodes):
            node = self.nodes[node_id]
            core = node.core
            if (
                core is not None
                and core.role is Role.LEADER
                and (best is None or core.term > _core(best).term)
            ):
                best = node
        return best

    def start_episode(self, kind: str) -> None:
        """Start a scripted nemesis from the current leader (none: nothing happens)."""
        nem, ids = self.nemesis_rng, self.live_ids()
        old = self.leader()
        if old is None or (kind == "figure8" and not all(self.nodes[i].up for i in ids)):
            return
        others = [i for i in ids if i != old.id]
        if kind == "stale_leader":
            # The old leader (with a follower when there are five) on the minority side; half
            # of the clients keep asking it, the others go to the majority side.
            quorum = _core(old).quorum
            # (A stale leader's voters may include nodes already decommissioned: clamp.)
            side = [old.id, *nem.sample(others, max(0, min(len(others), len(ids) - quorum - 1)))]
            rest = [i for i in ids if i not in side]
            self.net.partition([side, rest])
            pinned = nem.sample(self.clients, nem.randint(1, max(1, len(self.clients) - 1)))
            for client in self.clients:
                client.pinned = old.id if client in pinned else None
                client.avoid = None if client in pinned else old.id
                client.leader_guess = nem.choice(rest)
                op = client.op
                if client.pinned is None and op is not None and op.node == old.id:
                    self.give_up(client)  # it stops waiting for the old leader
            self.propose_filler(old, nem.randint(0, 6))
            deadline = self.now + nem.randint(200, 700)
            self.trace(f"nemesis stale_leader: {side} | {rest}, clients pinned to {old.id}")
        else:
            # Figure 8, first: the isolated old leader appends entries nobody else holds.
            self.net.partition([[old.id], others])
            self.propose_filler(old, nem.randint(3, 8))
            deadline = self.now + 800
            self.trace(f"nemesis figure8: isolate {old.id}")
        self.episode = _Episode(kind, "isolated", deadline, old.id)
        self.count(f"{kind}_episodes")

    def step_episode(self) -> None:
        ep = self.episode
        assert ep is not None
        if self.now >= ep.deadline:
            if ep.kind == "figure8":
                self.count(f"figure8_gave_up_{ep.phase}")
            self.end_episode()
            return
        if ep.kind == "figure8":
            self.step_figure8(ep)

    def step_figure8(self, ep: _Episode) -> None:
        """Figure 8 of the Raft paper, driven by the cluster's state."""
        nem, ids = self.nemesis_rng, self.live_ids()
        others = [i for i in ids if i != ep.old]
        if ep.phase == "isolated":
            new = self.leader(others)
            if new is None:
                return
            # A leader of a higher term on the majority side: crash it before its first entry
            # leaves it (messages in flight to partitioned nodes are dropped), so the two
            # logs diverge at that entry. The old leader then rejoins with just enough others
            # to make a majority, none of which hold that entry.
            core = _core(new)
            ep.new, ep.term, ep.first_seq = new.id, core.term, core.log.last_seq
            self.crash(new.id)
            quorum = core.quorum
            rest = [i for i in others if i != new.id]
            group = nem.sample(rest, max(0, min(len(rest), quorum - 1)))
            self.net.partition([[ep.old, *group], [i for i in others if i not in group]])
            ep.phase, ep.deadline = "rejoined", self.now + 1000
            self.trace(f"nemesis figure8: crash {new.id} (term {ep.term}), {ep.old} + {group}")
            return
        if ep.phase == "rejoined":
            leader = self.nodes[ep.old].core
            if leader is None or leader.role is not Role.LEADER or leader.term <= ep.term:
                return
            matches = [leader.log.last_seq]
            for peer in leader.peers:
                progress = leader.progress(peer)
                matches.append(progress.match_seq if progress is not None else 0)
            on_majority = sorted(matches)[len(matches) - leader.quorum]
            term = leader.log.term_at(on_majority)
            if on_majority >= ep.first_seq and term is not None and term < leader.term:
                # An entry of an earlier term is on a majority (and must not count as
                # committed): crash the leader now, dropping what it still has in flight.
                self.count("figure8_old_term_majority")
                self.trace(
                    f"nemesis figure8: {ep.old} has term {term} at {on_majority} on a "
                    f"majority; crash it, restart {ep.new}"
                )
                self.net.partition([[ep.old], others])
                self.crash(ep.old)
                self.restart_at[ep.new] = self.now
                ep.phase, ep.deadline = "overwrite", self.now + 1000
            elif leader.log.term_at(leader.commit) == leader.term:
                self.count("figure8_missed")  # its own entry reached the majority first
                self.end_episode()
            return
        new = self.leader(others)
        if new is not None and _core(new).term > ep.term:
            self.count("figure8_completed")
            self.end_episode()

    def crash(self, node_id: str) -> None:
        """Crash a node for a nemesis, which restarts it (or the end of the faults does)."""
        self.nodes[node_id].crash()
        self.restart_at[node_id] = NEVER
        self.trace(f"crash {node_id}")
        self.count("nemesis_crashes")

    def end_episode(self) -> None:
        """Heal, unpin the clients and restart what the episode crashed."""
        ep = self.episode
        assert ep is not None
        self.episode = None
        self.net.heal()
        for client in self.clients:
            client.pinned = client.avoid = None
        for node_id, at in self.restart_at.items():
            if at == NEVER:
                self.restart_at[node_id] = self.now + self.nemesis_rng.randint(0, 200)
        self.trace(f"nemesis {ep.kind} ends in phase {ep.phase}: heal")

    def propose_filler(self, node: SimNode, count: int) -> None:
        """Writes of `FILLER_KEY` straight into a leader's log."""
        core = node.core
        if not count or core is None or core.role is not Role.LEADER:
            return
        value = f"n{self.now}".encode()
        core.propose([SetElement(FILLER_KEY, value) for _ in range(count)])
        self.stats["filler_entries"] = self.stats.get("filler_entries", 0) + count
        self.drain(node.id)

    def end_faults(self) -> None:
        if self.episode is not None:
            self.end_episode()
        self.net.heal()
        self.net.faulty = False
        for node_id in self.restart_at:
            self.restart_at[node_id] = self.now
        self.trace("faults end: heal, restart all")

    def restarts(self) -> None:
        for node_id, at in list(self.restart_at.items()):
            if at <= self.now:
                del self.restart_at[node_id]
                node = self.nodes[node_id]
                node.start()
                self.trace(f"restart {node_id}")
                self.invariants.check_log(_core(node))
                self.drain(node_id)

    def deliver(self) -> None:
        for msg in self.net.due(self.now):
            node = self.nodes[msg.to]
            if node.core is None:
                continue
            if self.tracing:
                self.trace(f"{msg.sender} -> {msg.to} {_describe(msg)}")
            if msg.term < node.core.term:
                self.count("stale_term_deliveries")
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
        node = self.nodes[node_id]
        if not node.drain(self.outbox, self._crash_in_persist):
            self.restart_at[node_id] = self.now + self.persist_rng.randint(10, 400)
            self.trace(f"crash {node_id} in persist (its early messages are out)")
            self.count("crashes_in_persist")
            return
        core = _core(node)
        self.invariants.check_node(core)
        if core.log.base_seq != self.bases.get(node_id):
            self.bases[node_id] = core.log.base_seq
            self.invariants.check_log(core, 8)
        if core.role is Role.LEADER and core.term not in self.elected:
            self.elected.add(core.term)
            self.max_leader_term = max(self.max_leader_term, core.term)
            if self.diverges(core):
                self.count("divergent_elections")

    def _crash_in_persist(self, ready: Ready) -> bool:
        return (
            self.net.faulty
            and self.episode is None
            and "crash_in_persist" in self.nemeses
            and bool(ready.entries or ready.hard_state)
            and self.persist_rng.random() < CRASH_IN_PERSIST
        )

    def diverges(self, leader: RaftCore) -> bool:
        """Whether an up node holds an uncommitted entry that the new leader does not."""
        for node in self.nodes.values():
            log = node.core.log if node.core is not None else None
            if log is None or node.id == leader.id:
                continue
            for seq in range(max(leader.commit, log.base_seq) + 1, log.last_seq + 1):
                if log.term_at(seq) != leader.log.term_at(seq):
                    return True
        return False

    def flush(self) -> None:
        for msg in self.outbox:
            self.net.send(self.now, msg)
        self.outbox = []

    def client_steps(self) -> None:
        rng = self.rng
        for client in self.clients:
            if client.op is None:
                if rng.random() < 0.2:
                    new = client.new_op(
                        rng, self.now, self.cfg.keys, fair_swaps=self.cfg.fair_swaps
                    )
                    self.trace(f"client {client.id} calls {new.kind} {new.key} {new.value!r}")
                else:
                    continue
            op = client.op
            assert op is not None
            if op.node is not None:
                continue
            node = self.nodes[client.target]
            if node.core is None:
                client.leader_guess = rng.choice([i for i in self.nodes if i != client.avoid])
                continue
            if op.kind == "get" and self.follower_read(client, op):
                continue
            if op.kind == "get":
                self.next_request += 1
                result = node.core.read_index(self.next_request)
                if client.submitted(result, node.id, self.now):
                    op.request_id = self.next_request
                    self.pending_reads[(node.id, self.next_request)] = client
                    if node.core.term < self.max_leader_term:
                        self.count("reads_at_superseded_leader")
            else:
                command = op.command(self.clock_ms(node.id), FAIR_WAITER_MS)
                proposed = node.core.propose([command])
                if client.submitted(proposed, node.id, self.now):
                    self.pending_writes[(node.id, op.seq)] = client
                    if node.core.term < self.max_leader_term:
                        self.count("writes_at_superseded_leader")
            if op.node is None and client.leader_guess == node.id:
                client.leader_guess = rng.choice([i for i in self.nodes if i != client.avoid])
            self.drain(node.id)

    def follower_read(self, client: SimClient, op: ClientOp) -> bool:
        """Send `op` as a follower read if it is one (drawn once per read): its node asks the
        leader it knows for a read index. False: an ordinary read."""
        cfg = self.cfg
        if op.reader is None:
            if not cfg.follower_reads or self.follower_rng.random() >= cfg.follower_reads:
                return False
            op.reader = self.follower_rng.choice(sorted(self.nodes))
        reader = self.nodes.get(op.reader)
        leader_id = reader.core.leader_id if reader is not None and reader.core else None
        leader = self.nodes.get(leader_id) if leader_id is not None else None
        if leader is None or leader.core is None:
            return True  # asked again next step (or dropped after OP_TIMEOUT)
        self.next_request += 1
        if client.submitted(leader.core.read_index(self.next_request), leader.id, self.now):
            op.request_id = self.next_request
            self.pending_reads[(leader.id, self.next_request)] = client
        self.drain(leader.id)
        return True

    def follower_steps(self) -> None:
        """Serve the follower reads whose node has applied their read index."""
        waiting = []
        for client, op in self.follower_waits:
            if client.op is not op or op.reader is None:
                continue  # given up
            reader = self.nodes.get(op.reader)
            if reader is None or reader.core is None:
                client.discard()  # the node went away: no answer
                continue
            if reader.core.applied >= op.index or not self.cfg.follower_read_wait:
                client.finish(self.now, reader.machine.get(op.key, 0))
                self.count("follower_reads_ok")
            else:
                waiting.append((client, op))
        self.follower_waits = waiting

    def timeouts(self) -> None:
        for client in self.clients:
            op = client.op
            if op is None:
                continue
            if op.node is None:
                if self.now - op.call > OP_TIMEOUT:
                    client.discard()  # never proposed anywhere
                continue
            if not self.nodes[op.node].up or self.now - op.sent_at > OP_TIMEOUT:
                self.give_up(client)
        for lock_client in self.lock_clients:
            self.lock_timeout(lock_client)

    def give_up(self, client: SimClient) -> None:
        """The client stops waiting: a read had no effect, a write's outcome is unknown."""
        op = client.op
        assert op is not None
        assert op.node is not None
        if op.kind == "get":
            self.pending_reads.pop((op.node, op.request_id), None)
            client.discard()
        else:
            self.pending_writes.pop((op.node, op.seq), None)
            if op.kind == "fair_swap":
                client.finish_fair_swap(None, False, None)
            else:
                client.finish(None)
            self.count("writes_unknown")

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    # ---------------------------------------------------------------- locks

    def track_grants(self, entry: Entry, result: ApplyResult) -> None:
        """Grants as the state machine decides them, at each entry's first apply anywhere."""
        if entry.seq != self.tracked_seq + 1:
            raise InvariantViolation(
                f"entry {entry.seq} applied before {self.tracked_seq + 1} was applied anywhere"
            )
        self.tracked_seq = entry.seq
        command = entry.command
        name = getattr(command, "name", None)
        if name not in self.lock_names:
            return
        if isinstance(command, SetIfNotExist | FairSwap) and result.created:
            # A FairSwap (like a compare) may replace an expired lock the reaper left: that
            # grant ends here.
            ended = self.open_grants.pop(name, None)
            if ended is not None:
                self.grant_log[ended][3] = self.now
            self.grant_log[entry.seq] = [name, command.value, self.now, None]
            self.open_grants[name] = entry.seq
        elif any(change.value is None for change in result.events):
            fence = self.open_grants.pop(name, None)
            if fence is not None:
                self.grant_log[fence][3] = self.now
                if isinstance(command, DeleteIfExpired):
                    self.count("lock_expiries")

    def lock_steps(self, *, starting: bool) -> None:
        """Each lock client's step: stop acting at its deadline, start, renew or release."""
        rng, recorder = self.lock_rng, self.recorder
        assert recorder is not None
        for lc in self.lock_clients:
            if (
                lc.phase == "holding"
                and not lc.stalled
                and lc.handle.released is None
                and self.now >= lc.deadline
            ):
                recorder.release(lc.handle)  # its lease ran out: it stops acting
            if lc.op is not None:
                if lc.op.node is None:
                    self.submit_lock(lc)
                continue
            if lc.phase == "idle":
                if not starting or rng.random() >= 0.03:
                    continue
                lc.counter += 1
                lc.name = rng.choice(self.cfg.locks)
                lc.token = f"l{lc.id}-{lc.counter}".encode()
                lc.ttl = rng.randint(100, 400)
                lc.handle = recorder.request(lc.name, lc.token.decode())
                op = lc.start("lock", self.now)
            elif self.now >= lc.release_at or lc.handle.released is not None:
                if lc.stalled and self.now > lc.deadline:
                    recorder.lose(lc.handle)  # it wakes and sees it slept past its lease
                    self.count("locks_lost")
                else:
                    recorder.release(lc.handle)
                op = lc.start("unlock", self.now)
            elif lc.renew_every and self.now >= lc.next_renew:
                op = lc.start("renew", self.now)
            else:
                continue
            if self.tracing:
                self.trace(f"lock client {lc.id} calls {op.kind} {lc.name} {lc.token!r}")
            self.submit_lock(lc)

    def lock_command(self, lc: LockClient, node_id: str) -> Command:
        """The command of `lc`'s op, with expiries by the clock of the node it goes to."""
        op = lc.op
        assert op is not None
        now_ms = self.clock_ms(node_id)
        expire_at = now_ms + lc.ttl * STEP_MS
        if op.kind == "lock":
            if self.cfg.fair_locks:
                return FairSwap(
                    lc.name, None, lc.token, lc.token, expire_at, False, FAIR_WAITER_MS, now_ms
                )
            return SetIfNotExist(lc.name, lc.token, expire_at)
        if op.kind == "renew":
            return ExpireElement(lc.name, expire_at)
        if self.cfg.fair_locks:
            return LeaveLine(lc.name, lc.token, True, now_ms)
        return CompareAndDelete(lc.name, lc.token, now_ms)

    def submit_lock(self, lc: LockClient) -> None:
        op = lc.op
        assert op is not None
        node = self.nodes[lc.leader_guess]
        if node.core is None:
            lc.leader_guess = self.lock_rng.choice(list(self.nodes))
            return
        proposed = node.core.propose([self.lock_command(lc, node.id)])
        if lc.submitted(proposed, node.id, self.now):
            self.pending_locks[(node.id, op.seq)] = lc
        elif lc.leader_guess == node.id:
            lc.leader_guess = self.lock_rng.choice(list(self.nodes))
        self.drain(node.id)

    def lock_outcome(self, lc: LockClient, node: str, entry: Entry, result: ApplyResult) -> None:
        """A lock client's proposal was applied on the node it went to."""
        op, recorder, rng = lc.op, self.recorder, self.lock_rng
        if op is None or recorder is None:
            return
        lc.op = None
        if entry.term != op.term:  # another entry took its seq: it can never commit
            if op.kind != "renew":
                lc.phase = "idle"
            return
        if self.tracing:
            self.trace(f"lock client {lc.id} {op.kind} {lc.name} at {entry.seq}: {result.created}")
        margin = self.lease_margin - self.cfg.lease_slack
        if op.kind == "lock":
            if not result.created:
                lc.phase = "idle"
                self.count("locks_busy")
                if result.ahead:
                    self.count("locks_queued_behind")
                return
            lc.phase, lc.renew_every = "holding", 0
            lc.deadline = op.call + lc.ttl - margin
            lc.stalled = rng.random() < 0.15
            if self.now >= lc.deadline:
                # Granted, but its lease ran out before it heard (a lagging node): it never
                # holds it (the handle stays unacquired) and releases it at once.
                lc.stalled, lc.release_at = False, self.now
                self.count("locks_too_late")
                return
            recorder.acquired(lc.handle, entry.seq)
            self.count("locks_acquired")
            if lc.stalled:  # paused past its lease: the reaper hands the lock on
                lc.release_at = self.now + lc.ttl + rng.randint(20, 300)
                self.count("lock_stalls")
            elif rng.random() < 0.3:
                lc.renew_every = lc.ttl // 3
                lc.next_renew = self.now + lc.renew_every
                lc.release_at = self.now + rng.randint(lc.ttl // 2, 2 * lc.ttl)
            else:
                lc.release_at = self.now + rng.randint(1, max(1, lc.deadline - self.now))
        elif op.kind == "renew":
            element = self.nodes[node].machine.element(lc.name)
            if element is not None and element.value == lc.token:
                lc.deadline = max(lc.deadline, op.call + lc.ttl - margin)
                lc.next_renew = self.now + lc.renew_every
                self.count("lock_renewals")
            else:
                # Not ours any more: it stops now. Not a loss it may be excused for (it was
                # not paused): if the grant ended before, the holds-against-grants check fails.
                recorder.release(lc.handle)
                lc.phase = "idle"
                self.count("lock_renewals_failed")
        else:
            if not result.created:  # it expired around the release (the hold ended before)
                self.count("lock_releases_expired")
            lc.phase = "idle"

    def lock_timeout(self, lc: LockClient) -> None:
        """Give up on a lock op: never proposed (no effect) or outcome unknown."""
        op = lc.op
        if op is None:
            return
        if op.node is None:
            if self.now - op.call <= OP_TIMEOUT:
                return
        elif self.nodes[op.node].up and self.now - op.sent_at <= OP_TIMEOUT:
            return
        else:
            self.pending_locks.pop((op.node, op.seq), None)
            self.count(f"lock_{op.kind}_unknown")
        if op.node is None:
            self.count(f"lock_{op.kind}_unsent")
        lc.op = None
        # An unknown acquisition is never acted on (a grant, if any, expires unused); an
        # unknown renewal leaves the deadline as it was; an unknown release ends the hold.
        if op.kind != "renew":
            lc.phase = "idle"

    def reap(self) -> None:
        """The leader proposes `DeleteIfExpired(name, now)` for expired elements, by its clock."""
        for node in self.nodes.values():
            core = node.core
            if core is None or core.role is not Role.LEADER:
                continue
            now_ms = self.clock_ms(node.id)
            due = [n for n, at in node.machine.expiration_table().items() if at <= now_ms]
            for name in sorted(due):
                if self.tracing:
                    self.trace(f"{node.id} reaps {name} at {now_ms}")
                core.propose([DeleteIfExpired(name, now_ms)])
            if due:
                self.drain(node.id)

    def check_locks(self) -> None:
        """Mutual exclusion and fence order of holds and grants, and holds within grants."""
        from dref_compat.fencing import (
            Hold,
            check_mutual_exclusion,
            check_within_grants,
        )

        assert self.recorder is not None
        holds = self.result.holds = self.recorder.holds()
        grants = self.result.grants = [
            Hold(name, token.decode(), fence, float(start), None if end is None else float(end))
            for fence, (name, token, start, end) in sorted(self.grant_log.items())
        ]
        self.stats["lock_grants"] = len(grants)
        self.stats["lock_holds"] = len(holds)
        by_name: dict[str, list[Hold]] = {}
        for grant in grants:
            by_name.setdefault(grant.name, []).append(grant)
        successor = {
            a.fence or 0: b for same in by_name.values() for a, b in itertools.pairwise(same)
        }
        #: Paused holders still acting when the next holder got the lock: only fences save them.
        self.stats["lock_fenced_overlaps"] = sum(
            1
            for h in holds
            if h.lost
            and (nxt := successor.get(h.fence or 0)) is not None
            and (h.released is None or nxt.acquired < h.released)
        )
        verdicts = [
            ("client holds", check_mutual_exclusion(holds)),
            ("state-machine grants", check_mutual_exclusion(grants)),
            ("holds against grants", check_within_grants(holds, grants)),
        ]
        self.result.locks = "; ".join(f"{what}: {v.explanation}" for what, v in verdicts)
        for what, verdict in verdicts:
            if verdict.ok is not True:
                self.result.failure = f"locks ({what}): {verdict.explanation}"
                return

    # ---------------------------------------------------------------- end

    def settle(self) -> None:
        """Without faults or clients, run until every node applied the leader's commit."""
        for now in range(self.cfg.steps, self.cfg.steps + SETTLE_STEPS):
            self.now = now
            if "membership" in self.nemeses:
                self.decommission()
            if self.now % 50 == 0 and self.converged():
                return
            self.deliver()
            self.ticks()
            self.timeouts()
            self.flush()

    def converged(self) -> bool:
        leaders = [n.core for n in self.nodes.values() if n.core and n.core.role is Role.LEADER]
        return len(leaders) == 1 and all(
            (n := self.nodes[i]).core is not None and n.core.applied == leaders[0].commit
            for i in self.live_ids()
        )

    def final_checks(self) -> None:
        leaders = [n for n in self.nodes.values() if n.core and n.core.role is Role.LEADER]
        if not leaders:
            raise InvariantViolation("liveness: no leader after the faults ended")
        leader = leaders[-1]
        assert leader.core is not None
        states = {i: dict(self.nodes[i].machine.elements()) for i in self.live_ids()}
        for node_id in self.live_ids():
            node = self.nodes[node_id]
            assert node.core is not None
            if node.core.applied != leader.core.commit or states[node_id] != states[leader.id]:
                raise InvariantViolation(
                    f"liveness: {node_id} applied {node.core.applied}, leader {leader.id} "
                    f"committed {leader.core.commit}; states equal: "
                    f"{states[node_id] == states[leader.id]}"
                )
        self.stats["committed"] = leader.core.commit
        if "membership" in self.nemeses:
            self.stats["final_voters"] = len(leader.core.voters)
        self.stats["terms"] = len(self.invariants.leaders)

    def check_history(self) -> None:
        from dref_compat.history import Operation
        from dref_compat.linearizability import check_linearizable

        ops: list[Any] = [
            Operation(o.client, o.key, o.kind, o.value, o.expected, o.output, o.call, o.ret)  # type: ignore[arg-type]
            for o in self.result.history
        ]
        verdict = check_linearizable(ops, timeout=20.0)
        self.result.linearizability = str(verdict)
        if verdict.ok is False:
            self.result.failure = f"history is not linearizable: {verdict.explanation}"


def _core(node: SimNode) -> RaftCore:
    core = node.core
    assert core is not None, f"{node.id} is down"
    return core


def _describe(msg: Message) -> str:
    text = repr(msg)
    return text if len(text) <= 200 else text[:197] + "..."


def run_seed(seed: int, config: SimConfig | None = None, *, trace: bool = False) -> SimResult:
    """Run one seed; the same seed and config always give the same result and trace."""
    return _Run(seed, config or SimConfig(), trace).run()
