"""Membership changes on real member processes: grow 3 → 5 and shrink 5 → 3 (the leader
removed too) under a steady write load, losing no acknowledged write; `dref raft member`."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner
from cluster_procs import NodeProcess, ProcCluster, free_ports, wait_until

import dref
import dref_raft
from dref.cli import main
from dref.errors import DRefError
from dref_raft.errors import MembershipError

pytestmark = pytest.mark.timeout(120)


def _joiner(node_id: str, port: int, storage: Path) -> NodeProcess:
    """A member process started to join (`--join`): it knows no voters until it is added."""
    args = ["--node-id", node_id, "--port", str(port), "--join"]
    args += ["--storage-dir", str(storage / node_id)]
    return NodeProcess(node_id, port, args)


async def _write_load(ctx: dref.DRefContext, acked: list[int], stop: asyncio.Event) -> int:
    """Write w0, w1, ... one at a time until `stop` (at most 5000); the acknowledged ones go to
    `acked`; failures (outcome unknown, retried by nobody) are counted."""
    failed = 0
    for i in range(5000):
        if stop.is_set():
            break
        try:
            await ctx.ref(f"w{i}", type=int).set(i)
            acked.append(i)
        except DRefError:
            failed += 1
    return failed


async def test_grow_to_five_and_shrink_to_three_under_load_loses_no_acknowledged_write(
    tmp_path: Path,
) -> None:
    cluster = ProcCluster(3, storage=tmp_path)
    joiners = [_joiner(f"p{3 + i}", port, tmp_path) for i, port in enumerate(free_ports(2))]
    everyone = ",".join([cluster.endpoints, *(f"{j.node_id}={j.address}" for j in joiners)])
    with cluster.running():
        try:
            for joiner in joiners:
                joiner.start()
            async with dref.connect(
                "raft", mode="client", node_id="load", endpoints=everyone, op_timeout=20
            ) as ctx:
                acked: list[int] = []
                stop = asyncio.Event()
                load = asyncio.create_task(_write_load(ctx, acked, stop))
                async with dref_raft.members(ctx) as members:
                    view = await members.list()
                    assert set(view.voters) == {"p0", "p1", "p2"}
                    # grow: each joins as a learner and is promoted once caught up
                    await wait_until(lambda: len(acked) > 20, 20, "writes before the change")
                    for joiner in joiners:
                        view = await members.add(joiner.node_id, joiner.address)
                        assert joiner.node_id in view.voters
                    assert set(view.voters) == {"p0", "p1", "p2", "p3", "p4"}
                    assert view.committed
                    grown = len(acked)
                    await wait_until(lambda: len(acked) > grown + 20, 20, "writes with 5 voters")
                    # shrink: the leader first, then one more of the original members
                    first = view.leader
                    view = await members.remove(first)
                    assert first not in view.voters
                    second = next(i for i in ("p0", "p1", "p2") if i != first)
                    view = await members.remove(second)
                    assert len(view.voters) == 3
                    assert {first, second}.isdisjoint(view.voters)
                    for node in cluster.nodes:
                        if node.node_id in (first, second):
                            node.stop()  # as an operator does once the removal committed
                    shrunk = len(acked)
                    await wait_until(lambda: len(acked) > shrunk + 20, 20, "writes with 3 voters")
                    stop.set()
                    failed = await load
                    # every acknowledged write is readable from the three left
                    for i in acked:
                        assert await ctx.ref(f"w{i}", type=int).get() == i
                    assert len(acked) > 60
                    assert failed <= 5, f"{failed} writes failed during the changes"
                    final = await members.list()
                    assert set(final.voters) == set(view.voters)
                    assert final.leader in final.voters
        finally:
            for joiner in joiners:
                joiner.stop()


async def test_member_and_leader_commands(tmp_path: Path) -> None:
    cluster = ProcCluster(3)
    joiner = _joiner("p3", free_ports(1)[0], tmp_path)
    runner = CliRunner()

    async def dref_cli(*args: str) -> tuple[int, str]:
        result = await asyncio.to_thread(
            runner.invoke,
            main,
            ["raft", *args, "--endpoints", cluster.endpoints],
            env={"COLUMNS": "200"},
        )
        return result.exit_code, result.output

    with cluster.running():
        try:
            code, out = await dref_cli("member", "list")
            assert code == 0, out
            assert "3 voters, 0 learners" in out
            for node_id in ("p0", "p1", "p2"):
                assert node_id in out
            assert "voter (leader)" in out
            leader = next(line.split()[1] for line in out.splitlines() if "(leader)" in line)
            target = next(i for i in ("p0", "p1", "p2") if i != leader)
            code, out = await dref_cli("leader", "transfer", target)
            assert code == 0, out
            assert f"{target} leads" in out
            code, out = await dref_cli("leader", "transfer", "nope")
            assert code == 1, out
            assert "not another voter" in out
            # not a single-server change is impossible through add/remove; unknown ids refused
            code, out = await dref_cli("member", "remove", "nope")
            assert code == 1
            assert "MembershipError" in out or "not a member" in out
            # a member that is not running stays a learner: add times out (exit 5)
            code, out = await dref_cli(
                "member", "add", "p3", joiner.address, "--promotion-timeout", "0.5"
            )
            assert code == 5, out
            assert "not promoted" in out
            code, out = await dref_cli("member", "list")
            assert "3 voters, 1 learners" in out
            assert "learner" in out
            # once it runs, it catches up and is promoted (add is idempotent)
            joiner.start()
            code, out = await dref_cli("member", "add", "p3", joiner.address)
            assert code == 0, out
            assert "4 voters, 0 learners" in out
            code, out = await dref_cli("member", "remove", "p3")
            assert code == 0, out
            assert "3 voters, 0 learners" in out
        finally:
            joiner.stop()


async def test_a_member_context_changes_membership_in_process_and_refuses_mixed_clusters() -> None:
    options = {"transport": "memory", "node_id": "solo", "port": 7401, "leader_wait": 5}
    async with dref.connect("raft", **options) as ctx, dref_raft.members(ctx) as members:
        view = await members.list()
        assert view.voters == ("solo",)
        assert view.leader == "solo"
        view = await members.add("later", "127.0.0.1:1", wait=False)
        assert view.learners == ("later",)
        assert view.committed
        # a learner does not count: the single voter still commits alone
        await ctx.ref("k", type=int).set(1)
        view = await members.remove("later")
        assert view.learners == ()
        with pytest.raises(MembershipError, match="not a member"):
            await members.remove("nobody")
    mixed = {**options, "node_id": "mixed", "port": 7402, "mixed_cluster": True}
    async with dref.connect("raft", **mixed) as ctx, dref_raft.members(ctx) as members:
        with pytest.raises(MembershipError, match="mixed_cluster"):
            await members.add("later", "127.0.0.1:1", wait=False)
        assert (await members.list()).learners == ()


async def test_leadership_transfer_under_load_and_a_leader_hands_over_on_sigterm() -> None:
    cluster = ProcCluster(3)
    with cluster.running():
        async with (
            dref.connect(
                "raft", mode="client", node_id="load", endpoints=cluster.endpoints, op_timeout=20
            ) as ctx,
            dref_raft.members(ctx) as members,
        ):
            acked: list[int] = []
            stop = asyncio.Event()
            load = asyncio.create_task(_write_load(ctx, acked, stop))
            await wait_until(lambda: len(acked) > 20, 20, "writes before the transfer")
            old = (await members.list()).leader
            target = next(i for i in ("p0", "p1", "p2") if i != old)
            assert await members.transfer_leader(target) == target
            assert (await members.list()).leader == target
            moved = len(acked)
            await wait_until(lambda: len(acked) > moved + 20, 20, "writes after the transfer")
            # SIGTERM of the leader process: it hands over before it stops
            process = next(n for n in cluster.nodes if n.node_id == target)
            assert process.proc is not None
            proc = process.proc
            process.signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 10)
            assert proc.stdout is not None
            said = proc.stdout.read()
            assert f"{target}: handed leadership to" in said, said
            process.proc = None
            stopped = len(acked)
            await wait_until(lambda: len(acked) > stopped + 20, 20, "writes after the stop")
            stop.set()
            failed = await load
            for i in acked:
                assert await ctx.ref(f"w{i}", type=int).get() == i
            assert failed == 0
