"""What `dref ls` and `dref status` read from a Raft cluster, shared by the member backend and
client mode: the live names, page by page over `DRefExt/Names`, and a table of the members'
own `DRefExt/Status` answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from dref.errors import DRefError
from dref.spi import BackendStatus
from dref_raft.commands import MemberStatus, NamesPage

__all__ = ["cluster_status", "paged_names"]


async def paged_names(
    page: Callable[[str], Awaitable[NamesPage]],
) -> AsyncIterator[str]:
    """Every name of the pages `page(after)` returns, starting after "" and then after the last
    name of the previous page, until a page says no more follow."""
    after = ""
    while True:
        answer = await page(after)
        for name in answer.names:
            yield name
        if not answer.more or not answer.names:
            return
        after = answer.names[-1]


async def cluster_status(
    summary: str,
    members: dict[str, str],
    fetch: Callable[[str], Awaitable[MemberStatus]],
) -> BackendStatus:
    """Ask every member (id → address) for its status at once; a row per member.

    `lag` is how many committed entries the member has still to apply, counted from the highest
    commit index any member reported (the leader's, when it answered). A member that does not
    answer gets the role `unreachable` and the error.
    """

    async def one(node_id: str) -> MemberStatus | DRefError:
        try:
            return await fetch(node_id)
        except DRefError as exc:
            return exc

    answers = await asyncio.gather(*(one(node_id) for node_id in members))
    commit = max((a.commit for a in answers if isinstance(a, MemberStatus)), default=0)
    rows = []
    for (node_id, address), answer in zip(members.items(), answers, strict=True):
        if isinstance(answer, MemberStatus):
            contact = answer.last_contact_ms
            rows.append(
                {
                    "node": node_id,
                    "address": address,
                    "role": answer.role,
                    "term": answer.term,
                    "commit": answer.commit,
                    "applied": answer.applied,
                    "lag": max(0, commit - answer.applied),
                    "leader": answer.leader,
                    "last_contact_s": None if contact is None else round(contact / 1000, 3),
                    "error": "",
                }
            )
        else:
            rows.append(
                {
                    "node": node_id,
                    "address": address,
                    "role": "unreachable",
                    "term": None,
                    "commit": None,
                    "applied": None,
                    "lag": None,
                    "leader": None,
                    "last_contact_s": None,
                    "error": " ".join(str(answer).split()),
                }
            )
    return BackendStatus(summary, tuple(rows))
