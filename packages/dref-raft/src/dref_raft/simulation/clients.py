"""Simulated clients: register operations through the cores, recorded as a history."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from dref_raft.commands import Command, DeleteElement, FairSwap, SetElement, SetIfNotExist
from dref_raft.core import NotLeader, Proposed

__all__ = ["ClientOp", "LockClient", "RecordedOp", "SimClient"]

#: Steps an operation may wait before its outcome is declared unknown (or it is dropped).
OP_TIMEOUT = 400


@dataclass(frozen=True, slots=True)
class RecordedOp:
    """A finished operation, field for field `dref_compat.history.Operation`."""

    client: int
    key: str
    kind: str
    value: Any = None
    expected: Any = None
    output: Any = None
    call: float = 0.0
    ret: float | None = None


@dataclass(slots=True)
class ClientOp:
    """An operation in progress: not sent yet, proposed at (node, seq, term), or reading."""

    kind: str
    key: str
    value: bytes | None
    call: int
    node: str | None = None
    seq: int = 0
    term: int = 0
    request_id: int = 0
    sent_at: int = 0
    output: Any = None
    #: A follower read: the node that serves it from its own state once it has applied
    #: `index`, the read index its leader answered (-1: not answered yet).
    reader: str | None = None
    index: int = -1
    #: A fair swap: the value it expects (None: absent), its ticket and whether it rejoins.
    expected: bytes | None = None
    ticket: bytes = b""
    rejoin: bool = False

    def command(self, now_ms: int = 0, life_ms: int = 0) -> Command:
        """The command a write proposes (a fair swap's `now` and place life are the node's)."""
        if self.kind == "fair_swap":
            assert self.value is not None
            return FairSwap(
                self.key, self.expected, self.value, self.ticket, None, self.rejoin, life_ms, now_ms
            )
        if self.kind == "set":
            assert self.value is not None
            return SetElement(self.key, self.value)
        if self.kind == "set_if_not_exist":
            assert self.value is not None
            return SetIfNotExist(self.key, self.value)
        return DeleteElement(self.key)


@dataclass(slots=True)
class _Proposer:
    """A client with at most one operation in flight and a guess of the leader."""

    id: int
    leader_guess: str
    op: ClientOp | None = None
    #: A node the client keeps asking whatever it answers (a nemesis pins clients to a
    #: partitioned old leader); None: follow `leader_guess`.
    pinned: str | None = None
    #: A node whose leader hints the client ignores (the other side of that partition).
    avoid: str | None = None

    @property
    def target(self) -> str:
        """The node the client sends its next request to."""
        return self.pinned if self.pinned is not None else self.leader_guess

    def submitted(self, result: Proposed | NotLeader | None, node: str, now: int) -> bool:
        """Record where the op went; False when it must be retried elsewhere."""
        op = self.op
        assert op is not None
        if isinstance(result, NotLeader):
            if result.leader_id is not None and result.leader_id != self.avoid:
                self.leader_guess = result.leader_id
            return False
        op.node, op.sent_at = node, now
        if isinstance(result, Proposed):
            op.seq, op.term = result.first_seq, result.term
        return True

    def discard(self) -> None:
        """Forget an op that certainly had no effect."""
        self.op = None


@dataclass(slots=True)
class SimClient(_Proposer):
    """A register client; its finished operations form the history."""

    counter: int = 0
    history: list[RecordedOp] = field(default_factory=list)
    #: The last value this client saw of each key (what its fair swaps expect).
    seen: dict[str, bytes | None] = field(default_factory=dict)

    def new_op(
        self, rng: random.Random, now: int, keys: tuple[str, ...], *, fair_swaps: bool = False
    ) -> ClientOp:
        """Start a random operation (writes carry values unique to this client); with
        `fair_swaps`, some are `FairSwap`s of the value last seen, in the client's own place
        in line (one ticket per client, so it keeps its place from one attempt to the next)."""
        # A client pinned to a (perhaps partitioned) node mostly reads: a write there would
        # leave it waiting for OP_TIMEOUT, and stale reads are what the pin is for.
        kinds = ["get", "set", "set_if_not_exist", "delete"]
        weights = [35, 30, 20, 15] if self.pinned is None else [85, 7, 4, 4]
        if fair_swaps:
            kinds.append("fair_swap")
            weights.append(40 if self.pinned is None else 4)
        kind = rng.choices(kinds, weights)[0]
        self.counter += 1
        writes = kind not in ("get", "delete")
        value = f"c{self.id}-{self.counter}".encode() if writes else None
        key = rng.choice(keys)
        self.op = ClientOp(kind, key, value, now)
        if kind == "fair_swap":
            self.op.expected = self.seen.get(key)
            self.op.ticket = f"c{self.id}".encode()
            self.op.rejoin = rng.random() < 0.3
        return self.op

    def finish(self, now: int | None, output: Any = None) -> None:
        """Complete the op (`now=None`: unknown outcome) and record it."""
        op = self.op
        assert op is not None
        self.op = None
        self.history.append(
            RecordedOp(
                self.id,
                op.key,
                op.kind,
                op.value,
                None,
                output,
                float(op.call),
                None if now is None else float(now),
            )
        )
        if now is None:
            return
        if op.kind == "get":
            self.seen[op.key] = output
        elif op.kind == "delete":
            self.seen[op.key] = None
        elif op.kind == "set" or output is True:
            self.seen[op.key] = op.value

    def finish_fair_swap(self, now: int | None, swapped: bool, current: bytes | None) -> None:
        """Complete a fair swap: one that swapped is a compare-and-set that matched; one that
        did not changed no value and answered the value at its place in the log (a read); an
        unknown outcome (`now=None`) is a compare-and-set that may or may not have happened."""
        op = self.op
        assert op is not None
        self.op = None
        ret = None if now is None else float(now)
        if now is not None and not swapped:
            self.history.append(
                RecordedOp(self.id, op.key, "get", None, None, current, float(op.call), ret)
            )
            self.seen[op.key] = current
            return
        self.history.append(
            RecordedOp(
                self.id, op.key, "compare_and_set", op.value, op.expected, True, float(op.call), ret
            )
        )
        if now is not None:
            self.seen[op.key] = op.value


@dataclass(slots=True)
class LockClient(_Proposer):
    """A lease-lock client: acquire (`lock`), hold, maybe renew (`renew`), release (`unlock`).

    `phase` is "idle" or "holding"; while holding, `handle` is its hold in the recorder, `token`
    its owner token, `deadline` the step its lease runs out by its own reckoning (from the call
    that set the expiry, less the clock-skew margin), `release_at` when it means to release,
    `next_renew` its next keep-alive (0: none). A `stalled` holder is paused: it neither renews
    nor watches its deadline until `release_at`.
    """

    counter: int = 0
    phase: str = "idle"
    name: str = ""
    token: bytes = b""
    ttl: int = 0
    handle: Any = None
    deadline: int = 0
    release_at: int = 0
    renew_every: int = 0
    next_renew: int = 0
    stalled: bool = False

    def start(self, kind: str, now: int) -> ClientOp:
        """Begin a `lock`, `renew` or `unlock` of the current name and token."""
        self.op = ClientOp(kind, self.name, self.token, now)
        return self.op
