"""Address discovery (`DREF_NODE_ADDRESSES` / `DREF_NODE_SERVICES`): members on 127.0.0.1,
127.0.0.2 and 127.0.0.3 sharing one port bootstrap a fixed voter set of real node ids."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from click.testing import CliRunner
from cluster_procs import NodeProcess, wait_until

import dref
from dref.cli import main
from dref.clock import SystemClock
from dref.errors import BackendUnavailableError, ConfigurationError
from dref_raft.member.backend import RaftBackend
from dref_raft.member.discovery import AddressSource, identify, resolve_name
from dref_raft.member.registry import Member, local_members
from dref_raft.settings import RaftSettings

pytestmark = pytest.mark.timeout(60)

HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
FAST = {"discovery_timeout": 10.0, "leader_wait": 0.0}


def shared_free_port(hosts: list[str]) -> int:
    """A port that is free on every one of `hosts` right now (bounded tries)."""
    for _ in range(20):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        try:
            with contextlib.ExitStack() as stack:
                for host in hosts[1:]:
                    sock = stack.enter_context(socket.socket())
                    sock.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {hosts}")


@pytest.fixture
def port() -> int:
    return shared_free_port(HOSTS)


@contextlib.asynccontextmanager
async def members(*settings: RaftSettings, resolver: object = None) -> AsyncIterator[list[Member]]:
    """In-test members bootstrapping concurrently (as separate machines would); stopped after."""
    started = await asyncio.gather(
        *(local_members.acquire(s, resolver=resolver) for s in settings)  # type: ignore[arg-type]
    )
    try:
        yield list(started)
    finally:
        for member in started:
            await local_members.release(member)


class FakeDns:
    """An injected resolver: `records[name]` is what `name` resolves to now."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = records
        self.calls = 0

    async def __call__(self, name: str) -> list[str]:
        self.calls += 1
        if name not in self.records:
            raise socket.gaierror(socket.EAI_NONAME, f"{name}: unknown")
        return list(self.records[name])


async def leader_backend(group: list[Member]) -> RaftBackend:
    """A context on the first member, once a leader is known."""
    leader = await group[0].node.wait_for_leader(15.0)
    assert leader is not None, "no leader elected"
    return RaftBackend(group[0], clock=SystemClock(), change_buffer=64)


# -- bootstrap in-process (DNS with an injected resolver) ------------------------------------------
async def test_dns_discovery_fixes_real_node_ids_and_a_poll_never_changes_the_quorum(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    dns = FakeDns({"dref.test": list(HOSTS)})
    settings = [
        RaftSettings(
            node_id=name,
            host=host,
            port=port,
            node_services="dref.test",
            expected_size=3,
            address_poll_interval=0.05,
            **FAST,  # type: ignore[arg-type]
        )
        for name, host in zip(["alpha", "beta", "gamma"], HOSTS, strict=True)
    ]
    async with members(*settings, resolver=dns) as group:
        expected = {"alpha": f"{HOSTS[0]}:{port}", "beta": f"{HOSTS[1]}:{port}"}
        expected["gamma"] = f"{HOSTS[2]}:{port}"
        for member in group:
            assert member.settings.members == expected  # real ids, not IPs
            assert sorted([*member.node.peers, member.node.id]) == sorted(expected)
        backend = await leader_backend(group)
        await backend.set("k", b"v1")
        assert await backend.get("k") == b"v1"

        # A fourth address appears: every member warns once, nobody changes its voters.
        caplog.set_level(logging.WARNING, logger="dref_raft.member.discovery")
        polls = [m.poller.polls for m in group if m.poller is not None]
        dns.records["dref.test"] = [*HOSTS, "127.0.0.4"]
        await wait_until(
            lambda: all(
                m.poller is not None and m.poller.polls >= p + 4
                for m, p in zip(group, polls, strict=True)
            ),
            20.0,
            "four more polls on every member",
        )
        warnings = [
            r.getMessage() for r in caplog.records if "appeared: 127.0.0.4" in r.getMessage()
        ]
        assert len(warnings) == 3, warnings  # once per member, not once per poll
        assert all("discovery does not change the voters" in w for w in warnings)
        for member in group:
            assert member.settings.members == expected
            assert sorted(member.node.peers) == sorted(set(expected) - {member.node.id})
        await backend.set("k", b"v2")  # the quorum is still 2 of the same 3
        assert await backend.get("k") == b"v2"

        caplog.clear()
        dns.records["dref.test"] = list(HOSTS)
        await wait_until(
            lambda: sum("disappeared: 127.0.0.4" in r.getMessage() for r in caplog.records) == 3,
            20.0,
            "a warning that 127.0.0.4 disappeared on every member",
        )
        await backend.aclose()
    for member in group:
        assert member.poller is not None
        assert not member.poller.running  # cancelled when the member stopped


async def test_a_real_resolution_of_localhost(port: int) -> None:
    found = await AddressSource(RaftSettings(node_services="localhost", expected_size=1)).find()
    assert "127.0.0.1" in found
    assert found == await resolve_name("localhost")
    # One member per address localhost resolves to (here typically just 127.0.0.1).
    settings = [
        RaftSettings(
            node_id=f"n{i}",
            host=address,
            port=port,
            node_services="localhost",
            expected_size=len(found),
            **FAST,  # type: ignore[arg-type]
        )
        for i, address in enumerate(found)
    ]
    async with members(*settings) as group:
        assert set(group[0].settings.members) == {s.node_id for s in settings}
        backend = await leader_backend(group)
        await backend.set("k", b"local")
        assert await backend.get("k") == b"local"
        await backend.aclose()


# -- refusals --------------------------------------------------------------------------------------
async def test_a_member_gives_up_when_only_two_of_three_addresses_answer(port: int) -> None:
    settings = [
        RaftSettings(
            node_id=name,
            host=host,
            port=port,
            node_addresses=",".join(HOSTS),
            expected_size=3,
            discovery_timeout=1.5,
        )
        for name, host in zip(["a", "b"], HOSTS[:2], strict=True)
    ]
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(
        *(local_members.acquire(s) for s in settings), return_exceptions=True
    )
    assert loop.time() - started >= 1.5
    for result in results:
        assert isinstance(result, BackendUnavailableError), result
        text = str(result)
        assert "3 members (expected_size) not identified" in text
        assert "discovery_timeout 1.5 s" in text
        assert f"{HOSTS[0]}:{port} (" in text
        assert f"{HOSTS[1]}:{port} (" in text
        assert f"{HOSTS[2]}:{port} (no answer" in text  # the one that never answered
    assert f"{HOSTS[1]}:{port} (b)" in str(results[0])  # a identified b by its real id
    # The discovering nodes' servers are gone: the port is free again.
    for host in HOSTS[:2]:
        with socket.socket() as probe:
            probe.bind((host, port))


async def test_two_members_with_one_node_id_are_refused(port: int) -> None:
    settings = [
        RaftSettings(
            node_id="same",
            host=host,
            port=port,
            node_addresses=",".join(HOSTS[:2]),
            expected_size=2,
            **{**FAST, "discovery_timeout": 3.0},  # type: ignore[arg-type]
        )
        for host in HOSTS[:2]
    ]
    results = await asyncio.gather(
        *(local_members.acquire(s) for s in settings), return_exceptions=True
    )
    # The first to identify the other refuses and stops answering, so the other may instead
    # run out of time waiting for an answer: both fail, at least one naming the duplicate.
    refused = [r for r in results if isinstance(r, ConfigurationError)]
    assert refused, results
    for result in refused:
        assert "node id 'same' answers at" in str(result)
        assert "give every member its own node_id (DREF_RAFT_NODE_ID)" in str(result)
    for result in results:
        assert isinstance(result, ConfigurationError | BackendUnavailableError), result


async def test_more_addresses_than_expected_is_an_error_not_a_guess(port: int) -> None:
    dns = FakeDns({"dref.test": list(HOSTS)})
    settings = RaftSettings(
        node_id="a", host=HOSTS[0], port=port, node_services="dref.test", expected_size=2, **FAST
    )  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError) as caught:
        await local_members.acquire(settings, resolver=dns)
    text = str(caught.value)
    assert "found 3 addresses, more than expected_size (DREF_RAFT_EXPECTED_SIZE) 2" in text
    assert f"{HOSTS[0]}:{port} (this node, a)" in text


