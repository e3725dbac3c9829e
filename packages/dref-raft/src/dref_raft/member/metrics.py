"""Prometheus metrics of the Raft members running in this process, read when scraped.

`RaftCollector` costs nothing between scrapes: it reads each member's core (role, term, commit,
applied, the leader's per-follower progress) and `RaftNode.stats` (elections, snapshots). It
needs `prometheus-client` (the extra `dref-raft[metrics]`) only when it collects.

    from prometheus_client import REGISTRY
    from dref.metrics import enable_metrics
    from dref_raft.member.metrics import RaftCollector

    enable_metrics()  # operations, locks, change streams
    REGISTRY.register(RaftCollector())  # the members of this process

`dref raft node --metrics-port PORT` does both and serves them. The names and labels are listed
in docs/observability.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from dref_raft.core import Role
from dref_raft.member.registry import MemberRegistry, local_members

__all__ = ["RaftCollector", "serve_metrics"]

_ROLES = tuple(role.value for role in Role)


class RaftCollector:
    """A collector over the members of `registry` (default: this process's `local_members`)."""

    def __init__(self, registry: MemberRegistry = local_members) -> None:
        self._registry = registry

    def describe(self) -> list[Any]:
        return []  # names are known from collect(); nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            SummaryMetricFamily,
        )

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ("node",)) -> Any:
            return GaugeMetricFamily(name, doc, labels=labels)

        def counter(name: str, doc: str) -> Any:
            return CounterMetricFamily(name, doc, labels=("node",))

        role = gauge("dref_raft_role", "1 for the member's current role.", ("node", "role"))
        term = gauge("dref_raft_term", "Current Raft term.")
        commit = gauge("dref_raft_commit_index", "Highest log index known committed.")
        applied = gauge("dref_raft_applied_index", "Highest log index applied here.")
        last = gauge("dref_raft_last_log_index", "Highest index in this member's log.")
        leader = gauge("dref_raft_is_leader", "1 while this member leads.")
        lag = gauge(
            "dref_raft_replication_lag",
            "On the leader: entries of its log a follower does not have yet.",
            ("node", "peer"),
        )
        elections = counter("dref_raft_elections", "Elections this member started.")
        snapshots = SummaryMetricFamily(
            "dref_raft_snapshot_duration_seconds",
            "Snapshots this member took (log compaction) and the time taking and saving them.",
            labels=("node",),
        )
        entries = gauge("dref_raft_snapshot_entries", "Elements in the last snapshot taken.")
        size = gauge(
            "dref_raft_snapshot_bytes", "Bytes of the last snapshot file written (0: no storage)."
        )
        for member in self._registry.members():
            node = member.node
            core = node.core
            labels = [node.id]
            current = core.role.value
            for value in _ROLES:
                role.add_metric([node.id, value], 1.0 if value == current else 0.0)
            term.add_metric(labels, core.term)
            commit.add_metric(labels, core.commit)
            applied.add_metric(labels, core.applied)
            last_seq = core.log.last_seq
            last.add_metric(labels, last_seq)
            leader.add_metric(labels, 1.0 if core.role is Role.LEADER else 0.0)
            if core.role is Role.LEADER:
                for peer in sorted(node.peers):
                    progress = core.progress(peer)
                    if progress is not None:
                        lag.add_metric([node.id, peer], max(0, last_seq - progress.match_seq))
            stats = node.stats
            elections.add_metric(labels, stats.elections)
            snapshots.add_metric(labels, stats.snapshots, stats.snapshot_seconds)
            entries.add_metric(labels, stats.snapshot_entries)
            size.add_metric(labels, stats.snapshot_bytes)
        yield from (role, term, commit, applied, last, leader, lag, elections)
        yield from (snapshots, entries, size)


def serve_metrics(host: str, port: int) -> Callable[[], None]:
    """Enable dref's metrics and this process's `RaftCollector` in prometheus_client's default
    registry and serve them at `http://host:port/metrics` from a thread; returns `stop`."""
    from prometheus_client import REGISTRY, start_http_server

    from dref.metrics import disable_metrics, enable_metrics

    enable_metrics(REGISTRY)
    collector = RaftCollector()
    REGISTRY.register(collector)
    server, thread = start_http_server(port, addr=host)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)
        REGISTRY.unregister(collector)
        disable_metrics()

    return stop
