"""Large state and rolling restarts across real member processes (docs/raft.md#large-state):

* every member of a 3-member cluster is restarted in turn (SIGTERM: a leader hands over first)
  while a client-mode context keeps writing: no acknowledged write is lost and the callers see
  no error (the client retries what is retryable within `op_timeout`);
* a member that is new, and then one restarted behind the leader's compacted log, catches up
  on a state of 100,000 elements through a streamed snapshot and holds exactly the leader's
  elements. (The 1,000,000-element figures come from benchmarks/raft_snapshot_bench.py.)
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from pathlib import Path

import pytest
from cluster_procs import NodeProcess, ProcCluster, wait_until

import dref
from dref.errors import DRefError
from dref_raft.client.snapshot_backup import save_snapshot
from dref_raft.fsm import ClusterSnapshot, PackedEntries
from dref_raft.storage.snapshot import encode_snapshot_file
from dref_raft.storage.snapshot_files import read_backup, restore_backup, write_backup_trailer
from dref_raft.transport.grpc_client import LeaderClient

pytestmark = pytest.mark.timeout(120)


async def _applied(node: NodeProcess) -> int:
    """The member's applied seq (-1 while it does not answer)."""
    try:
        async with LeaderClient(node.address, timeout=2.0) as client:
            return (await client.status()).applied
    except Exception:  # starting or stopping
        return -1


async def _leader(nodes: list[NodeProcess], timeout: float = 20.0) -> NodeProcess:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for node in nodes:
            try:
                async with LeaderClient(node.address, timeout=2.0) as client:
                    if (await client.status()).role == "leader":
                        return node
            except Exception:  # starting or stopping
                continue
        assert loop.time() < deadline, f"no leader among {[n.node_id for n in nodes]}"
        await asyncio.sleep(0.05)


async def _caught_up(node: NodeProcess, target: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (applied := await _applied(node)) < target:
        assert loop.time() < deadline, (
            f"{node.node_id} applied {applied} after {timeout:g} s, not {target}"
        )
        await asyncio.sleep(0.05)


async def _writes_flow(acknowledged: dict[str, bytes], writers: list[asyncio.Task[None]]) -> None:
    """Wait until 40 more writes were acknowledged; the writers must still be running."""
    target = len(acknowledged) + 40
    await wait_until(
        lambda: len(acknowledged) >= target or any(t.done() for t in writers), 30, "40 writes"
    )
    assert not any(t.done() for t in writers), "a writer ended early"


async def test_a_rolling_restart_under_writes_loses_nothing_and_shows_callers_no_error(
    tmp_path: Path,
) -> None:
    cluster = ProcCluster(3, storage=tmp_path, node_args=("--snapshot-every", "64"))
    acknowledged: dict[str, bytes] = {}
    errors: list[str] = []
    with cluster.running():
        options = {"mode": "client", "endpoints": cluster.endpoints, "op_timeout": 15.0}
        async with dref.connect("raft", **options) as ctx:
            backend = ctx.backend
            restarting = True

            async def writer(w: int) -> None:
                for i in range(3000):  # bounded; ends when the restarts are over
                    if not restarting:
                        return
                    name, value = f"w{w}-{i}", b"%d" % i
                    try:
                        await backend.set(name, value)
                    except DRefError as exc:
                        errors.append(f"{name}: {type(exc).__name__}: {exc}")
                        continue
                    acknowledged[name] = value

            writers = [asyncio.create_task(writer(w)) for w in range(4)]
            try:
                for node in cluster.nodes:
                    await _writes_flow(acknowledged, writers)  # before each restart
                    await asyncio.to_thread(node.stop)  # SIGTERM: graceful, hands over leadership
                    await asyncio.to_thread(node.start)  # the same storage directory
                    leader = await _leader(cluster.nodes)
                    await _caught_up(node, await _applied(leader), 30)
                await _writes_flow(acknowledged, writers)  # and after the last one
            finally:
                restarting = False
                await asyncio.gather(*writers)
            assert errors == []
            for name, value in acknowledged.items():
                assert await backend.get(name) == value, name
        leader = await _leader(cluster.nodes)
        target = await _applied(leader)
        for node in cluster.nodes:
            await _caught_up(node, target, 30)


def _seed_backup(path: Path, count: int) -> dict[str, bytes]:
    rng = random.Random(15)
    names = [f"key{i:07d}" for i in range(count)]
    values = [rng.randbytes(100) for _ in range(count)]
    body = encode_snapshot_file(ClusterSnapshot(PackedEntries(names, values), count, 1))
    path.write_bytes(body)
    write_backup_trailer(path, hashlib.sha256(body).digest())
    return dict(zip(names, values, strict=True))


async def _elements_of(node: NodeProcess, path: Path) -> tuple[int, dict[str, bytes]]:
    """The member's applied seq and elements (`DRefSnapshot/Save`)."""
    header = await save_snapshot(node.address, path, timeout=60)
    snapshot, _ = await asyncio.to_thread(read_backup, path)
    assert snapshot.last_seq == header.last_seq
    return snapshot.last_seq, {e.key: e.value for e in snapshot.entries}


async def test_new_and_restarted_members_catch_up_on_100k_elements(tmp_path: Path) -> None:
    expected = _seed_backup(tmp_path / "seed.backup", 100_000)
    cluster = ProcCluster(3, storage=tmp_path / "storage", node_args=("--snapshot-every", "32"))
    seeded, behind = cluster.nodes[:2], cluster.nodes[2]
    for node in seeded:
        restore_backup(tmp_path / "seed.backup", tmp_path / "storage" / node.node_id)
    try:
        for node in seeded:
            node.start(timeout=60)
        leader = await _leader(seeded, 30)
        behind.start()  # new: an empty storage directory
        await _caught_up(behind, await _applied(leader), 60)

        behind.stop()
        async with LeaderClient(leader.address, timeout=10.0) as client:
            for i in range(100):  # the others' logs are compacted past the stopped member
                await client.set_element(f"key{i:07d}", b"after %d" % i)
                expected[f"key{i:07d}"] = b"after %d" % i
            target = client.applied_seq
        behind.start()
        await _caught_up(behind, target, 60)

        leader_seq, leader_elements = await _elements_of(leader, tmp_path / "leader.backup")
        seq, elements = await _elements_of(behind, tmp_path / "behind.backup")
        assert seq == leader_seq >= target
        assert elements == leader_elements == expected
    finally:
        for node in cluster.nodes:
            node.stop()
