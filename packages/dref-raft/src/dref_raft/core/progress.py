"""What a leader knows about replicating to one peer."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["PeerKind", "Progress", "ReplicationState"]


class ReplicationState(Enum):
    """PROBE: one message at a time until the match is known; REPLICATE: a window in flight;
    SNAPSHOT: an InstallSnapshot is in flight."""

    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class PeerKind(Enum):
    """Whether a peer advertised the dref extensions (learned from the last message it sent)."""

    UNKNOWN = "unknown"
    DREF = "dref"
    UPSTREAM = "upstream"


@dataclass(slots=True)
class Progress:
    """Match/next seqs, flow control and liveness of one peer, reset on every election."""

    next_seq: int
    match_seq: int = 0
    state: ReplicationState = ReplicationState.PROBE
    #: PROBE: a message is outstanding, sent this many leader ticks ago.
    probe_sent: bool = False
    probe_age: int = 0
    #: REPLICATE: last seq of each AppendEntries in flight, oldest first.
    inflight: deque[int] = field(default_factory=deque)
    #: SNAPSHOT: the seq being installed (-1: waiting for the driver's `offer_snapshot`)
    #: and the leader ticks since it was asked for.
    snapshot_seq: int = 0
    snapshot_age: int = 0
    #: SNAPSHOT, waiting for an offer: the leader's applied seq when it asked for one (an
    #: offer of an older state is not sent to this peer: it may hold more than that).
    offer_from: int = 0
    #: An upstream peer's log is trusted only after it installed our snapshot in this term.
    synced: bool = False
    #: The peer answered during the current check-quorum period.
    recent_active: bool = False
    #: The highest commit seq sent to the peer (a follower learns commits from messages).
    commit_sent: int = 0
    #: Match at the previous heartbeat response (no progress since → probe again).
    match_at_heartbeat: int = -1

    @property
    def awaits_offer(self) -> bool:
        """SNAPSHOT, but still waiting for the driver's state (`RaftCore.offer_snapshot`)."""
        return self.state is ReplicationState.SNAPSHOT and self.snapshot_seq < 0

    def send_probe(self) -> None:
        """PROBE: a message goes out now."""
        self.probe_sent = True
        self.probe_age = 0

    def become_probe(self) -> None:
        """Probe from the seq after the match."""
        self.state = ReplicationState.PROBE
        self.next_seq = self.match_seq + 1
        self.probe_sent = False
        self.inflight.clear()

    def become_replicate(self) -> None:
        """Stream optimistically from the seq after the match."""
        self.state = ReplicationState.REPLICATE
        self.next_seq = self.match_seq + 1
        self.probe_sent = False
        self.inflight.clear()

    def become_snapshot(self, seq: int) -> None:
        """Wait for the install of the snapshot at `seq`."""
        self.state = ReplicationState.SNAPSHOT
        self.snapshot_seq = seq
        self.snapshot_age = 0
        self.probe_sent = False
        self.inflight.clear()

    def restart_at(self, seq: int) -> None:
        """The peer's log was replaced by a snapshot at `seq`: it matches exactly through it."""
        self.match_seq = seq
        self.next_seq = seq + 1
        self.inflight.clear()

    def acknowledge(self, seq: int) -> bool:
        """Record that the peer matches through `seq`; True if the match grew."""
        while self.inflight and self.inflight[0] <= seq:
            self.inflight.popleft()
        if seq > self.match_seq:
            self.match_seq = seq
            self.next_seq = max(self.next_seq, seq + 1)
            return True
        return False
