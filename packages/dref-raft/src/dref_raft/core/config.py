"""Configuration of the Raft core, in ticks derived from upstream's millisecond fields."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CoreConfig"]


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Timing and flow-control settings.

    Defaults follow Scala upstream: 80 ms heartbeat and 400 ms election timeout
    (docs/protocol.md#raft-config),
    with one tick every 40 ms. The randomized election timeout is drawn uniformly from
    `[election, election * (1 + election_jitter)]` ticks by the passed-in generator.
    """

    tick_ms: int = 40
    heartbeat_interval_ms: int = 80
    election_timeout_ms: int = 400
    election_jitter: float = 0.5
    pre_vote: bool = True
    check_quorum: bool = True
    #: Entries per AppendEntries to a dref peer.
    max_batch_entries: int = 64
    #: Approximate command bytes per AppendEntries to a dref peer.
    max_batch_bytes: int = 1 << 20
    #: AppendEntries in flight per dref peer (upstream peers: always 1).
    max_inflight: int = 8
    #: Commands accepted by one `propose` call.
    max_proposal_entries: int = 4096
    #: The leader promotes a learner to voter once it is at most this many entries behind
    #: (negative: never automatically; docs/raft.md#membership).
    learner_promotion_lag: int = 64
    #: Lease reads (docs/raft.md#read-modes), 0: off. A leader serves a read at once, without
    #: a quorum round, for this many of its ticks after sending a ReadIndex round that a
    #: majority confirmed; it must stay below `election_ticks` by the clock-drift bound. With
    #: it a (re)started node also grants no vote for `election_ticks`.
    lease_ticks: int = 0

    def __post_init__(self) -> None:
        if self.tick_ms <= 0 or self.heartbeat_interval_ms < self.tick_ms:
            raise ValueError("need 0 < tick_ms <= heartbeat_interval_ms")
        if self.election_timeout_ms < 2 * self.heartbeat_interval_ms:
            raise ValueError("election_timeout_ms must be at least twice the heartbeat interval")
        if self.max_batch_entries < 1 or self.max_inflight < 1 or self.max_batch_bytes < 1:
            raise ValueError("batch and in-flight limits must be positive")
        if self.lease_ticks < 0 or self.lease_ticks >= self.election_ticks:
            raise ValueError(
                f"lease_ticks must be 0 (off) or below election_ticks ({self.election_ticks})"
            )
        if self.lease_ticks and not (self.check_quorum and self.pre_vote):
            raise ValueError("lease reads need check_quorum and pre_vote")

    @property
    def heartbeat_ticks(self) -> int:
        """Ticks between leader heartbeats."""
        return max(1, self.heartbeat_interval_ms // self.tick_ms)

    @property
    def election_ticks(self) -> int:
        """The minimum election timeout (also the PreVote lease and check-quorum period)."""
        return max(2, self.election_timeout_ms // self.tick_ms)

    @property
    def max_election_ticks(self) -> int:
        """The upper end of the randomized election timeout."""
        return self.election_ticks + max(1, int(self.election_ticks * self.election_jitter))
