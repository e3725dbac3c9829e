"""Discovery-driven joining: a member started with `join = true` and `node_services` finds the
running members through DNS and asks the leader to add it; it becomes a voter once caught up."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from cluster_procs import wait_until

from dref.errors import BackendUnavailableError
from dref_raft.member.registry import local_members
from dref_raft.settings import RaftSettings

pytestmark = pytest.mark.timeout(60)

HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]


def _shared_free_port() -> int:
    for _ in range(20):
        with socket.socket() as probe:
            probe.bind((HOSTS[0], 0))
            port = int(probe.getsockname()[1])
        try:
            with contextlib.ExitStack() as stack:
                for host in HOSTS[1:]:
                    stack.enter_context(socket.socket()).bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on every test address")


class _Dns:
    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses

    async def __call__(self, name: str) -> list[str]:
        return list(self.addresses)


def _settings(name: str, host: str, port: int, **extra: object) -> RaftSettings:
    return RaftSettings(
        node_id=name,
        host=host,
        port=port,
        node_services="dref.test",
        discovery_timeout=15.0,
        leader_wait=0.0,
        **extra,  # type: ignore[arg-type]
    )


async def test_a_member_joins_a_running_cluster_through_discovery() -> None:
    port = _shared_free_port()
    dns = _Dns(HOSTS[:3])
    first = [_settings(n, h, port, expected_size=3) for n, h in zip("abc", HOSTS, strict=False)]
    group = await asyncio.gather(*(local_members.acquire(s, resolver=dns) for s in first))
    joined = None
    try:
        leader_id = await group[0].node.wait_for_leader(15.0)
        assert leader_id is not None
        leader = next(m for m in group if m.node.id == leader_id)
        dns.addresses = list(HOSTS)  # the new machine's record appears
        joined = await local_members.acquire(
            _settings("d", HOSTS[3], port, join=True), resolver=dns
        )
        await wait_until(
            lambda: (
                leader.node.core.membership.voters == ("a", "b", "c", "d")
                and leader.node.core.commit >= leader.node.core.config_seq
            ),
            20.0,
            "d promoted to voter",
        )
        assert leader.node.core.membership.address_of("d") == f"{HOSTS[3]}:{port}"
        await wait_until(
            lambda: joined is not None and joined.node.core.voters == {"a", "b", "c", "d"},
            20.0,
            "d holding the configuration",
        )
    finally:
        if joined is not None:
            await local_members.release(joined)
        for member in group:
            await local_members.release(member)


async def test_joining_gives_up_when_no_member_answers() -> None:
    port = _shared_free_port()
    settings = _settings("d", HOSTS[3], port, join=True).model_copy(
        update={"discovery_timeout": 0.5}
    )
    with pytest.raises(BackendUnavailableError, match="no running member identified"):
        await local_members.acquire(settings, resolver=_Dns(HOSTS))


def test_join_with_discovery_needs_no_expected_size() -> None:
    settings = RaftSettings(node_id="d", node_services="dref.test", join=True)
    assert settings.expected_size is None
