"""`DRefExt/Names` and `DRefExt/Status` (dref-only): the wire round trip, paging, a member that
does not serve them (upstream) → `UnsupportedOperationError`; and `dref ls` / `dref status`
against real member processes in client mode."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from cluster_procs import ProcCluster
from test_transport_grpc import Client, Consensus

import dref
from dref.cli import main
from dref.errors import NotLeaderError, UnsupportedOperationError
from dref_compat.conformance import eventually
from dref_raft.commands import MemberStatus, NamesPage, SetElement
from dref_raft.member.handler import NodeClientHandler
from dref_raft.member.node import NodeConfig, RaftNode
from dref_raft.settings import RaftSettings
from dref_raft.transport.grpc_client import LeaderClient
from dref_raft.transport.grpc_server import GrpcServer
from dref_raft.transport.memory import MemoryNetwork
from dref_raft.wire import messages

pytestmark = pytest.mark.timeout(120)


class Info:
    """An `InfoHandler` over a sorted list of names; `leader` False answers not-leader."""

    def __init__(self, names: list[str]) -> None:
        self.all = sorted(names)
        self.leader = True

    async def names(self, prefix: str, after: str, limit: int) -> NamesPage:
        if not self.leader:
            raise NotLeaderError("n2")
        found = [n for n in self.all if n.startswith(prefix) and n > after]
        return NamesPage(tuple(found[:limit]), len(found) > limit)

    def status(self) -> MemberStatus:
        return MemberStatus("n1", "follower", 3, 10, 9, "n2", 42)


def test_messages_round_trip() -> None:
    status = MemberStatus("n1", "leader", 7, 100, 99, None, None)
    assert messages.decode_member_status(messages.encode_member_status(status)) == status
    page = NamesPage(("a", "é"), True)
    assert messages.decode_names_response(messages.encode_names_response(page)) == page
    data = messages.encode_names_request("p", "x", 5)
    assert messages.decode_names_request(data) == ("p", "x", 5)


async def test_grpc_and_memory_serve_names_pages_and_status() -> None:
    info = Info([f"k{i:02}" for i in range(5)] + ["other"])
    async with (
        GrpcServer("n1", Consensus(), Client(), info=info, port=0) as server,
        LeaderClient(server.address, timeout=5) as grpc_client,
    ):
        net = MemoryNetwork()
        net.serve("a", "n1", Consensus(), Client(), info=info)
        for client in (grpc_client, net.leader_client("c", "a")):
            assert await client.names("k", "", 2) == NamesPage(("k00", "k01"), True)
            assert await client.names("k", "k03", 2) == NamesPage(("k04",), False)
            assert await client.status() == info.status()
            info.leader = False
            with pytest.raises(NotLeaderError):
                await client.names("", "", 0)
            info.leader = True


async def test_a_member_without_names_or_status_is_unsupported() -> None:
    async with (
        GrpcServer("n1", Consensus(), Client(), port=0) as server,
        LeaderClient(server.address, timeout=5) as leader,
    ):
        with pytest.raises(UnsupportedOperationError, match="does not serve DRefExt/Names"):
            await leader.names("")
        with pytest.raises(UnsupportedOperationError, match="does not serve DRefExt/Status"):
            await leader.status()
    net = MemoryNetwork()
    net.serve("a", "n1", Consensus(), Client())
    with pytest.raises(UnsupportedOperationError):
        await net.leader_client("c", "a").names("")


# -- the CLI against member processes -------------------------------------------------------------
@pytest.fixture(scope="module")
def procs() -> Iterator[ProcCluster]:
    with ProcCluster(3).running() as cluster:
        yield cluster


def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env={"COLUMNS": "200", **env})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


async def test_cli_ls_and_status_in_client_mode(procs: ProcCluster) -> None:
    # The member processes' settings say mode = member; the CLI is a client all the same.
    env = {"DREF_BACKEND": "raft", "DREF_RAFT_ENDPOINTS": procs.endpoints}
    async with dref.connect("raft", mode="client", endpoints=procs.endpoints) as ctx:
        await ctx.backend.set("cli:a", b"\x01")
        await ctx.backend.set("cli:b", b"\x02", ttl=60)
        await ctx.backend.set("cli:gone", b"\x03", ttl=0.05)

        async def gone() -> bool:
            return await ctx.backend.get("cli:gone") is None

        await eventually(gone, what="cli:gone expired")

        async def every_member_heard_from_the_leader() -> bool:
            # The last member started may still be unreachable to the leader for a moment
            # (gRPC reconnect backoff): status shows its contact once it has heard.
            rows = (await ctx.backend.status()).rows
            return all(row["last_contact_s"] is not None for row in rows)

        await eventually(every_member_heard_from_the_leader, what="contact with every member")
    assert await asyncio.to_thread(cli, env, "ls", "cli:") == (0, "cli:a\ncli:b\n", "")
    assert (await asyncio.to_thread(cli, env, "get", "cli:a"))[:2] == (0, "1\n")
    code, out, _ = await asyncio.to_thread(cli, env, "status", "--json")
    assert code == 0
    rows = json.loads(out)["rows"]
    assert [row["node"] for row in rows] == procs.ids
    assert sum(row["role"] == "leader" for row in rows) == 1
    assert all(row["lag"] >= 0 and row["last_contact_s"] is not None for row in rows), rows
    code, out, _ = await asyncio.to_thread(cli, env, "status")
    assert code == 0
    for header in ("node", "role", "term", "commit", "applied", "lag", "leader", "last contact"):
        assert header in out


def test_cli_status_of_an_unreachable_cluster_is_exit_4() -> None:
    env = {
        "DREF_BACKEND": "raft",
        "DREF_RAFT_ENDPOINTS": "x1=127.0.0.1:1",
        "DREF_RAFT_OP_TIMEOUT": "0.5",
    }
    code, out, _ = cli(env, "status", "--json")
    assert code == 4
    (row,) = json.loads(out)["rows"]
    assert row["role"] == "unreachable"
    code, _, err = cli(env, "get", "x")
    assert code == 4
    assert err.startswith("error: ")


async def test_a_member_pages_its_live_names_sorted_without_the_expired_ones() -> None:
    node = RaftNode(NodeConfig("n", {}), MemoryNetwork().peer_clients("n"))
    node.start()
    try:
        assert await node.wait_for_leader(10) == "n"
        now = node.wall_ms()
        for i in (5, 3, 0, 4, 1, 2):
            expire_at = now - 1 if i == 3 else now + 600_000 if i == 4 else None
            await node.propose(SetElement(f"k{i}", b"v", expire_at), 10)
        await node.propose(SetElement("other", b"v", None), 10)
        handler = NodeClientHandler(node, RaftSettings())
        assert await handler.names("k", "", 2) == NamesPage(("k0", "k1"), True)
        assert await handler.names("k", "k1", 2) == NamesPage(("k2", "k4"), True)
        assert await handler.names("k", "k4", 2) == NamesPage(("k5",), False)
        assert await handler.names("", "k5", 0) == NamesPage(("other",), False)
    finally:
        await node.aclose()
