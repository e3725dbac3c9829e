"""An upstream follower (tests/upstream_double.py, no dref extensions) whose repair snapshot is
larger than the max message size: the leader cannot stream to it, so it says so, clearly, at
ERROR, once per window (docs/raft-wire.md#snapshot-streaming)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cluster_procs import free_ports, wait_until
from upstream_double import UpstreamFollower, serve_upstream

from dref.errors import DRefError
from dref_raft.commands import SetElement
from dref_raft.core import InstallSnapshot, Request, Response
from dref_raft.member import registry
from dref_raft.member.registry import Member, local_members
from dref_raft.settings import RaftSettings
from dref_raft.transport.grpc_client import PeerClients

pytestmark = pytest.mark.timeout(30)

LIMIT = 64 * 1024


class _CountingPeerClients(PeerClients):
    """`PeerClients` with a 64 KiB limit that counts the InstallSnapshot attempts."""

    installs = 0

    def __init__(self, **options: Any) -> None:
        super().__init__(**{**options, "max_message_bytes": LIMIT})

    async def call(self, address: str, request: Request, timeout: float) -> Response:
        if isinstance(request, InstallSnapshot):
            _CountingPeerClients.installs += 1
        return await super().call(address, request, timeout)


@pytest.fixture
async def upstream_follower(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[UpstreamFollower, Member]]:
    """A dref member `d` with a 64 KiB max message size, and the upstream double `u`."""
    monkeypatch.setattr(registry, "PeerClients", _CountingPeerClients)
    dref_port, upstream_port = free_ports(2)
    double = UpstreamFollower()
    settings = RaftSettings.model_validate(
        {
            "node_id": "d",
            "port": dref_port,
            "endpoints": f"d=127.0.0.1:{dref_port},u=127.0.0.1:{upstream_port}",
            "mixed_cluster": True,
            "op_timeout": 2.0,
        }
    )
    server = await serve_upstream(double, upstream_port)
    try:
        member = await local_members.acquire(settings)
        try:
            yield double, member
        finally:
            await local_members.release(member)
    finally:
        await server.stop(None)


async def test_an_oversized_snapshot_for_an_upstream_follower_is_logged_at_error_once(
    upstream_follower: tuple[UpstreamFollower, Member], caplog: pytest.LogCaptureFixture
) -> None:
    double, member = upstream_follower
    node = member.node
    await wait_until(lambda: node.is_leader, 10, "d leads")
    for i in range(8):  # 80 KB of state, in entries small enough to replicate one by one
        await node.propose(SetElement(f"k{i}", bytes([i]) * 10_000, None), 3.0)
    snapshots = len(double.of("InstallSnapshot"))
    with caplog.at_level(logging.ERROR, "dref_raft"):
        double.reject_next_append = True  # the repair needs a snapshot of the applied state
        with contextlib.suppress(DRefError):  # never commits: u cannot catch up
            await node.propose(SetElement("last", b"x", None), 0.2)
        attempts = _CountingPeerClients.installs

        def retried_twice() -> bool:
            double.reject_next_append = True  # keep needing the snapshot
            return _CountingPeerClients.installs >= attempts + 2

        # The core tries again every election timeout; the line is not repeated in the window.
        await wait_until(retried_twice, 10, "two more attempts")
    errors = [r for r in caplog.records if "exceeds the max message size" in r.message]
    assert len(errors) == 1
    record = errors[0]
    assert record.levelno == logging.ERROR
    assert "follower u" in record.message
    assert f"{LIMIT} bytes" in record.message
    assert len(double.of("InstallSnapshot")) == snapshots, "nothing oversized reached u"
