"""`NodeClientHandler`: what a member serves to clients (`DRefRaft`, `DRefExt`).

Data operations are served when this member leads; elsewhere they are refused with the leader's
id (`NotLeaderError`) so that the caller retries there. Names and values above `max_name_bytes`
/ `max_value_bytes` are refused first (`LimitExceededError`, docs/security.md#limits).
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
from collections.abc import Iterable

from dref.errors import ConsensusError, NoLeaderError, NotLeaderError
from dref_raft.commands import (
    COMPARE_REQUESTS,
    FENCE_COMPARE,
    Command,
    CompareAndDelete,
    CompareAndExpire,
    CompareAndSet,
    CompareResult,
    DeleteElement,
    ExpireElement,
    FairSwap,
    FencedWrite,
    LeaveLine,
    MemberStatus,
    NamesPage,
    SessionCommand,
    SetElement,
    SetIfNotExist,
)
from dref_raft.errors import CompareUnsupportedError, LimitExceededError
from dref_raft.fsm import ApplyResult
from dref_raft.member.compare_read import failed_compare
from dref_raft.member.follower_reads import FollowerReads
from dref_raft.member.node import RaftNode
from dref_raft.reads import LEADER_READ, ReadRequest
from dref_raft.sessions import IDLE_MS
from dref_raft.settings import RaftSettings

__all__ = ["NAMES_PAGE", "NodeClientHandler"]

NAMES_PAGE = 1000
"""Names per `DRefExt/Names` answer when the request sets no (or a larger) limit."""


def _names_page(
    names: list[str], expiries: dict[str, int], prefix: str, after: str, limit: int, now: int
) -> list[str]:
    """The first `limit` + 1 of `names` (sorted) that start with `prefix`, come after `after`
    and have not expired at `now` (Python code: holds the GIL a switch interval at a time)."""
    live = (
        name
        for name in names
        if name > after
        and name.startswith(prefix)
        and ((at := expiries.get(name)) is None or at > now)
    )
    return heapq.nsmallest(limit + 1, live)


class NodeClientHandler:
    """`ClientHandler` (DRefRaft), `CompareHandler` and `InfoHandler` (DRefExt) of a member.

    Serves data operations when this member leads.
    """

    def __init__(self, node: RaftNode, settings: RaftSettings) -> None:
        self.node = node
        self.settings = settings
        self.reads: FollowerReads | None = None
        """Serves reads from this member's own state (set by the member; None: leader only)."""

    def _check_sizes(self, names: Iterable[str], values: Iterable[bytes | None] = ()) -> None:
        limit = self.settings.max_name_bytes
        for name in names:
            size = len(name.encode("utf-8", errors="surrogatepass"))
            if size > limit:
                raise LimitExceededError(
                    f"element name {name[:40]!r}… is {size} bytes, above max_name_bytes ({limit})"
                )
        limit = self.settings.max_value_bytes
        for value in values:
            if value is not None and len(value) > limit:
                raise LimitExceededError(
                    f"element value is {len(value)} bytes, above max_value_bytes ({limit})"
                )

    def _check_command_sizes(self, command: Command) -> None:
        """`_check_sizes` of what a `DRefExt/Compare` request writes (a session's write too)."""
        match command:
            case SessionCommand():
                self._check_command_sizes(command.command)
            case SetElement() | SetIfNotExist():
                self._check_sizes((command.name,), (command.value,))
            case DeleteElement() | ExpireElement():
                self._check_sizes((command.name,))
            case CompareAndSet():
                self._check_sizes((command.name,), (command.expected, command.value))
            case CompareAndDelete() | CompareAndExpire():
                self._check_sizes((command.name,), (command.expected,))
            case FencedWrite():
                expected = command.expected if command.condition == FENCE_COMPARE else None
                values = (command.token, command.value, expected)
                self._check_sizes((command.lock, command.name), values)
            case FairSwap():
                swap = (command.expected, command.value, command.ticket)
                self._check_sizes((command.name,), swap)
            case LeaveLine():
                self._check_sizes((command.name,), (command.ticket,))

    def _check_leader(self) -> None:
        if not self.node.is_leader:
            leader = self.node.leader_id
            raise NotLeaderError(leader) if leader is not None else NoLeaderError()

    async def _propose(self, command: Command) -> tuple[int, ApplyResult]:
        self._check_leader()
        return await self.node.propose(command, self.settings.op_timeout)

    async def set_element(self, name: str, value: bytes, expire_at: int | None) -> None:
        self._check_sizes((name,), (value,))
        await self._propose(SetElement(name, value, expire_at))

    async def set_element_if_not_exist(
        self, name: str, value: bytes, expire_at: int | None
    ) -> bool:
        self._check_sizes((name,), (value,))
        _, result = await self._propose(SetIfNotExist(name, value, expire_at))
        return bool(result.created)

    async def get_element(self, name: str, read: ReadRequest = LEADER_READ) -> bytes | None:
        """Upstream's read on the leader (a ReadIndex round), or one of dref's read kinds
        (`dref_raft.reads`) from this member's own state (`FollowerReads`)."""
        self._check_sizes((name,))
        reads = self.reads
        if read.session_seq is not None and reads is not None:
            await reads.caught_up(read.session_seq)
        elif read.follower and reads is not None:
            await reads.barrier()
        else:
            self._check_leader()
            await self.node.read_barrier(self.settings.op_timeout)
        return self.node.get_local(name)

    def read_now(self, name: str, read: ReadRequest) -> tuple[bool, bytes | None]:
        """`get_element`'s answer when it needs no wait (`InstantReads`): a session read of a
        seq this member has applied."""
        seq = read.session_seq
        if seq is None or self.reads is None or seq > self.node.applied:
            return False, None
        self._check_sizes((name,))
        return True, self.node.get_local(name)

    async def read_index(self) -> int:
        """dref-only (`GetElement` with `read_index`, from a follower): confirm leadership
        with a ReadIndex round; the seq applied here then (at least the read index)."""
        self._check_leader()
        await self.node.read_barrier(self.settings.op_timeout)
        return self.node.applied

    async def delete_element(self, name: str) -> None:
        self._check_sizes((name,))
        await self._propose(DeleteElement(name))

    async def expire_element(self, name: str, expire_at: int) -> None:
        self._check_sizes((name,))
        await self._propose(ExpireElement(name, expire_at))

    def endpoint_ids(self) -> list[str]:
        return [*self.node.peers, self.node.id]

    def applied_seq(self) -> int:
        return self.node.applied

    async def compare(self, command: Command) -> CompareResult:
        """dref-only (`DRefExt/Compare`): a compare command (or a write of a session), stamped
        with this leader's clock: proposed and awaited, or, for a plain compare that fails on
        the state after a ReadIndex round, answered from that state without a log entry
        (`compare_read`; a session's write always goes through the log, where its repeats are
        recognised)."""
        if not isinstance(command, COMPARE_REQUESTS):
            raise ConsensusError(f"not a compare command: {type(command).__name__}")
        self._check_command_sizes(command)
        self._check_leader()
        if self.node.any_peer_upstream():
            # Not retryable: the context falls back to upstream's calls (sessions) or fails.
            # A member not heard from yet (down since a restart) holds nothing back: the
            # leader never sends it a dref-only entry before it has advertised the extensions.
            raise CompareUnsupportedError(
                "a member has not advertised the dref extensions (upstream node?): "
                "compare commands are refused; set mixed_cluster=True for mixed clusters"
            )
        now = self.node.wall_ms()
        stamped = _stamped(command, now)
        failed = await failed_compare(self.node, stamped, self.settings.op_timeout)
        if failed is not None:
            return failed  # a read, not a log entry (dref_raft.member.compare_read)
        seq, result = await self.node.propose(stamped, self.settings.op_timeout)
        return CompareResult(bool(result.created), result.current, seq, result.stale, result.ahead)

    async def wait_turn(
        self, name: str, ticket: bytes, timeout: float
    ) -> tuple[bool, bytes | None]:
        """dref-only (`DRefFair/WaitTurn`): wait up to `timeout` s (at most `op_timeout`) until
        `ticket` heads `name`'s line in this member's applied state (any member answers)."""
        self._check_sizes((name,), (ticket,))
        return await self.node.turns.wait(name, ticket, min(timeout, self.settings.op_timeout))

    async def names(self, prefix: str, after: str, limit: int) -> NamesPage:
        """dref-only (`DRefExt/Names`): a sorted page of the live names starting with `prefix`
        after `after`, read from this leader's state machine after a read barrier."""
        self._check_leader()
        await self.node.read_barrier(self.settings.op_timeout)
        limit = NAMES_PAGE if limit <= 0 else min(limit, NAMES_PAGE)
        now = self.node.wall_ms()
        machine = self.node.machine
        # Copies (a C call each) on the loop; the O(elements) scan in a worker thread.
        held, expiries = list(machine.values()), machine.expiration_table()
        found = await asyncio.to_thread(_names_page, held, expiries, prefix, after, limit, now)
        return NamesPage(tuple(found[:limit]), len(found) > limit)

    def status(self) -> MemberStatus:
        """dref-only (`DRefExt/Status`): this member's own view of its Raft state."""
        node = self.node
        contact = node.last_contact()
        return MemberStatus(
            node_id=node.id,
            role=node.role.value,
            term=node.term,
            commit=node.core.commit,
            applied=node.applied,
            leader=node.leader_id,
            last_contact_ms=None if contact is None else int(contact * 1000),
        )


def _stamped(command: Command, now: int) -> Command:
    """`command` with this leader's clock as its `now` (a session's write too, with the
    session's `idle_ms`): members check expiry against it, so applying stays deterministic."""
    stamped: Command = command
    match command:
        case CompareAndSet():
            stamped = CompareAndSet(
                command.name, command.expected, command.value, command.expire_at, now
            )
        case CompareAndDelete():
            stamped = CompareAndDelete(command.name, command.expected, now)
        case CompareAndExpire():
            stamped = CompareAndExpire(command.name, command.expected, command.expire_at, now)
        case FencedWrite() | FairSwap() | LeaveLine():
            stamped = dataclasses.replace(command, now=now)
        case SessionCommand():
            inner = _stamped(command.command, now)
            stamped = SessionCommand(
                command.session, command.request, inner, command.first_incomplete, now, IDLE_MS
            )
    return stamped
