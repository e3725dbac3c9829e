"""`RaftCore`: the pure, deterministic Raft state machine (etcd-io/raft's `RawNode`, in Python).

No clock, I/O, threads or global randomness: time is `tick()`, input is `step()`,
`propose()` and `read_index()`, output is `ready()`. The same inputs (and the same seeded
`random.Random`) give the same outputs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from dref_raft.commands import (
    DREF_ONLY_COMMANDS,
    Command,
    ConfigChange,
    DeleteElement,
    DeleteIfExpired,
    ExpireElement,
    Membership,
    SetElement,
    SetIfNotExist,
    StartNewTerm,
)
from dref_raft.core.config import CoreConfig
from dref_raft.core.log import RaftLog
from dref_raft.core.membership import (
    bootstrap_membership,
    change_error,
    last_config_in,
    latest_config,
)
from dref_raft.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    PreVote,
    PreVoteResponse,
    ReadIndex,
    ReadIndexResponse,
    Vote,
    VoteResponse,
)
from dref_raft.core.progress import PeerKind, Progress, ReplicationState
from dref_raft.core.ready import CoreState, Ready
from dref_raft.core.types import (
    ConfigRefused,
    Entry,
    HardState,
    NotLeader,
    Proposed,
    ReadState,
    Role,
    Snapshot,
    SoftState,
)
from dref_raft.fsm import ClusterSnapshot

__all__ = ["RaftCore"]

_LEADER_MESSAGES = (AppendEntries, Heartbeat, ReadIndex, InstallSnapshot)


@dataclass(slots=True)
class _ReadBatch:
    seq: int
    request_ids: list[int]
    acks: set[str] = field(default_factory=set)
    #: The leader's tick count when the round was sent (where a lease it confirms starts).
    sent_at: int = 0


def command_size(command: Command) -> int:
    """An estimate of a command's encoded size, for batch byte limits."""
    match command:
        case SetElement(name, value, _) | SetIfNotExist(name, value, _):
            return len(name) + len(value) + 16
        case DeleteElement(name) | ExpireElement(name, _) | DeleteIfExpired(name, _):
            return len(name) + 12
    return 2


