"""TLS, mutual TLS, bearer tokens and limits (docs/security.md), on real gRPC servers and a real
3-process TLS cluster. Certificates are made at run time (`certs.py`), nothing is committed."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from certs import Authority
from cluster_procs import ProcCluster, free_ports
from pydantic import ValidationError
from test_cli_raft import DREF, Lines, running
from test_transport_grpc import Client, Consensus, Watch

import dref
from dref_raft.commands import WatchEvent
from dref_raft.core.messages import Vote, VoteResponse
from dref_raft.errors import AccessDeniedError, LimitExceededError, TransportError
from dref_raft.settings import RaftSettings
from dref_raft.transport import GrpcServer, LeaderClient, PeerClients, WatchClient
from dref_raft.transport.security import PLAINTEXT, TransportSecurity, load_security

pytestmark = pytest.mark.timeout(120)

TOKEN = "s3cret-token-0123456789"


@dataclass
class Pki:
    """Files of a cluster CA, member/client certificates it signed, and an unrelated CA's."""

    dir: Path
    ca: Path
    other_ca: Path
    token: Path

    def pair(self, stem: str) -> tuple[Path, Path]:
        return self.dir / f"{stem}.crt", self.dir / f"{stem}.key"

    def member(self, stem: str = "n1", **extra: Any) -> TransportSecurity:
        cert, key = self.pair(stem)
        return load_security(cert_file=cert, key_file=key, ca_file=self.ca, **extra)

    def client(self, stem: str | None = None, *, token: str | None = None) -> TransportSecurity:
        cert, key = self.pair(stem) if stem is not None else (None, None)
        token_file = None
        if token is not None:
            token_file = self.dir / f"token-{len(token)}"
            token_file.write_text(token + "\n")
        return load_security(
            cert_file=cert, key_file=key, ca_file=self.ca, token_file=token_file, member=False
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, other = Authority("dref test cluster CA"), Authority("some other CA")
    for stem in ("n1", "n2", "n3", "client"):
        ca.issue(stem).write(directory, stem)
    other.issue("intruder").write(directory, "intruder")
    ca.issue("misnamed", names=("elsewhere.example",)).write(directory, "misnamed")
    token = directory / "token"
    token.write_text(TOKEN + "\n")
    return Pki(directory, ca.write(directory), other.write(directory, "other-ca"), token)


def vote() -> Vote:
    return Vote("n2", "n1", 3, 10, True, 2)


@pytest.fixture
async def token_member(pki: Pki) -> AsyncIterator[GrpcServer]:
    """A TLS member requiring client certificates on its port, and a bearer token on its client
    port (client_auth = 'token')."""
    security = pki.member(client_auth="token", token_file=pki.token)
    server = GrpcServer(
        "n1", Consensus(), Client(), Watch(), port=0, security=security, client_port=0
    )
    async with server:
        yield server


def client_address(server: GrpcServer) -> str:
    return f"127.0.0.1:{server.client_port}"


# -- the member port: mutual TLS -------------------------------------------------------------------
async def test_member_accepts_a_peer_signed_by_the_cluster_ca(
    token_member: GrpcServer, pki: Pki
) -> None:
    async with PeerClients(security=pki.member("n2")) as peers:
        answer = await peers.call(token_member.address, vote(), timeout=30)
    assert isinstance(answer, VoteResponse)
    assert answer.granted


async def test_member_refuses_a_peer_certificate_from_another_ca(
    token_member: GrpcServer, pki: Pki
) -> None:
    cert, key = pki.pair("intruder")
    intruder = load_security(cert_file=cert, key_file=key, ca_file=pki.ca)
    async with PeerClients(security=intruder) as peers:
        with pytest.raises(TransportError) as refused:
            await peers.call(token_member.address, vote(), timeout=30)
    assert "the member refused the connection: TLS handshake failed" in str(refused.value)
    assert "not signed by the cluster CA" in str(refused.value)


async def test_member_refuses_plaintext_on_its_tls_port(token_member: GrpcServer) -> None:
    async with PeerClients(security=PLAINTEXT) as peers:
        with pytest.raises(TransportError, match="a TLS member"):
            await peers.call(token_member.address, vote(), timeout=30)


async def test_tls_client_to_a_plaintext_member_is_explained(pki: Pki) -> None:
    async with (
        GrpcServer("n1", Consensus(), Client(), port=0) as plain,
        LeaderClient(plain.address, timeout=30, security=pki.client("client")) as client,
    ):
        with pytest.raises(TransportError, match="does not speak TLS"):
            await client.get_endpoints()


async def test_client_checks_the_member_certificate_against_the_cluster_ca(pki: Pki) -> None:
    cert, key = pki.pair("intruder")
    rogue = load_security(cert_file=cert, key_file=key, ca_file=pki.other_ca)
    async with (
        GrpcServer("n9", Consensus(), Client(), port=0, security=rogue) as server,
        LeaderClient(server.address, timeout=30, security=pki.client("client")) as client,
    ):
        with pytest.raises(TransportError, match="certificate is not signed by the cluster CA"):
            await client.get_endpoints()


async def test_client_checks_that_the_member_certificate_names_the_address(pki: Pki) -> None:
    async with (
        GrpcServer("n9", Consensus(), Client(), port=0, security=pki.member("misnamed")) as server,
        LeaderClient(server.address, timeout=30, security=pki.client("client")) as client,
    ):
        with pytest.raises(TransportError, match="does not name the address dialed"):
            await client.get_endpoints()


async def test_member_port_serves_clients_with_a_ca_signed_certificate(
    token_member: GrpcServer, pki: Pki
) -> None:
    security = pki.client("client")
    async with LeaderClient(token_member.address, timeout=30, security=security) as client:
        await client.set_element("k", b"v")  # no token needed: the certificate identifies it
        assert await client.get_element("k") == b"v"
    async with WatchClient(token_member.address, security=security) as watcher:
        first = await anext(aiter(watcher.watch(["k"], 0)))
    assert first.resync


async def test_a_client_without_certificate_cannot_use_the_member_port(
    token_member: GrpcServer, pki: Pki
) -> None:
    security = pki.client(token=TOKEN)
    async with LeaderClient(token_member.address, timeout=30, security=security) as client:
        with pytest.raises(TransportError, match="the member refused the connection"):
            await client.get_endpoints()


# -- the client port: bearer tokens ----------------------------------------------------------------
async def test_client_port_serves_a_client_with_the_token(
    token_member: GrpcServer, pki: Pki
) -> None:
    security = pki.client(token=TOKEN)
    async with LeaderClient(client_address(token_member), timeout=30, security=security) as client:
        await client.set_element("k", b"v")
        assert await client.get_element("k") == b"v"
    async with WatchClient(client_address(token_member), security=security) as watcher:
        first = await anext(aiter(watcher.watch(["k"], 0)))
    assert first.resync


async def test_client_port_refuses_a_missing_or_wrong_token_without_showing_it(
    token_member: GrpcServer, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    address = client_address(token_member)
    async with LeaderClient(address, timeout=30, security=pki.client()) as client:
        with pytest.raises(AccessDeniedError, match="no bearer token was sent"):
            await client.get_element("k")
    wrong = TOKEN[:-1] + "X"
    async with LeaderClient(address, timeout=30, security=pki.client(token=wrong)) as client:
        with pytest.raises(AccessDeniedError, match="the bearer token was refused") as refused:
            await client.set_element("k", b"v")
    assert "client_auth = 'token'" in str(refused.value)
    shown = [str(refused.value), repr(refused.value), caplog.text]
    shown += [
        repr(pki.client(token=wrong)),
        repr(pki.member(client_auth="token", token_file=pki.token)),
    ]
    assert not any(wrong in text or TOKEN in text for text in shown)
    assert "io.github.tobia80.DRefRaft/SetElement" in caplog.text


async def test_a_token_client_cannot_call_consensus(token_member: GrpcServer, pki: Pki) -> None:
    async with PeerClients(security=pki.client(token=TOKEN)) as peers:
        with pytest.raises(TransportError) as refused:
            await peers.call(client_address(token_member), vote(), timeout=30)
    assert "PERMISSION_DENIED" in str(refused.value)
    assert "member-to-member traffic" in str(refused.value)


async def test_drefpeer_needs_a_member_certificate_as_consensus_does(pki: Pki) -> None:
    security = pki.member(client_auth="token", token_file=pki.token)
    async with GrpcServer(
        "n1", Consensus(), Client(), port=0, security=security, client_port=0, stream_window=8
    ) as server:
        async with PeerClients(security=pki.client(token=TOKEN), stream_window=8) as peers:
            with pytest.raises(TransportError, match="PERMISSION_DENIED"):
                await peers.call(client_address(server), vote(), timeout=30)
        async with PeerClients(security=pki.member("n2"), stream_window=8) as peers:
            assert (await peers.call(server.address, vote(), timeout=30)).term >= 0
            ((session, _),) = peers._sessions.values()
            assert session.calls_sent == 1  # the member's call went over DRefPeer


async def test_client_auth_none_serves_clients_but_never_consensus(pki: Pki) -> None:
    security = pki.member(client_auth="none")
    async with GrpcServer(
        "n1", Consensus(), Client(), port=0, security=security, client_port=0
    ) as s:
        address = client_address(s)
        async with LeaderClient(address, timeout=30, security=pki.client()) as client:
            await client.set_element("k", b"v")
        async with PeerClients(security=pki.client()) as peers:
            with pytest.raises(TransportError, match="PERMISSION_DENIED"):
                await peers.call(address, vote(), timeout=30)


# -- plaintext -------------------------------------------------------------------------------------
async def test_plaintext_member_beyond_loopback_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="dref_raft.transport")
    async with GrpcServer("n1", Consensus(), Client(), host="127.0.0.1", port=0):
        pass
    assert not [r for r in caplog.records if "PLAINTEXT" in r.getMessage()]
    (port,) = free_ports(1)
    for _ in range(2):  # a discovering node binds its address twice: still one warning
        async with GrpcServer("n1", Consensus(), Client(), host="0.0.0.0", port=port):
            pass
    warnings = [r for r in caplog.records if "PLAINTEXT" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert f"0.0.0.0:{port}" in warnings[0].getMessage()
    assert "tls_cert_file" in warnings[0].getMessage()


# -- settings --------------------------------------------------------------------------------------
def test_settings_name_what_is_missing_or_wrong(pki: Pki, tmp_path: Path) -> None:
    cert, key = pki.pair("n1")

    def error(**options: Any) -> str:
        with pytest.raises(ValidationError) as raised:
            RaftSettings(**options)
        return str(raised.value)

    assert "tls_ca_file missing" in error(tls_cert_file=cert, tls_key_file=key)
    assert "set together" in error(tls_cert_file=cert, tls_ca_file=pki.ca)
    assert "needs TLS" in error(client_auth="mtls")
    tls = {"tls_cert_file": cert, "tls_key_file": key, "tls_ca_file": pki.ca}
    assert "needs auth_token_file" in error(**tls, client_auth="token", client_port=9000)
    assert "needs client_port" in error(**tls, client_auth="token", auth_token_file=pki.token)
    assert "client_port is only for" in error(**tls, client_port=9000)
    assert "needs tls_ca_file" in error(mode="client", auth_token_file=pki.token)
    assert f"tls_cert_file {key}" in error(**{**tls, "tls_cert_file": key})
    missing = tmp_path / "nope.pem"
    assert f"tls_ca_file {missing}" in error(**{**tls, "tls_ca_file": missing})
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    assert "holds no token" in error(mode="client", tls_ca_file=pki.ca, auth_token_file=empty)
    assert "must stay below max_message_bytes" in error(max_value_bytes=16 * 1024 * 1024)
    settings = RaftSettings(**tls)
    assert settings.client_auth == "mtls"
    assert settings.security.tls


def test_settings_read_the_environment(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = pki.pair("n1")
    monkeypatch.setenv("DREF_RAFT_TLS_CERT_FILE", str(cert))
    monkeypatch.setenv("DREF_RAFT_TLS_KEY_FILE", str(key))
    monkeypatch.setenv("DREF_RAFT_TLS_CA_FILE", str(pki.ca))
    monkeypatch.setenv("DREF_RAFT_CLIENT_AUTH", "token")
    monkeypatch.setenv("DREF_RAFT_AUTH_TOKEN_FILE", str(pki.token))
    monkeypatch.setenv("DREF_RAFT_CLIENT_PORT", "9001")
    monkeypatch.setenv("DREF_RAFT_MAX_VALUE_BYTES", "1000")
    settings = RaftSettings()
    security = settings.security
    assert security.tls
    assert security.client_auth == "token"
    assert settings.client_port == 9001
    assert security.expected_token is not None
    assert security.expected_token.matches(TOKEN)
    assert settings.max_value_bytes == 1000
    assert TOKEN not in repr(settings) + repr(security)


# -- a TLS cluster of real processes ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_cluster(pki: Pki) -> Iterator[tuple[ProcCluster, str]]:
    """3 TLS member processes: mTLS between them, a bearer token on their client ports;
    small limits. Yields the cluster and the client ports' endpoints."""
    cluster = ProcCluster(
        3,
        node_args=(
            *("--tls-ca-file", str(pki.ca), "--client-auth", "token"),
            *("--auth-token-file", str(pki.token), "--max-value-bytes", "1000"),
            *("--max-name-bytes", "100", "--max-message-bytes", "100000"),
        ),
    )
    client_ports = free_ports(3)
    for index, (node, port) in enumerate(zip(cluster.nodes, client_ports, strict=True)):
        cert, key = pki.pair(f"n{index + 1}")
        node.args += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
        node.args += ["--client-port", str(port)]
    endpoints = ",".join(
        f"{node_id}=127.0.0.1:{port}"
        for node_id, port in zip(cluster.ids, client_ports, strict=True)
    )
    with cluster.running():
        yield cluster, endpoints


async def test_tls_cluster_serves_token_and_certificate_clients(
    tls_cluster: tuple[ProcCluster, str], pki: Pki
) -> None:
    cluster, token_endpoints = tls_cluster
    token_client = {
        "mode": "client",
        "endpoints": token_endpoints,
        "tls_ca_file": pki.ca,
        "auth_token_file": pki.token,
        "op_timeout": 20,
    }
    async with dref.connect("raft", **token_client) as ctx:  # elects a leader, over mTLS
        ref = ctx.ref("greeting", type=str)
        await ref.set("hello")
        assert await ref.get() == "hello"
    cert, key = pki.pair("client")
    cert_client = {
        "mode": "client",
        "endpoints": cluster.endpoints,  # the member ports
        "tls_ca_file": pki.ca,
        "tls_cert_file": cert,
        "tls_key_file": key,
    }
    async with dref.connect("raft", **cert_client) as ctx:
        assert await ctx.ref("greeting", type=str).get() == "hello"


async def test_tls_cluster_refuses_oversized_input_and_keeps_working(
    tls_cluster: tuple[ProcCluster, str], pki: Pki
) -> None:
    _, endpoints = tls_cluster
    options = {
        "mode": "client",
        "endpoints": endpoints,
        "tls_ca_file": pki.ca,
        "auth_token_file": pki.token,
        "op_timeout": 20,
    }
    async with dref.connect("raft", **options) as ctx:
        backend = ctx.backend
        with pytest.raises(LimitExceededError, match=r"max_value_bytes \(1000\)"):
            await backend.set("big", b"x" * 1001)
        with pytest.raises(LimitExceededError, match=r"max_name_bytes \(100\)"):
            await backend.set("n" * 101, b"x")
        with pytest.raises(LimitExceededError, match=r"larger than max.*max_message_bytes"):
            await backend.set("huge", b"x" * 200_000)  # above max_message_bytes
        await backend.set("small", b"x" * 1000)  # the member keeps working
        assert await backend.get("small") == b"x" * 1000


async def test_tls_cluster_refuses_a_wrong_token_at_once(
    tls_cluster: tuple[ProcCluster, str], pki: Pki, tmp_path: Path
) -> None:
    _, endpoints = tls_cluster
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token")
    options = {
        "mode": "client",
        "endpoints": endpoints,
        "tls_ca_file": pki.ca,
        "auth_token_file": wrong,
    }
    async with dref.connect("raft", **options) as ctx:
        with pytest.raises(AccessDeniedError, match="bearer token was refused"):
            await ctx.backend.get("greeting")


async def test_tls_cluster_refuses_a_client_certificate_from_another_ca(
    tls_cluster: tuple[ProcCluster, str], pki: Pki
) -> None:
    cluster, _ = tls_cluster
    cert, key = pki.pair("intruder")
    options = {
        "mode": "client",
        "endpoints": cluster.endpoints,
        "tls_ca_file": pki.ca,
        "tls_cert_file": cert,
        "tls_key_file": key,
        "op_timeout": 15,
    }
    async with dref.connect("raft", **options) as ctx:
        with pytest.raises(TransportError) as refused:
            await ctx.backend.get("greeting")
    message = str(refused.value)
    assert "the member refused the connection: TLS handshake failed" in message
    assert "certificate not signed by the cluster CA" in message


def test_raft_cluster_command_runs_a_tls_cluster(pki: Pki) -> None:
    cert, key = pki.pair("n1")  # every local member uses it: it names 127.0.0.1
    tls = ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-file", str(pki.ca)]
    with running([*DREF, "raft", "cluster", "--nodes", "3", *tls]) as proc:
        lines = Lines(proc)
        lines.until(lambda line: "│ leader " in line, 60)  # elected over mutual TLS
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0


class Held:
    """A watch handler whose streams stay open (after one event) until `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def watch(self, names: list[str], from_seq: int) -> AsyncIterator[WatchEvent]:
        yield WatchEvent(names[0], b"v", 1, resync=True)
        await self.release.wait()


async def test_streams_above_max_concurrent_streams_wait_for_a_free_one() -> None:
    held = Held()
    security = TransportSecurity(max_concurrent_streams=1)
    async with (
        GrpcServer("n1", Consensus(), Client(), held, port=0, security=security) as server,
        WatchClient(server.address) as client,
    ):
        first = aiter(client.watch(["a"], 0))
        assert (await anext(first)).name == "a"  # open: holds the connection's only stream
        later = aiter(client.watch(["b"], 0))
        second = asyncio.ensure_future(anext(later))
        done, _ = await asyncio.wait({second}, timeout=0.5)
        assert not done  # queued by the client, not served
        held.release.set()  # the first stream ends: the second gets its turn
        async with asyncio.timeout(30):
            assert (await second).name == "b"
        for stream in (first, later):
            await stream.aclose()  # type: ignore[attr-defined]
