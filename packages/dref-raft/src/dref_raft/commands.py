"""The replicated commands of the DRef state machine (upstream `StateCommand`), as dataclasses.

Times are absolute Unix epoch milliseconds chosen by the proposer, never read at apply time.
Conversion to and from upstream's protobuf bytes is in `dref_raft.wire.commands`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "COMPARE_COMMANDS",
    "COMPARE_REQUESTS",
    "DREF_ONLY_COMMANDS",
    "SESSION_WRITES",
    "Command",
    "CompareAndDelete",
    "CompareAndExpire",
    "CompareAndSet",
    "CompareResult",
    "ConfigChange",
    "DeleteElement",
    "DeleteIfExpired",
    "ExpireElement",
    "FairSwap",
    "FencedWrite",
    "LeaveLine",
    "MemberInfo",
    "MemberStatus",
    "MembersView",
    "Membership",
    "NamesPage",
    "NoOp",
    "SessionCommand",
    "SetElement",
    "SetIfNotExist",
    "StartNewTerm",
    "WatchEvent",
]


@dataclass(frozen=True, slots=True)
class SetElement:
    """Insert or overwrite `name`; `expire_at` (epoch ms) is absent for no TTL."""

    name: str
    value: bytes
    expire_at: int | None = None


@dataclass(frozen=True, slots=True)
class SetIfNotExist:
    """Insert `name` only if it is absent (an expired but not yet deleted element is present)."""

    name: str
    value: bytes
    expire_at: int | None = None


@dataclass(frozen=True, slots=True)
class DeleteElement:
    """Remove `name`; removing an absent element is fine."""

    name: str


@dataclass(frozen=True, slots=True)
class ExpireElement:
    """Set the expiry of `name` if it exists (keep-alive); never creates it."""

    name: str
    expire_at: int


@dataclass(frozen=True, slots=True)
class DeleteIfExpired:
    """Remove `name` if it exists and `expire_at <= now` (the leader's reaper proposes it)."""

    name: str
    now: int


@dataclass(frozen=True, slots=True)
class StartNewTerm:
    """Upstream's term-start marker; applied as a no-op."""


@dataclass(frozen=True, slots=True)
class NoOp:
    """A `StateCommand` with no operation set, e.g. empty bytes or an operation unknown here.

    Upstream applies it as a no-op and so do we; it encodes back to empty bytes.
    """


@dataclass(frozen=True, slots=True)
class CompareAndSet:
    """dref-only: set `name` to `value` iff it holds `expected` (None: iff it is absent);
    an element expired at `now` (epoch ms, 0: no check) counts as absent.

    Never proposed in a mixed cluster, never sent to a peer not known to be a dref node (an
    upstream node would apply it as a no-op).
    """

    name: str
    expected: bytes | None
    value: bytes
    expire_at: int | None = None
    now: int = 0


@dataclass(frozen=True, slots=True)
class CompareAndDelete:
    """dref-only: delete `name` iff it holds `expected` and is not expired at `now`."""

    name: str
    expected: bytes
    now: int = 0


@dataclass(frozen=True, slots=True)
class CompareAndExpire:
    """dref-only: set the expiry of `name` iff it holds `expected` and is not expired at `now`."""

    name: str
    expected: bytes
    expire_at: int
    now: int = 0


FENCE_SET = 0
FENCE_IF_ABSENT = 1
FENCE_COMPARE = 2


@dataclass(frozen=True, slots=True)
class FencedWrite:
    """dref-only: a write applied iff the lock element `lock` holds `token`, unexpired at `now`
    (a later acquisition of the lock would have replaced the token): otherwise refused as stale.

    `condition`: `FENCE_SET` (set `value`; None deletes), `FENCE_IF_ABSENT` (create iff absent),
    `FENCE_COMPARE` (set iff `name` holds `expected`).
    """

    lock: str
    token: bytes
    name: str
    value: bytes | None
    expire_at: int | None = None
    condition: int = FENCE_SET
    expected: bytes | None = None
    now: int = 0


@dataclass(frozen=True, slots=True)
class FairSwap:
    """dref-only: a compare-and-set served in `name`'s line of contended writers
    (docs/raft-wire.md#fair-updates; `StateCommand` oneof 1700).

    Swaps (`value`, with `expire_at`) iff `name` holds `expected` (None: iff it is absent or
    expired at `now`) and nobody waits, or `ticket` is the head of the line; the head leaves
    the line as it swaps (with `rejoin`, it takes a new place at the end when others still
    wait). Otherwise `ticket` joins the line, or keeps its place, alive until `now + life_ms`
    (log time: `now` is the leader's clock).
    """

    name: str
    expected: bytes | None
    value: bytes
    ticket: bytes
    expire_at: int | None = None
    rejoin: bool = False
    life_ms: int = 0
    now: int = 0


@dataclass(frozen=True, slots=True)
class LeaveLine:
    """dref-only: take `ticket` out of `name`'s line (`StateCommand` oneof 1701); with
    `release`, also delete `name` iff it holds `ticket` unexpired at `now` (a lock's release)."""

    name: str
    ticket: bytes
    release: bool = False
    now: int = 0


@dataclass(frozen=True, slots=True)
class Membership:
    """A cluster configuration: the voters, the learners (non-voting members that receive
    every entry) and the address (`host:port`) of each member that has one.

    Empty `voters` is "not known yet": a node joining an existing cluster starts with it and
    learns its configuration from the leader (docs/raft.md#membership).
    """

    voters: tuple[str, ...]
    learners: tuple[str, ...] = ()
    addresses: tuple[tuple[str, str], ...] = ()

    @property
    def members(self) -> tuple[str, ...]:
        """Voters and learners, sorted."""
        return tuple(sorted({*self.voters, *self.learners}))

    def address_of(self, node_id: str) -> str | None:
        """The `host:port` of `node_id`, if this configuration has one."""
        return dict(self.addresses).get(node_id)


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One member as the leader sees it: address, voter or learner, and the last seq it is
    known to hold (`DRefMembership/ListMembers`)."""

    node_id: str
    address: str
    voter: bool
    match_seq: int


@dataclass(frozen=True, slots=True)
class MembersView:
    """The configuration in force on the leader: its members, the seq of its entry (0: the
    bootstrap configuration), whether that entry is committed, the leader and its last seq."""

    members: tuple[MemberInfo, ...]
    config_seq: int
    committed: bool
    leader: str
    last_seq: int

    @property
    def voters(self) -> tuple[str, ...]:
        """The voters' ids."""
        return tuple(m.node_id for m in self.members if m.voter)

    @property
    def learners(self) -> tuple[str, ...]:
        """The learners' ids."""
        return tuple(m.node_id for m in self.members if not m.voter)


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """dref-only: from this entry on (as soon as it is appended, not committed) the cluster's
    configuration is `membership` (Raft thesis §4.1; `StateCommand` oneof 1400).

    Only a dref leader proposes it, one voter added or removed at a time, and never in a mixed
    cluster (an upstream node would apply it as a no-op and keep its old voters).
    """

    membership: Membership


@dataclass(frozen=True, slots=True)
class SessionCommand:
    """dref-only: `command` (a write) as request `request` of session `session`, applied at
    most once: the state machine answers a repeat of a request with its recorded result
    (docs/raft-wire.md#sessions). `first_incomplete`: every request of the session below it
    was answered; `now` (the leader's clock, epoch ms) and `idle_ms` expire idle sessions.
    """

    session: bytes
    request: int
    command: Command
    first_incomplete: int = 0
    now: int = 0
    idle_ms: int = 0


Command = (
    SetElement
    | SetIfNotExist
    | DeleteElement
    | ExpireElement
    | DeleteIfExpired
    | StartNewTerm
    | NoOp
    | CompareAndSet
    | CompareAndDelete
    | CompareAndExpire
    | FencedWrite
    | ConfigChange
    | SessionCommand
    | FairSwap
    | LeaveLine
)

#: The dref-only commands (StateCommand oneof numbers 1001..1004, 1700..1701).
COMPARE_COMMANDS = (
    CompareAndSet,
    CompareAndDelete,
    CompareAndExpire,
    FencedWrite,
    FairSwap,
    LeaveLine,
)
#: What `DRefExt/Compare` carries: a compare command, or any write wrapped in a session.
COMPARE_REQUESTS = (*COMPARE_COMMANDS, SessionCommand)
#: Every command an upstream node would apply as a no-op (and so diverge): never sent to a
#: peer that has not advertised the dref extensions.
DREF_ONLY_COMMANDS = (*COMPARE_REQUESTS, ConfigChange)
#: What a `SessionCommand` may wrap: every write a client sends.
SESSION_WRITES = (
    SetElement,
    SetIfNotExist,
    DeleteElement,
    ExpireElement,
    CompareAndSet,
    CompareAndDelete,
    CompareAndExpire,
    FencedWrite,
    FairSwap,
    LeaveLine,
)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A committed change of `name` at `seq`: its new value, or None when it was deleted.

    `resync=True`: the member could not replay from the requested seq and sends the current
    value instead (events before it may have been missed).
    """

    name: str
    value: bytes | None
    seq: int
    resync: bool = False


@dataclass(frozen=True, slots=True)
class CompareResult:
    """Outcome of a committed compare command (`DRefExt/Compare`).

    `matched`: the comparison held and the effect happened; otherwise `current` is the value
    found (None: missing or expired). `seq`: the log seq of the committed command.
    """

    matched: bool
    current: bytes | None
    seq: int
    stale: bool = False
    """`FencedWrite` only: refused because the lock no longer holds the fence's token."""
    ahead: int = 0
    """`FairSwap` only: live waiters in front of the ticket (0: the head, or not in line)."""


@dataclass(frozen=True, slots=True)
class NamesPage:
    """One page of live element names (`DRefExt/Names`): sorted; `more` when others follow."""

    names: tuple[str, ...]
    more: bool


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """A member's own view of its Raft state (`DRefExt/Status`).

    `last_contact_ms`: milliseconds since it last heard from the leader (0 on the leader;
    None: never).
    """

    node_id: str
    role: str
    term: int
    commit: int
    applied: int
    leader: str | None
    last_contact_ms: int | None
