"""Large state and backups across real member processes (docs/raft-wire.md#snapshot-streaming,
docs/operations.md#backup-and-restore)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from cluster_procs import ProcCluster

from dref.cli import main
from dref.errors import DRefError
from dref_raft.commands import MemberStatus
from dref_raft.transport.grpc_client import LeaderClient

pytestmark = pytest.mark.timeout(90)

DREF = [sys.executable, "-m", "dref.cli"]


async def _statuses(cluster: ProcCluster) -> dict[str, MemberStatus]:
    out = {}
    for node in cluster.nodes:
        if node.proc is None:
            continue
        async with LeaderClient(node.address, timeout=2.0) as client:
            try:
                out[node.node_id] = await client.status()
            except Exception:
                continue
    return out


async def _dref(*args: str) -> str:
    """Run `dref ARGS` in a child process; its stdout (it must succeed)."""
    result = await asyncio.to_thread(
        subprocess.run, [*DREF, *args], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def _poll(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Check `condition` every 50 ms until it holds; AssertionError after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        assert loop.time() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        await asyncio.sleep(0.05)


async def _leader(cluster: ProcCluster) -> str:
    found: list[str] = []

    async def elected() -> bool:
        statuses = await _statuses(cluster)
        found[:] = [s.node_id for s in statuses.values() if s.role == "leader"]
        return bool(found)

    await _poll(elected, 20, "a leader")
    return next(n.address for n in cluster.nodes if n.node_id == found[0])


async def _set_all(cluster: ProcCluster, values: dict[str, bytes]) -> int:
    """Set `values` on the leader, following a new one (a set is idempotent); the highest
    applied seq answered."""
    left, applied = dict(values), 0

    async def done() -> bool:
        nonlocal applied
        async with LeaderClient(await _leader(cluster), timeout=10.0) as client:
            try:
                while left:
                    name = next(iter(left))
                    await client.set_element(name, left[name])
                    del left[name]
            except DRefError:  # a new leader: find it, go on
                return False
            finally:
                applied = max(applied, client.applied_seq)
        return True

    await _poll(done, 60, "every value set")
    return applied


async def test_a_restarted_member_catches_up_on_state_above_the_old_16_mib_limit(
    tmp_path: Path,
) -> None:
    cluster = ProcCluster(3, storage=tmp_path, node_args=("--snapshot-every", "4"))
    with cluster.running():
        leader_address = await _leader(cluster)
        behind = next(n for n in cluster.nodes if n.address != leader_address)
        behind.stop()
        values = {f"big{i}": bytes([i]) * 1_000_000 for i in range(24)}  # 20+ MB snapshots
        target = await _set_all(cluster, values)
        behind.start()
        async with LeaderClient(behind.address, timeout=2.0) as member:

            async def caught_up() -> bool:
                return (await member.status()).applied >= target

            await _poll(caught_up, 30, f"{behind.node_id} to apply seq {target}")


async def test_save_then_restore_seeds_a_new_cluster_that_serves_the_saved_values(
    tmp_path: Path,
) -> None:
    values = {f"k{i}": b"v%d" % i for i in range(40)}
    backup = tmp_path / "backup.drfs"
    cluster = ProcCluster(3, storage=tmp_path / "old", node_args=("--snapshot-every", "16"))
    with cluster.running():
        leader_address = await _leader(cluster)
        async with LeaderClient(leader_address, timeout=5.0) as client:
            for name, value in values.items():
                await client.set_element(name, value)
        # Any member: its state at its applied seq. The leader has applied every write.
        saved = await _dref("raft", "snapshot", "save", str(backup), "--address", leader_address)
        assert f"saved {backup}" in saved
        async with LeaderClient(leader_address, timeout=5.0) as client:
            await client.set_element("after", b"not in the backup")
    restored = ProcCluster(3, storage=tmp_path / "new")
    for node in restored.nodes:
        target = str(tmp_path / "new" / node.node_id)
        args = ["raft", "snapshot", "restore", str(backup), "--storage-dir", target]
        result = await asyncio.to_thread(CliRunner().invoke, main, args)
        assert result.exit_code == 0, result.output
        assert "restored 40 elements" in result.output
    with restored.running():
        leader_address = await _leader(restored)
        async with LeaderClient(leader_address, timeout=5.0) as client:
            for name, value in values.items():
                assert await client.get_element(name) == value
            assert await client.get_element("after") is None
            await client.set_element("new", b"writable")
            assert await client.get_element("new") == b"writable"