class RaftCore:
    """One node's Raft state. See docs/raft-consensus.md for the driver contract."""

    def __init__(
        self,
        node_id: str,
        peers: Sequence[str],
        *,
        rng: random.Random,
        config: CoreConfig | None = None,
        state: CoreState | None = None,
        joining: bool = False,
    ) -> None:
        state = state if state is not None else CoreState()
        self.id = node_id
        #: The other voters and the learners of the configuration in force (`_use_config`).
        self.peers: tuple[str, ...] = ()
        self.learners: tuple[str, ...] = ()
        self.config = config if config is not None else CoreConfig()
        self._rng = rng
        self.log = RaftLog(state.snapshot, state.entries)
        if state.commit > self.log.last_seq:
            raise ValueError(f"commit {state.commit} is beyond the log ({self.log.last_seq})")
        self.term = state.term
        self.vote = state.vote
        self.commit = max(state.commit, self.log.snapshot.seq)
        #: Highest seq handed to the driver to apply (restored state: applied through commit).
        self.applied = self.commit
        self._stable = self.log.last_seq
        self.role = Role.FOLLOWER
        self.leader_id: str | None = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = 0
        #: Ticks left during which this node does not start elections (after `step_down`).
        self._campaign_hold = 0
        #: Ticks so far, and the tick from which a majority-confirmed lease runs (-1: none).
        self._now = 0
        self._lease_from = -1
        #: Lease reads: a (re)started node grants no vote for one election timeout, as if it
        #: had just heard from a leader (it may have, before it stopped).
        self._vote_hold = self.config.election_ticks if self.config.lease_ticks else 0
        self._randomize_timeout()
        self._votes: dict[str, bool] = {}
        self._progress: dict[str, Progress] = {}
        self.peer_kinds: dict[str, PeerKind] = {}
        #: `peers` (and `joining`) give the configuration until the log holds one.
        self._bootstrap = bootstrap_membership(node_id, peers, joining=joining)
        self.membership = self._bootstrap
        self.voters: frozenset[str] = frozenset()
        #: The seq of the configuration entry in force (0: the bootstrap configuration).
        self.config_seq = 0
        self._reload_config()
        self._messages: list[Message] = []
        self._saved_hard = HardState(self.term, self.vote, self.commit)
        self._reported_soft = SoftState(self.role, None, self.term)
        self._snapshot_to_install: Snapshot | None = None
        self._reads_ready: list[ReadState] = []
        self._reads_dropped: list[int] = []
        self._reads_waiting: list[int] = []
        self._reads_open: list[int] = []
        self._read_batches: dict[int, _ReadBatch] = {}
        self._read_ctx = 0
        self._broadcast_append = False
        self._broadcast_heartbeat = False
        #: A commit moved (or a peer's match did): heartbeat the peers no append tells it.
        self._commit_news = False
        self._in_ready = False
        #: Leadership transfer in progress (`transfer_leadership`): the target, the leader
        #: ticks since it started, and whether TimeoutNow went out.
        self.transfer_target: str | None = None
        self._transfer_elapsed = 0
        self._timeout_now_sent = False

    # ------------------------------------------------------------------ properties

    @property
    def quorum(self) -> int:
        """Votes or acknowledgements needed: a majority of the voters (self included if it
        votes)."""
        return len(self.voters) // 2 + 1

    @property
    def soft_state(self) -> SoftState:
        """Role, known leader and term right now."""
        return SoftState(self.role, self.leader_id, self.term)

    @property
    def wants_snapshot(self) -> bool:
        """Whether the driver should call `offer_snapshot` (after `advance`) with its state
        machine at `applied`: an upstream peer can only be repaired by a full snapshot, and
        the log's compacted snapshot may be far behind what it already holds."""
        return self.role is Role.LEADER and any(pr.awaits_offer for pr in self._progress.values())

    def progress(self, peer: str) -> Progress | None:
        """The leader's replication progress of `peer` (None when not leader)."""
        return self._progress.get(peer)

    # ------------------------------------------------------------------ inputs

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self._check_not_in_ready()
        self._now += 1
        if self._vote_hold > 0:
            self._vote_hold -= 1
        if self.role is Role.LEADER:
            self._tick_leader()
        elif self._campaign_hold > 0:
            self._campaign_hold -= 1
        else:
            self._election_elapsed += 1
            # Learners and removed members never campaign.
            if self._election_elapsed >= self._randomized_timeout and self.id in self.voters:
                self._campaign(pre=self.config.pre_vote)

    def propose(self, commands: Sequence[Command]) -> Proposed | NotLeader:
        """Append `commands` as one batch if this node leads; they are sent on `ready()`."""
        self._check_not_in_ready()
        if self.role is not Role.LEADER:
            return NotLeader(self.leader_id)
        if self.transfer_target is not None:
            return NotLeader(self.transfer_target)  # handing over: retry with the target
        if not commands or len(commands) > self.config.max_proposal_entries:
            raise ValueError(f"propose 1..{self.config.max_proposal_entries} commands")
        if any(isinstance(c, ConfigChange) for c in commands):
            raise ValueError("configuration changes go through propose_membership")
        first = self.log.last_seq + 1
        self.log.append([Entry(first + i, self.term, c) for i, c in enumerate(commands)])
        self._broadcast_append = True
        return Proposed(self.term, first, self.log.last_seq)

    def propose_membership(self, membership: Membership) -> Proposed | NotLeader | ConfigRefused:
        """Append a configuration change; it is in force at once, on every node as soon as it
        holds the entry (Raft thesis §4.1).

        Refused while the previous change is not committed, before the leader committed an
        entry of its own term, when it is not a single-server change (`change_error`), and
        when a member is known to be an upstream node (it would ignore the entry).
        """
        self._check_not_in_ready()
        if self.role is not Role.LEADER:
            return NotLeader(self.leader_id)
        if self.transfer_target is not None:
            return ConfigRefused("a leadership transfer is in progress", retriable=True)
        if self.config_seq > self.commit:
            return ConfigRefused(
                f"a configuration change is in progress (entry {self.config_seq} is not "
                "committed yet)",
                retriable=True,
            )
        if not self._committed_own_term():
            return ConfigRefused(
                "the leader has not committed an entry of its term yet", retriable=True
            )
        error = change_error(self.membership, membership)
        if error is not None:
            return ConfigRefused(error)
        upstream = sorted(p for p, k in self.peer_kinds.items() if k is PeerKind.UPSTREAM)
        if upstream:
            return ConfigRefused(f"mixed_cluster: {upstream} are upstream nodes")
        seq = self.log.last_seq + 1
        self.log.append([Entry(seq, self.term, ConfigChange(membership))])
        self._use_config(seq, membership)
        self._broadcast_append = True
        return Proposed(self.term, seq, seq)

    def transfer_leadership(self, target: str | None = None) -> str | NotLeader | ConfigRefused:
        """Hand leadership to `target` (None: the most up-to-date dref voter); the target.

        The leader refuses proposals from now on (`NotLeader` naming the target), brings the
        target up to date, then tells it to campaign at once (a `Heartbeat` with
        `timeout_now`, a dref extension: only dref voters are eligible). The target's election
        skips PreVote and the voters' leader lease. The leader gives up after one election
        timeout and leads on as before.
        """
        self._check_not_in_ready()
        if self.role is not Role.LEADER:
            return NotLeader(self.leader_id)
        eligible = [p for p in self.peers if self.peer_kinds.get(p) is PeerKind.DREF]
        if target is None:
            if not eligible:
                return ConfigRefused("no other voter that runs dref to hand leadership to")
            target = max(eligible, key=lambda p: (self._progress[p].match_seq, p))
        elif target == self.id:
            return ConfigRefused(f"{target} already leads")
        elif target not in self.peers:
            return ConfigRefused(f"{target!r} is not another voter ({', '.join(self.peers)})")
        elif target not in eligible:
            return ConfigRefused(f"{target} has not advertised the dref extensions")
        self.transfer_target, self._transfer_elapsed = target, 0
        self._timeout_now_sent = False
        self._maybe_timeout_now()
        return target

    def _maybe_timeout_now(self) -> None:
        """Send TimeoutNow once the transfer target holds the whole log, else catch it up."""
        target = self.transfer_target
        if target is None or self._timeout_now_sent:
            return
        pr = self._progress[target]
        if pr.match_seq >= self.log.last_seq:
            self._timeout_now_sent = True
            commit = min(self.commit, pr.match_seq)
            self._send(Heartbeat(self.id, target, self.term, commit, True, timeout_now=True))
        else:
            self._send_append(target)

    def step_down(self) -> bool:
        """Give up leadership so that another member gets elected (False: not the leader).

        The leader becomes a follower in the same term: it stops heartbeats and refuses
        proposals and reads at once (pending reads are dropped; its uncommitted entries commit
        under the next leader or are replaced, as after any leader change), and it starts no
        election for one maximum election timeout, so one of the others, whose election timers
        fire first, wins. It still votes. Upstream's message set has no `TimeoutNow`, so this is
        not etcd's targeted transfer: the next leader is whichever up-to-date member wins.
        """
        self._check_not_in_ready()
        if self.role is not Role.LEADER:
            return False
        self._become_follower(self.term, None)
        self._campaign_hold = self.config.max_election_ticks
        return True

    def read_index(self, request_id: int) -> NotLeader | None:
        """Ask for a linearizable read; it comes back in `Ready.reads` (or `dropped_reads`).

        The leader waits until an entry of its own term is committed, then confirms its
        leadership with a majority (one ReadIndex round shared by all reads of a batch).
        """
        self._check_not_in_ready()
        if self.role is not Role.LEADER:
            return NotLeader(self.leader_id)
        if self._committed_own_term() and self._lease_valid():
            self._reads_ready.append(ReadState(request_id, self.commit))
        elif self._committed_own_term():
            self._reads_open.append(request_id)
        else:
            self._reads_waiting.append(request_id)
        return None

    def compact(self, through_seq: int, data: ClusterSnapshot, *, keep: int = 0) -> None:
        """Record the driver's snapshot of the state machine at `through_seq` (≤ applied)
        and drop the log entries it covers but the last `keep` of them (a follower less than
        `keep` entries behind then catches up from the log, not from a snapshot). The driver
        saves the snapshot itself."""
        self._check_not_in_ready()
        if through_seq > self.applied:
            raise ValueError(f"cannot compact through {through_seq}: applied is {self.applied}")
        term = self.log.term_at(through_seq)
        if term is None:
            return  # already compacted further
        self.log.compact(Snapshot(through_seq, term, data), keep=keep)

    def hold_snapshot_as(self, data: ClusterSnapshot) -> bool:
        """Hold the log's snapshot as `data`, the same state held another way (the driver
        keeps its entries in the saved file while it takes the next snapshot). False (nothing
        changed) while that snapshot is still to be installed, or when `data` covers another
        seq or count of entries."""
        self._check_not_in_ready()
        held = self.log.snapshot
        if (
            self._snapshot_to_install is not None
            or data.last_seq != held.data.last_seq
            or len(data.entries) != len(held.data.entries)
        ):
            return False
        self.log.snapshot = Snapshot(held.seq, held.term, data)
        return True

    def offer_snapshot(self, seq: int, data: ClusterSnapshot) -> None:
        """The driver's state machine at `seq` (≤ `applied`: a driver may take it at `applied`
        and build it while it applies on), asked for by `wants_snapshot`: sent as
        `InstallSnapshot` to every upstream peer waiting for one that asked when `applied` was
        at most `seq` (the others wait for a newer offer). Ignored when this node no longer
        leads or `seq` was compacted away meanwhile."""
        self._check_not_in_ready()
        if seq > self.applied:
            raise ValueError(f"cannot offer the state at {seq}: applied is {self.applied}")
        term = self.log.term_at(seq)
        if self.role is not Role.LEADER or term is None:
            return
        snap = Snapshot(seq, term, data)
        for peer, pr in self._progress.items():
            if pr.awaits_offer and pr.offer_from <= seq:
                self._send_install(peer, snap)

    def step(self, msg: Message) -> None:
        """Handle one received message."""
        self._check_not_in_ready()
        if msg.to != self.id:
            return
        if msg.sender not in self.peer_kinds:
            if not self._admits(msg):
                self._reject(msg)  # not a member: refused with our term, nothing changes
                return
            self.peer_kinds[msg.sender] = PeerKind.UNKNOWN
        if msg.term >= self.term or isinstance(msg, PreVoteResponse):
            # Learned from current messages only: a stale (delayed or forged) one in the
            # other format must not change how we replicate to the peer.
            self.peer_kinds[msg.sender] = PeerKind.DREF if msg.ext else PeerKind.UPSTREAM
        if msg.term > self.term:
            if isinstance(msg, PreVote) or (isinstance(msg, PreVoteResponse) and msg.granted):
                pass
            elif (
                isinstance(msg, Vote)
                and self.config.check_quorum
                and self._in_lease()
                and not msg.transfer  # the leader asked for this election
            ):
                self._send(VoteResponse(self.id, msg.sender, self.term, False, ext=True))
                return
            elif isinstance(msg, _LEADER_MESSAGES):
                self._become_follower(msg.term, msg.sender)
            else:
                self._become_follower(msg.term, None)
        elif msg.term < self.term and not isinstance(msg, PreVoteResponse):
            self._reject(msg)
            return
        self._dispatch(msg)

    # ------------------------------------------------------------------ output

    def has_ready(self) -> bool:
        """Whether `ready()` would return anything."""
        return bool(
            self._messages
            or self._broadcast_append
            or self._broadcast_heartbeat
            or self._commit_news
            or self._reads_open
            or self._snapshot_to_install
            or self.log.truncate_from is not None
            or self.log.unstable_from <= self.log.last_seq
            or HardState(self.term, self.vote, self.commit) != self._saved_hard
            or self.soft_state != self._reported_soft
            or self.commit > self.applied
            or self._reads_ready
            or self._reads_dropped
        )

    def ready(self) -> Ready:
        """Drain everything the driver must persist, send and apply; then call `advance`."""
        self._check_not_in_ready()
        self._flush()
        hard = HardState(self.term, self.vote, self.commit)
        soft = self.soft_state
        committed: tuple[Entry, ...] = ()
        if self.commit > self.applied:
            committed = tuple(self.log.slice(self.applied + 1, self.commit))
        ready = Ready(
            messages=tuple(self._messages),
            snapshot=self._snapshot_to_install,
            truncate_from=self.log.truncate_from,
            entries=tuple(self.log.unstable()),
            hard_state=hard if hard != self._saved_hard else None,
            committed=committed,
            reads=tuple(self._reads_ready),
            dropped_reads=tuple(self._reads_dropped),
            soft_state=soft if soft != self._reported_soft else None,
        )
        self._messages = []
        self._reads_ready = []
        self._reads_dropped = []
        self._in_ready = True
        return ready

    def advance(self, ready: Ready) -> None:
        """The driver persisted, sent and applied `ready`."""
        if not self._in_ready:
            raise RuntimeError("advance() without ready()")
        self._in_ready = False
        if ready.snapshot is not None:
            self._snapshot_to_install = None
            self.applied = max(self.applied, ready.snapshot.seq)
        if ready.truncate_from is not None:
            self._stable = min(self._stable, ready.truncate_from - 1)
            self.log.truncate_from = None
        if ready.entries:
            self._stable = ready.entries[-1].seq
            self.log.unstable_from = self._stable + 1
        if ready.snapshot is not None:
            self._stable = max(self._stable, ready.snapshot.seq)
        if ready.hard_state is not None:
            self._saved_hard = ready.hard_state
        if ready.soft_state is not None:
            self._reported_soft = ready.soft_state
        if ready.committed:
            self.applied = ready.committed[-1].seq
        if self.role is Role.LEADER:
            self._maybe_commit()
            if self.id not in self.voters and self.commit >= self.config_seq:
                # Removed: it led until its removal committed (and was sent), now it goes.
                self._become_follower(self.term, None)

    # ------------------------------------------------------------------ configuration

    def _reload_config(self) -> None:
        """Use the last configuration the log holds (after a restart, truncation or
        snapshot install)."""
        self._use_config(*latest_config(self.log, self._bootstrap))

    def _note_appended(self, entries: Sequence[Entry]) -> None:
        """A configuration entry is in force as soon as it is appended."""
        entry = last_config_in(entries)
        if entry is not None:
            assert isinstance(entry.command, ConfigChange)
            self._use_config(entry.seq, entry.command.membership)

    def _use_config(self, seq: int, membership: Membership) -> None:
        self.config_seq, self.membership = seq, membership
        self.voters = frozenset(membership.voters)
        self.peers = tuple(sorted(v for v in self.voters if v != self.id))
        self.learners = tuple(sorted(v for v in membership.learners if v != self.id))
        members = {*self.peers, *self.learners}
        self.peer_kinds = {p: self.peer_kinds.get(p, PeerKind.UNKNOWN) for p in members}
        if self.role is Role.LEADER:
            for peer in sorted(members - self._progress.keys()):
                # A new member: probe from the configuration entry itself (it backs off).
                self._progress[peer] = Progress(max(1, seq), recent_active=True)
            for peer in self._progress.keys() - members:
                del self._progress[peer]

    def _admits(self, msg: Message) -> bool:
        """Whether a message from a non-member is taken: a leader's, by a node joining (it
        knows no configuration yet) or by one whose configuration changed (a leader added
        later than the configuration it holds)."""
        return (
            isinstance(msg, _LEADER_MESSAGES)
            and msg.term >= self.term
            and (not self.voters or self.config_seq > 0)
        )

    def _maybe_promote(self) -> None:
        """Promote the first learner that holds the configuration entry in force and is within
        `learner_promotion_lag` entries of the end of the log."""
        lag = self.config.learner_promotion_lag
        if lag < 0 or not self.learners or self.config_seq > self.commit:
            return
        for learner in self.learners:
            pr = self._progress.get(learner)
            # It must hold the configuration that made it a learner (it is alive and caught
            # up to there), and be within `lag` of the end of the log.
            if (
                pr is not None
                and pr.match_seq >= self.config_seq
                and pr.match_seq + lag >= self.log.last_seq
            ):
                m = self.membership
                self.propose_membership(
                    Membership(
                        tuple(sorted({*m.voters, learner})),
                        tuple(x for x in m.learners if x != learner),
                        m.addresses,
                    )
                )
                return

    # ------------------------------------------------------------------ roles

    def _randomize_timeout(self) -> None:
        self._randomized_timeout = self._rng.randint(
            self.config.election_ticks, self.config.max_election_ticks
        )

    def _in_lease(self) -> bool:
        if self._vote_hold > 0:
            return True
        return self.leader_id is not None and self._election_elapsed < self.config.election_ticks

    def _lease_valid(self) -> bool:
        """Lease reads: a majority confirmed a round sent less than `lease_ticks` ago, so no
        other leader can have been elected since (they refuse votes for `election_ticks`)."""
        lease = self.config.lease_ticks
        return lease > 0 and self._lease_from >= 0 and self._now - self._lease_from < lease

    def _become_follower(self, term: int, leader: str | None) -> None:
        self.transfer_target = None
        self._lease_from = -1
        if term > self.term:
            self.term = term
            self.vote = None
        if self.role is Role.LEADER:
            self._drop_reads()
        self.role = Role.FOLLOWER
        self.leader_id = leader
        self._progress = {}
        self._votes = {}
        self._election_elapsed = 0
        self._randomize_timeout()

    def _campaign(self, *, pre: bool, transfer: bool = False) -> None:
        self._election_elapsed = 0
        self._randomize_timeout()
        self.leader_id = None
        self._votes = {self.id: True}
        if pre:
            self.role = Role.PRE_CANDIDATE
        else:
            self.role = Role.CANDIDATE
            self.term += 1
            self.vote = self.id
        if self._tally_votes():
            return
        last_seq, last_term = self.log.last_seq, self.log.last_term
        # Learners are asked too (one may be a voter in a newer configuration); only the
        # voters of this node's configuration count.
        for peer in (*self.peers, *self.learners):
            if pre:
                self._send(PreVote(self.id, peer, self.term + 1, last_seq, True, last_term))
            else:
                self._send(Vote(self.id, peer, self.term, last_seq, True, last_term, transfer))

    def _tally_votes(self) -> bool:
        """Act on the votes so far; True when the election is decided."""
        granted = sum(v for p, v in self._votes.items() if p in self.voters)
        rejected = sum(not v for p, v in self._votes.items() if p in self.voters)
        if granted >= self.quorum:
            if self.role is Role.PRE_CANDIDATE:
                self._campaign(pre=False)
            else:
                self._become_leader()
            return True
        if rejected >= self.quorum:
            self._become_follower(self.term, None)
            return True
        return False

    def _become_leader(self) -> None:
        self._use_config(self.config_seq, self.membership)  # forget admitted non-members
        self.role = Role.LEADER
        self.leader_id = self.id
        self._votes = {}
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        next_seq = self.log.last_seq + 1
        self._progress = {
            p: Progress(next_seq, recent_active=True) for p in (*self.peers, *self.learners)
        }
        self._read_batches = {}
        self._lease_from = -1
        # The term-start marker: committing it commits every earlier entry (Raft §5.4.2)
        # and makes the terms of stored entries recoverable (restore_entries).
        self.log.append([Entry(next_seq, self.term, StartNewTerm())])
        self._broadcast_append = True
        self._maybe_commit()

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self.transfer_target is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self.config.election_ticks:
                self.transfer_target = None  # it did not take over: lead on
        if self._election_elapsed >= self.config.election_ticks:
            self._election_elapsed = 0
            if self.config.check_quorum:
                active = (self.id in self.voters) + sum(
                    pr.recent_active for p, pr in self._progress.items() if p in self.voters
                )
                if active < self.quorum:
                    self._become_follower(self.term, None)
                    return
                for pr in self._progress.values():
                    pr.recent_active = False
        for peer, pr in self._progress.items():
            if pr.state is ReplicationState.SNAPSHOT:
                pr.snapshot_age += 1
                if pr.snapshot_age >= self.config.election_ticks:
                    pr.become_probe()
                    self._send_append(peer)
            elif pr.state is ReplicationState.PROBE and pr.probe_sent:
                pr.probe_age += 1
                if pr.probe_age >= self.config.election_ticks:  # lost: send it again
                    pr.probe_sent = False
                    self._send_append(peer)
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat = True
            self._resend_reads()
            self._maybe_promote()

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, msg: Message) -> None:
        match msg:
            case AppendEntries():
                self._on_leader_contact(msg.sender)
                self._handle_append(msg)
            case Heartbeat():
                self._on_leader_contact(msg.sender)
                self._handle_heartbeat(msg)
            case InstallSnapshot():
                self._on_leader_contact(msg.sender)
                self._handle_snapshot(msg)
            case ReadIndex():
                self._on_leader_contact(msg.sender)
                granted = self.leader_id == msg.sender
                self._send(
                    ReadIndexResponse(self.id, msg.sender, self.term, granted, msg.read_ctx, True)
                )
            case Vote():
                self._handle_vote(msg)
            case PreVote():
                self._handle_pre_vote(msg)
            case VoteResponse():
                if self.role is Role.CANDIDATE and msg.term == self.term:
                    self._votes[msg.sender] = msg.granted
                    self._tally_votes()
            case PreVoteResponse():
                if self.role is Role.PRE_CANDIDATE and msg.term <= self.term + 1:
                    self._votes[msg.sender] = msg.granted
                    self._tally_votes()
            case _ if (
                self.role is not Role.LEADER
                or msg.term != self.term
                or msg.sender not in self._progress  # no longer a member
            ):
                return
            case AppendEntriesResponse():
                self._handle_append_response(msg)
                if msg.sender == self.transfer_target:
                    self._maybe_timeout_now()
            case HeartbeatResponse():
                self._handle_heartbeat_response(msg)
            case InstallSnapshotResponse():
                self._handle_snapshot_response(msg)
            case ReadIndexResponse():
                self._handle_read_index_response(msg)

    def _reject(self, msg: Message) -> None:
        """Refuse a request (from a lower term, or from a non-member) with our term, as
        upstream does; responses are dropped."""
        to, term = msg.sender, self.term
        match msg:
            case AppendEntries():
                self._send(
                    AppendEntriesResponse(
                        self.id, to, term, False, ext=True, reject_hint=self.log.last_seq
                    )
                )
            case Heartbeat():
                self._send(HeartbeatResponse(self.id, to, term, False, True, self.log.last_seq))
            case InstallSnapshot():
                self._send(InstallSnapshotResponse(self.id, to, term, False, ext=True))
            case ReadIndex():
                self._send(ReadIndexResponse(self.id, to, term, False, msg.read_ctx, True))
            case Vote():
                self._send(VoteResponse(self.id, to, term, False, True))
            case PreVote():
                self._send(PreVoteResponse(self.id, to, term, False, True))

    def _on_leader_contact(self, leader: str) -> None:
        if self.role is not Role.FOLLOWER or self.leader_id != leader:
            self._become_follower(self.term, leader)
        self._election_elapsed = 0

    # ------------------------------------------------------------------ follower side

    def _handle_append(self, msg: AppendEntries) -> None:
        if not msg.ext:
            self._handle_upstream_append(msg)
            return
        entries: Sequence[Entry] = msg.entries
        prev_seq, prev_term = msg.prev_seq, msg.prev_term
        if prev_seq <= self.commit:
            # Entries through our commit are committed, so they match the leader's.
            skip = self.commit - prev_seq
            if skip >= len(entries) and skip > 0:
                self._append_reply(msg.sender, True, self.commit)
                return
            entries = entries[skip:]
            prev_seq = self.commit
            prev_term = self._term_at_or_zero(prev_seq)
        if self.log.term_at(prev_seq) != prev_term:
            self._append_reply(msg.sender, False, 0, self._reject_hint(prev_seq))
            return
        for i, entry in enumerate(entries):
            held = self.log.term_at(entry.seq)
            if held == entry.term:
                continue
            if held is not None:
                if entry.seq <= self.commit:
                    raise AssertionError(
                        f"leader {msg.sender} conflicts with committed {entry.seq}"
                    )
                self._truncate_after(entry.seq - 1)
            self.log.append(entries[i:])
            self._note_appended(entries[i:])
            break
        last_new = prev_seq + len(entries)
        self._commit_to(min(msg.commit_seq, last_new))
        self._append_reply(msg.sender, True, last_new)

    def _term_at_or_zero(self, seq: int) -> int:
        term = self.log.term_at(seq)
        return 0 if term is None else term

    def _handle_upstream_append(self, msg: AppendEntries) -> None:
        """Upstream's rule (docs/protocol.md#raft-append-entries): accept only `seq == last_seq +
        1`."""
        if msg.seq != self.log.last_seq + 1:
            self._append_reply(msg.sender, False, 0, self.log.last_seq)
            return
        self.log.append([Entry(msg.seq, msg.term, msg.command)])
        self._commit_to(min(msg.commit_seq, self.log.last_seq))
        self._append_reply(msg.sender, True, msg.seq)

    def _reject_hint(self, prev_seq: int) -> int:
        """The highest seq that may match the leader, skipping a whole conflicting term."""
        if prev_seq > self.log.last_seq:
            return self.log.last_seq
        return max(self.commit, self.log.first_seq_of_term_at(prev_seq) - 1)

    def _append_reply(self, to: str, success: bool, match_seq: int, hint: int = 0) -> None:
        self._send(AppendEntriesResponse(self.id, to, self.term, success, match_seq, True, hint))

    def _truncate_after(self, seq: int) -> None:
        self.log.truncate_after(seq)
        self._stable = min(self._stable, seq)
        if self.config_seq > seq:
            self._reload_config()

    def _commit_to(self, seq: int) -> None:
        if seq > self.commit:
            self.commit = min(seq, self.log.last_seq)

    def _handle_heartbeat(self, msg: Heartbeat) -> None:
        self._commit_to(min(msg.commit_seq, self.log.last_seq))
        self._send(HeartbeatResponse(self.id, msg.sender, self.term, True, True, self.log.last_seq))
        if msg.timeout_now and msg.ext and self.id in self.voters:
            self._campaign(pre=False, transfer=True)  # the leader hands over (TimeoutNow)

    def _handle_snapshot(self, msg: InstallSnapshot) -> None:
        if msg.last_seq > self.commit:
            term = msg.last_term if msg.ext else msg.term
            snapshot = Snapshot(msg.last_seq, term, msg.snapshot)
            self.log.restore(snapshot, keep_suffix=msg.ext)
            self._reload_config()
            self._stable = max(snapshot.seq, min(self._stable, self.log.last_seq))
            self.commit = snapshot.seq
            self.applied = snapshot.seq
            self._snapshot_to_install = snapshot
        self._send(
            InstallSnapshotResponse(self.id, msg.sender, self.term, True, msg.last_seq, True)
        )

    def _up_to_date(self, msg: Vote | PreVote) -> bool:
        if msg.ext:
            return (msg.last_term, msg.last_seq) >= (self.log.last_term, self.log.last_seq)
        return msg.last_seq >= self.log.last_seq  # upstream peers: last_seq only (weaker)

    def _handle_vote(self, msg: Vote) -> None:
        can_vote = self.vote == msg.sender or (self.vote is None and self.leader_id is None)
        granted = can_vote and self._up_to_date(msg)
        if granted:
            self.vote = msg.sender
            self._election_elapsed = 0
        self._send(VoteResponse(self.id, msg.sender, self.term, granted, True))

    def _handle_pre_vote(self, msg: PreVote) -> None:
        granted = (
            msg.term > self.term
            and self.role is not Role.LEADER
            and not self._in_lease()
            and self._up_to_date(msg)
        )
        self._send(PreVoteResponse(self.id, msg.sender, self.term, granted, True))

    # ------------------------------------------------------------------ leader side

    def _committed_own_term(self) -> bool:
        return self.log.term_at(self.commit) == self.term

    def _maybe_commit(self) -> None:
        own = [self._stable] if self.id in self.voters else []  # a removed leader: not counted
        matches = sorted(
            [*own, *(pr.match_seq for p, pr in self._progress.items() if p in self.voters)]
        )
        candidate = matches[len(matches) - self.quorum]
        if candidate > self.commit and self.log.term_at(candidate) == self.term:
            first_own = not self._committed_own_term()
            self.commit = candidate
            self._commit_news = True
            if first_own:
                self._reads_open.extend(self._reads_waiting)
                self._reads_waiting = []

    def _flush(self) -> None:
        if self.role is not Role.LEADER:
            self._broadcast_append = self._broadcast_heartbeat = self._commit_news = False
            return
        if self._broadcast_append:
            self._broadcast_append = False
            for peer in (*self.peers, *self.learners):
                self._send_append(peer)
        if self._broadcast_heartbeat:
            self._broadcast_heartbeat = self._commit_news = False
            for peer in (*self.peers, *self.learners):
                self._send_heartbeat(peer)
        if self._commit_news:
            # Only to the peers whose last AppendEntries did not carry the commit they can use.
            self._commit_news = False
            for peer, pr in self._progress.items():
                if min(self.commit, pr.match_seq) > pr.commit_sent:
                    self._send_heartbeat(peer)
        if self._reads_open:
            ids, self._reads_open = self._reads_open, []
            if not self.peers:
                self._reads_ready.extend(ReadState(i, self.commit) for i in ids)
            else:
                self._read_ctx += 1
                self._read_batches[self._read_ctx] = _ReadBatch(
                    self.commit, ids, {self.id}, self._now
                )
                for peer in self.peers:
                    self._send(ReadIndex(self.id, peer, self.term, True, self._read_ctx))

    def _send_heartbeat(self, peer: str) -> None:
        pr = self._progress[peer]
        commit = min(self.commit, pr.match_seq)
        pr.commit_sent = max(pr.commit_sent, commit)
        self._send(Heartbeat(self.id, peer, self.term, commit, True))

    def _resend_reads(self) -> None:
        if not self._read_batches:
            return
        ctx = max(self._read_batches)
        for peer in self.peers:
            if peer not in self._read_batches[ctx].acks:
                self._send(ReadIndex(self.id, peer, self.term, True, ctx))

    def _drop_reads(self) -> None:
        self._reads_dropped.extend(self._reads_waiting)
        self._reads_dropped.extend(self._reads_open)
        for batch in self._read_batches.values():
            self._reads_dropped.extend(batch.request_ids)
        self._reads_waiting, self._reads_open, self._read_batches = [], [], {}

    def _handle_read_index_response(self, msg: ReadIndexResponse) -> None:
        self._progress[msg.sender].recent_active = True
        batch = self._read_batches.get(msg.read_ctx)
        if not msg.granted or batch is None:
            return
        batch.acks.add(msg.sender)
        if len(batch.acks & self.voters) >= self.quorum:
            for ctx in sorted(c for c in self._read_batches if c <= msg.read_ctx):
                done = self._read_batches.pop(ctx)
                self._reads_ready.extend(ReadState(i, done.seq) for i in done.request_ids)
                self._lease_from = max(self._lease_from, done.sent_at)

    def _send_append(self, peer: str) -> None:
        pr = self._progress[peer]
        if pr.state is ReplicationState.SNAPSHOT:
            return
        kind = self.peer_kinds[peer]
        if (kind is PeerKind.UPSTREAM and not pr.synced) or pr.next_seq <= self.log.base_seq:
            self._send_snapshot(peer)
            return
        if pr.next_seq > self.log.last_seq:
            return
        if kind is not PeerKind.DREF:
            # Upstream (or not yet known): one entry at a time, strictly in order, and never a
            # dref-only entry to a voter not known to be dref (an upstream node would apply it
            # as a no-op and diverge): it waits there until a heartbeat's answer shows it is a
            # dref node. A learner joined through a dref configuration change: it is one.
            held = kind is PeerKind.UPSTREAM or peer not in self.learners
            if held and isinstance(self.log.entry(pr.next_seq).command, DREF_ONLY_COMMANDS):
                return
            if not pr.probe_sent:
                pr.send_probe()
                self._send(self._append_message(peer, pr, pr.next_seq, pr.next_seq))
            return
        if pr.state is ReplicationState.PROBE:
            if not pr.probe_sent:
                pr.send_probe()
                self._send(
                    self._append_message(peer, pr, pr.next_seq, self._batch_end(pr.next_seq))
                )
            return
        while len(pr.inflight) < self.config.max_inflight and pr.next_seq <= self.log.last_seq:
            last = self._batch_end(pr.next_seq)
            self._send(self._append_message(peer, pr, pr.next_seq, last))
            pr.inflight.append(last)
            pr.next_seq = last + 1

    def _batch_end(self, first: int) -> int:
        last = min(self.log.last_seq, first + self.config.max_batch_entries - 1)
        size = 0
        for seq in range(first, last + 1):
            size += command_size(self.log.entry(seq).command)
            if size > self.config.max_batch_bytes and seq > first:
                return seq - 1
        return last

    def _append_message(self, peer: str, pr: Progress, first: int, last: int) -> AppendEntries:
        entries = tuple(self.log.slice(first, last))
        prev_term = self._term_at_or_zero(first - 1)
        kind = self.peer_kinds[peer]
        commit = (
            self.commit if kind is PeerKind.DREF or pr.synced else min(self.commit, pr.match_seq)
        )
        pr.commit_sent = max(pr.commit_sent, min(commit, last))
        return AppendEntries(
            self.id,
            peer,
            self.term,
            first,
            entries[0].command,
            commit,
            True,
            first - 1,
            prev_term,
            entries,
        )

    def _send_snapshot(self, peer: str) -> None:
        if self.peer_kinds[peer] is PeerKind.UPSTREAM:
            # Upstream replaces its state wholesale and continues at the snapshot's seq + 1:
            # send the state at `applied` (as upstream's leader does), not the older compacted
            # snapshot, which would throw away what the peer already holds.
            progress = self._progress[peer]
            progress.become_snapshot(-1)  # see `wants_snapshot`
            progress.offer_from = self.applied
            return
        self._send_install(peer, self.log.snapshot)

    def _send_install(self, peer: str, snap: Snapshot) -> None:
        self._progress[peer].become_snapshot(snap.seq)
        self._send(InstallSnapshot(self.id, peer, self.term, snap.data, snap.seq, True, snap.term))

    def _handle_append_response(self, msg: AppendEntriesResponse) -> None:
        pr = self._progress[msg.sender]
        pr.recent_active = True
        if not msg.ext:
            # Upstream peer: its log is trusted only after our snapshot reset it this term;
            # any rejection is answered with a snapshot (upstream's own recovery,
            # docs/protocol.md#raft-install-snapshot).
            if pr.state is ReplicationState.SNAPSHOT:
                return
            if not pr.synced or not msg.success:
                self._send_snapshot(msg.sender)
                return
            pr.probe_sent = False
            if pr.acknowledge(msg.match_seq):
                self._maybe_commit()
            self._send_append(msg.sender)
            return
        if msg.success:
            if pr.acknowledge(msg.match_seq):
                self._maybe_commit()
                if min(self.commit, pr.match_seq) > pr.commit_sent:
                    self._commit_news = True  # it holds committed entries to apply
            if pr.state is ReplicationState.PROBE or (
                pr.state is ReplicationState.SNAPSHOT and pr.match_seq >= pr.snapshot_seq
            ):
                pr.become_replicate()
        else:
            if pr.state is ReplicationState.SNAPSHOT:
                return
            pr.state = ReplicationState.PROBE
            pr.inflight.clear()
            pr.probe_sent = False
            pr.next_seq = max(pr.match_seq + 1, min(pr.next_seq, msg.reject_hint + 1))
        self._send_append(msg.sender)

    def _handle_heartbeat_response(self, msg: HeartbeatResponse) -> None:
        pr = self._progress[msg.sender]
        pr.recent_active = True
        upstream = self.peer_kinds[msg.sender] is PeerKind.UPSTREAM
        if pr.match_seq < self.log.last_seq or (upstream and not pr.synced):
            if pr.state is ReplicationState.PROBE and not upstream:
                # A dref peer ignores a duplicate; upstream would reject it (seq ≠ last + 1)
                # and need a snapshot, so its probe is only re-sent when it times out.
                pr.probe_sent = False
            elif pr.state is ReplicationState.REPLICATE and pr.match_seq == pr.match_at_heartbeat:
                pr.become_probe()
            pr.match_at_heartbeat = pr.match_seq
            self._send_append(msg.sender)

    def _handle_snapshot_response(self, msg: InstallSnapshotResponse) -> None:
        pr = self._progress[msg.sender]
        pr.recent_active = True
        if pr.state is not ReplicationState.SNAPSHOT or pr.awaits_offer:
            return
        if msg.success:
            pr.synced = True
            if not msg.ext:
                # Upstream holds exactly the snapshot now (its response carries no seq):
                # continue right after it, even below what it acknowledged before.
                pr.restart_at(pr.snapshot_seq)
            elif pr.acknowledge(msg.match_seq):
                self._maybe_commit()
        pr.become_probe()
        self._send_append(msg.sender)

    # ------------------------------------------------------------------ helpers

    def _send(self, msg: Message) -> None:
        self._messages.append(msg)

    def _check_not_in_ready(self) -> None:
        if self._in_ready:
            raise RuntimeError("call advance(ready) before giving the core more input")
