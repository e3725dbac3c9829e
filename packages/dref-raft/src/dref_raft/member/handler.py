"""`NodeClientHandler`: what a member serves to clients (`DRefRaft`, `DRefExt/Compare`).

Data operations are served when this member leads; elsewhere they are refused with the leader's
id (`NotLeaderError`) so that the caller retries there.
"""

from __future__ import annotations

import dataclasses

from dref.errors import ConsensusError, NoLeaderError, NotLeaderError
from dref_raft.commands import (
    COMPARE_COMMANDS,
    Command,
    CompareAndDelete,
    CompareAndExpire,
    CompareAndSet,
    CompareResult,
    DeleteElement,
    ExpireElement,
    FencedWrite,
    SetElement,
    SetIfNotExist,
)
from dref_raft.fsm import ApplyResult
from dref_raft.member.node import RaftNode
from dref_raft.settings import RaftSettings

__all__ = ["NodeClientHandler"]


class NodeClientHandler:
    """`ClientHandler` (DRefRaft) and `CompareHandler` (DRefExt) of a member.

    Serves data operations when this member leads.
    """

    def __init__(self, node: RaftNode, settings: RaftSettings) -> None:
        self.node = node
        self.settings = settings

    def _check_leader(self) -> None:
        if not self.node.is_leader:
            leader = self.node.leader_id
            raise NotLeaderError(leader) if leader is not None else NoLeaderError()

    async def _propose(self, command: Command) -> tuple[int, ApplyResult]:
        self._check_leader()
        return await self.node.propose(command, self.settings.op_timeout)

    async def set_element(self, name: str, value: bytes, expire_at: int | None) -> None:
        await self._propose(SetElement(name, value, expire_at))

    async def set_element_if_not_exist(
        self, name: str, value: bytes, expire_at: int | None
    ) -> bool:
        _, result = await self._propose(SetIfNotExist(name, value, expire_at))
        return bool(result.created)

    async def get_element(self, name: str) -> bytes | None:
        self._check_leader()
        await self.node.read_barrier(self.settings.op_timeout)
        return self.node.get_local(name)

    async def delete_element(self, name: str) -> None:
        await self._propose(DeleteElement(name))

    async def expire_element(self, name: str, expire_at: int) -> None:
        await self._propose(ExpireElement(name, expire_at))

    def endpoint_ids(self) -> list[str]:
        return [*self.node.peers, self.node.id]

    def applied_seq(self) -> int:
        return self.node.applied

    async def compare(self, command: Command) -> CompareResult:
        """dref-only (`DRefExt/Compare`): propose a compare command, stamped with this leader's
        clock, and await its outcome."""
        if not isinstance(command, COMPARE_COMMANDS):
            raise ConsensusError(f"not a compare command: {type(command).__name__}")
        self._check_leader()
        if not self.node.all_peers_dref():
            raise ConsensusError(
                "a voter has not advertised the dref extensions (upstream node?): "
                "compare commands are refused; set mixed_cluster=True for mixed clusters"
            )
        now = self.node.wall_ms()
        stamped: Command
        match command:
            case CompareAndSet():
                stamped = CompareAndSet(
                    command.name, command.expected, command.value, command.expire_at, now
                )
            case CompareAndDelete():
                stamped = CompareAndDelete(command.name, command.expected, now)
            case CompareAndExpire():
                stamped = CompareAndExpire(command.name, command.expected, command.expire_at, now)
            case FencedWrite():
                stamped = dataclasses.replace(command, now=now)
        seq, result = await self.node.propose(stamped, self.settings.op_timeout)
        return CompareResult(bool(result.created), result.current, seq, result.stale)
