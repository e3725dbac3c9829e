"""How a member may serve a read (docs/raft.md#read-modes, docs/raft-wire.md#follower-reads).

A `GetElement` is served by the leader after a ReadIndex round (upstream's read), unless the
caller asks for one of dref's additive read kinds, which only dref members are sent:

* `ReadRequest(session_seq=s)`: a session read; any member answers from its own state once it
  has applied `s` (the highest seq the caller saw), with no round to the leader;
* `ReadRequest(follower=True)`: a linearizable read that a follower serves from its own state
  once it has applied the leader's read index, asked for after the read arrived.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FOLLOWER_READ", "LEADER_READ", "ReadRequest"]


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """What a `GetElement` asks for (the default: a linearizable read on the leader)."""

    session_seq: int | None = None
    """A session read: served by any member once it has applied this seq."""
    follower: bool = False
    """A linearizable read that a follower may serve after the leader's read index."""


LEADER_READ = ReadRequest()
FOLLOWER_READ = ReadRequest(follower=True)
