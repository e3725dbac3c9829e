"""A compare that cannot match is answered as a linearizable read, not as a log entry.

`CompareAndSet`, `CompareAndDelete` and `CompareAndExpire` that fail change nothing, so the
leader need not commit them; nor a lock's release (`LeaveLine` with `release`) whose token
neither holds the lock nor waits in its line. It first looks at its applied state: if the
compare would match there, it is proposed at once (the success path stays one round); if
not, a ReadIndex round (`RaftNode.read_barrier`) brings the applied state up to every write
committed before the request, and the compare is checked again there. Still failing, it is
answered from that state (`matched=False`, the value found); matching now, it is proposed
after all. The state machine decides every proposed compare when it applies it, so one that
fails there (a write committed in between) still answers correctly. Why this stays
linearizable: docs/raft.md#compare-as-read.
"""

from __future__ import annotations

from dref_raft.commands import (
    Command,
    CompareAndDelete,
    CompareAndExpire,
    CompareAndSet,
    CompareResult,
    LeaveLine,
)
from dref_raft.member.node import RaftNode

__all__ = ["failed_compare"]


async def failed_compare(node: RaftNode, command: Command, timeout: float) -> CompareResult | None:
    """The answer to a stamped compare `command` that fails on the leader's state after a
    ReadIndex round; None when it must be proposed (it may match, or it is not a plain
    compare: `FencedWrite` is always proposed)."""
    match command:
        case CompareAndSet(name, expected, _, _, now):
            pass
        case CompareAndDelete(name, expected, now) | CompareAndExpire(name, expected, _, now):
            pass
        case LeaveLine(name, expected, True, now):
            pass
        case _:
            return None
    machine = node.machine
    # A release changes the line when its ticket waits there: the log decides that too.
    ticket = command.ticket if isinstance(command, LeaveLine) else None

    def changes() -> tuple[bool, bytes | None]:
        matched, current = machine.compare(name, expected, now)
        queued = ticket is not None and machine.lines.position(name, ticket) is not None
        return matched or queued, current

    if changes()[0]:
        return None  # likely to change something: the log decides, in one round
    await node.read_barrier(timeout)
    changing, current = changes()
    if changing:
        return None
    return CompareResult(False, current, node.applied)
