"""dref_raft.member.metrics: a 3-member in-memory cluster scraped through prometheus_client, and
`dref raft node --metrics-port` serving /metrics from a real process."""

from __future__ import annotations

import logging
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator

import pytest

import dref
from dref import metrics
from dref_raft.member.metrics import RaftCollector
from dref_raft.member.registry import Member

prometheus_client = pytest.importorskip("prometheus_client")
from cluster_procs import wait_until  # noqa: E402
from memory_cluster import memory_members, memory_options  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from test_cli_raft import DREF, ENV, Lines  # noqa: E402

from dref_raft.cli.local_cluster import free_ports  # noqa: E402

IDS = ("n1", "n2", "n3")


def member_options(node_id: str) -> dict[str, object]:
    return memory_options(IDS, node_id)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
async def cluster() -> AsyncIterator[list[Member]]:
    async with memory_members(IDS, snapshot_every=5) as members:
        yield members


async def test_role_term_commit_applied_lag_elections_and_snapshots(
    cluster: list[Member],
) -> None:
    registry = CollectorRegistry()
    registry.register(RaftCollector())
    ops = metrics.enable_metrics(registry)
    try:
        leader = next(m for m in cluster if m.node.is_leader)
        async with dref.connect("raft", **member_options(leader.node.id)) as ctx:
            ref = await ctx.make(0, "metrics")
            for i in range(10):
                await ref.set(i)
            for member in cluster:  # every member applied the leader's commit
                assert await member.node.wait_applied(leader.node.core.commit, 5)
                # snapshots are taken in the background: wait for those 10+ applies started
                node = member.node
                await wait_until(lambda n=node: n.stats.snapshots >= 2, 5, f"{node.id} snapshots")
            samples = parse(generate_latest(registry).decode())
    finally:
        metrics.disable_metrics()
    assert ops.series[("raft", "set", "ok")].count == 10
    assert samples[("dref_operation_duration_seconds_count", _op("set"))] == 10

    ids = {m.node.id for m in cluster}
    lead = leader.node.id
    for member in cluster:
        node = member.node
        n = (("node", node.id),)
        assert samples[("dref_raft_term", n)] == node.term == leader.node.term
        assert samples[("dref_raft_commit_index", n)] == node.core.commit
        assert samples[("dref_raft_applied_index", n)] == node.core.applied
        assert samples[("dref_raft_is_leader", n)] == (node.id == lead)
        role = "leader" if node.id == lead else "follower"
        assert samples[("dref_raft_role", (("node", node.id), ("role", role)))] == 1
        assert samples[("dref_raft_role", (("node", node.id), ("role", "candidate")))] == 0
        assert samples[("dref_raft_snapshot_duration_seconds_count", n)] >= 2  # 10+ applies
        assert samples[("dref_raft_snapshot_entries", n)] == 1
        assert samples[("dref_raft_snapshot_bytes", n)] == 0  # no storage_dir
    assert samples[("dref_raft_elections_total", (("node", lead),))] >= 1
    lags = {
        dict(labels)["peer"]: value
        for (name, labels), value in samples.items()
        if name == "dref_raft_replication_lag"
    }
    assert set(lags) == ids - {lead}
    for peer, value in lags.items():
        progress = leader.node.core.progress(peer)
        assert progress is not None
        assert value == leader.node.core.log.last_seq - progress.match_seq


def _op(kind: str) -> tuple[tuple[str, str], ...]:
    return (("backend", "raft"), ("kind", kind), ("outcome", "ok"))


def test_raft_node_metrics_port_serves_metrics() -> None:
    port, metrics_port = free_ports(2)
    args = [*DREF, "raft", "node", "--port", str(port), "--metrics-port", str(metrics_port)]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ENV, "DREF_RAFT_NODE_ID": "solo"},
    )
    try:
        lines = Lines(proc)
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        lines.until(lambda line: "metrics at" in line, 20)
        assert lines.seen[-1] == f"dref-raft node solo metrics at {url}\n"
        deadline = time.monotonic() + 15
        while True:  # until the solo member has elected itself
            with urllib.request.urlopen(url, timeout=5) as response:
                samples = parse(response.read().decode())
            if samples.get(("dref_raft_is_leader", (("node", "solo"),))) == 1:
                break
            assert time.monotonic() < deadline, samples
            time.sleep(0.05)
        assert samples[("dref_raft_term", (("node", "solo"),))] >= 1
        assert samples[("dref_raft_elections_total", (("node", "solo"),))] >= 1
        assert ("dref_locks_held", ()) in samples  # dref.metrics is enabled too
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_log_records_carry_node_term_and_element(
    cluster: list[Member], caplog: pytest.LogCaptureFixture
) -> None:
    """Records of the node driver carry `dref_node` and `dref_term`; lock-loss records carry
    `dref_element`."""
    leader = next(m for m in cluster if m.node.is_leader)
    with caplog.at_level(logging.DEBUG, logger="dref_raft.member.node"):
        assert await leader.node.step_down()
        assert await leader.node.wait_for_leader(10) is not None
    record = next(r for r in caplog.records if r.name == "dref_raft.member.node")
    node = getattr(record, "dref_node", None)
    assert node in {m.node.id for m in cluster}
    assert isinstance(getattr(record, "dref_term", None), int)
    assert record.dref_term >= 1  # type: ignore[attr-defined]

    caplog.clear()
    async with dref.connect("raft", **member_options(leader.node.id)) as ctx:
        with (
            caplog.at_level(logging.WARNING, logger="dref.lock"),
            pytest.raises(dref.errors.LockStolenError),
        ):
            async with ctx.lock("logged-lock"):
                await ctx.backend.delete("logged-lock")
    lost = next(r for r in caplog.records if r.name == "dref.lock")
    assert lost.dref_element == "logged-lock"  # type: ignore[attr-defined]
