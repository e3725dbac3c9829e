"""Configuration rules of the core: where the configuration in force comes from, and which
changes a leader may propose (single-server changes, Raft thesis §4.1; docs/raft.md#membership).
"""

from __future__ import annotations

from collections.abc import Sequence

from dref_raft.commands import ConfigChange, Membership
from dref_raft.core.log import RaftLog
from dref_raft.core.types import Entry

__all__ = ["bootstrap_membership", "change_error", "last_config_in", "latest_config"]


def bootstrap_membership(node_id: str, peers: Sequence[str], *, joining: bool) -> Membership:
    """The configuration before any `ConfigChange`: every listed peer (and this node) votes.

    A joining node knows no configuration (empty voters) until the leader's entries or
    snapshot bring one.
    """
    if joining:
        return Membership(())
    return Membership(tuple(sorted({*peers, node_id})))


def last_config_in(entries: Sequence[Entry]) -> Entry | None:
    """The last configuration entry among `entries`, if any."""
    for entry in reversed(entries):
        if isinstance(entry.command, ConfigChange):
            return entry
    return None


def latest_config(log: RaftLog, bootstrap: Membership) -> tuple[int, Membership]:
    """The configuration in force and the seq of its entry: the last `ConfigChange` in the
    log (committed or not), else the snapshot's, else `bootstrap` (seq 0)."""
    entry = last_config_in(log.entries)
    if entry is not None:
        assert isinstance(entry.command, ConfigChange)
        return entry.seq, entry.command.membership
    membership = log.snapshot.data.membership
    if membership is not None:
        return log.snapshot.seq, membership
    return 0, bootstrap


def change_error(current: Membership, new: Membership) -> str | None:
    """Why `current` → `new` is not a valid single-server change (None: it is).

    At most one voter is added or removed; learners may be added, removed or promoted; a
    member is a voter or a learner, not both; at least one voter remains.
    """
    voters, learners = set(new.voters), set(new.learners)
    if not voters:
        return "a configuration needs at least one voter"
    if voters & learners:
        return f"{sorted(voters & learners)} cannot be voter and learner at once"
    if len(voters ^ set(current.voters)) > 1:
        return (
            "one voter at a time: "
            f"{sorted(current.voters)} -> {sorted(voters)} changes "
            f"{len(voters ^ set(current.voters))} voters"
        )
    return None