async def test_no_own_address_among_the_discovered_ones_is_a_configuration_error() -> None:
    dns = FakeDns({"dref.test": ["127.0.0.1", "127.0.0.2"]})  # loopback: never picked as own
    settings = RaftSettings(node_services="dref.test", expected_size=2, discovery_timeout=0.3)
    with pytest.raises(ConfigurationError, match="none of the addresses found"):
        await local_members.acquire(settings, resolver=dns)


# -- a real 3-process cluster --------------------------------------------------------------------
@pytest.fixture
def discovered_procs(port: int) -> Iterator[list[NodeProcess]]:
    nodes = [
        NodeProcess(
            name,
            port,
            [],
            capture_stderr=True,
            env={
                "DREF_NODE_ADDRESSES": ", ".join(HOSTS),
                "DREF_PORT": str(port),
                "DREF_RAFT_EXPECTED_SIZE": "3",
                "DREF_RAFT_HOST": host,
                "DREF_RAFT_NODE_ID": name,
                "DREF_RAFT_DISCOVERY_TIMEOUT": "30",
            },
        )
        for name, host in zip(["red", "green", "blue"], HOSTS, strict=True)
    ]
    try:
        for node in nodes:  # all at once: each waits for the others to answer
            node.launch()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


async def test_three_processes_discover_each_other_elect_and_serve(
    port: int, discovered_procs: list[NodeProcess]
) -> None:
    lines = await asyncio.gather(*(asyncio.to_thread(n.wait_serving) for n in discovered_procs))
    for line, host in zip(lines, HOSTS, strict=True):
        assert f"serving {host}:{port}" in line
    names = ["red", "green", "blue"]
    for host, name in zip(HOSTS, names, strict=True):
        voters = await identify(f"{host}:{port}", 5.0)  # GetEndpoints
        assert voters[-1] == name  # the responder's id last
        assert sorted(voters) == sorted(names)  # its voters: real ids, fixed at bootstrap
    endpoints = ",".join(f"{n}={h}:{port}" for n, h in zip(names, HOSTS, strict=True))
    deadline = time.monotonic() + 30
    async with dref.connect("raft", mode="client", endpoints=endpoints, op_timeout=20) as ctx:
        backend = ctx.backend
        await backend.set("k", b"discovered")
        assert await backend.get("k") == b"discovered"
    assert time.monotonic() < deadline


# -- command line ---------------------------------------------------------------------------------
def test_dref_raft_node_discovers_from_flags(port: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DREF_")}
    flags = ["--node-id", "solo", "--host", "127.0.0.2", "--port", str(port)]
    flags += ["--node-addresses", "127.0.0.2", "--expected-size", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dref.cli", "raft", "node", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert f"dref-raft node solo serving 127.0.0.2:{port}" in proc.stdout.readline()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_dref_raft_node_refuses_discovery_without_expected_size() -> None:
    result = CliRunner().invoke(main, ["raft", "node", "--node-addresses", "10.0.0.1,10.0.0.2"])
    assert result.exit_code == 2
    assert "needs expected_size (DREF_RAFT_EXPECTED_SIZE)" in result.output
