"""The dref-only TCP channel (docs/raft-wire.md#tcp-channel) between a real grpc.aio server and
real clients on 127.0.0.1: sessions use it once announced, fall back to the gRPC stream when it
is off or unreachable, refuse what the gRPC port refuses, and close on a bad frame; and a real
multi-process cluster whose members use it."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from cluster_procs import ProcCluster, follower_member, wait_until
from pydantic import ValidationError
from test_security import TOKEN, Pki, pki, vote  # noqa: F401 (pki: fixture)
from test_transport_grpc import Client, Consensus

import dref
from dref_raft.errors import AccessDeniedError, LimitExceededError, RpcStatusError
from dref_raft.settings import RaftSettings
from dref_raft.transport import GrpcServer, LeaderClient, PeerClients
from dref_raft.transport.grpc_stream import StreamSession
from dref_raft.transport.security import PLAINTEXT, load_security
from dref_raft.transport.tcp_channel import (
    ChannelDialer,
    encode_hello,
    frame,
    read_frame,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def served() -> AsyncIterator[GrpcServer]:
    async with GrpcServer(
        "n1", Consensus(), Client(), port=0, stream_window=64, channel_port=0
    ) as server:
        yield server


def parts(leader: LeaderClient) -> tuple[StreamSession, ChannelDialer]:
    assert leader.session is not None
    assert leader.dialer is not None
    return leader.session, leader.dialer


def channel_of(server: GrpcServer) -> Any:
    assert server.channel is not None
    return server.channel


async def test_sessions_move_to_the_announced_channel(served: GrpcServer) -> None:
    async with LeaderClient(served.address, stream_window=64, channel=True) as leader:
        await asyncio.gather(*(leader.set_element(f"k{i}", b"%d" % i) for i in range(100)))
        values = await asyncio.gather(*(leader.get_element(f"k{i}") for i in range(100)))
        assert values == [b"%d" % i for i in range(100)]
        session, dialer = parts(leader)
        assert (dialer.opened, dialer.fallbacks) == (1, 0)
        assert channel_of(served).accepted["DRefStream"] == 1
        assert session.streams_opened == 1
        assert session.batches_sent < session.calls_sent / 4  # still batched
    async with PeerClients(stream_window=8, channel=True) as peers:
        assert (await peers.call(served.address, vote(), timeout=10)).term >= 0
        assert channel_of(served).accepted["DRefPeer"] == 1


async def test_a_broken_channel_is_redialed_without_the_grpc_stream(served: GrpcServer) -> None:
    async with LeaderClient(served.address, stream_window=64, channel=True) as leader:
        await leader.set_element("a", b"1")
        session, dialer = parts(leader)
        for task in list(channel_of(served)._connections):
            task.cancel()  # the member drops the connection
        await wait_until(lambda: not channel_of(served)._connections, 10, "the connection closed")
        stream = session._stream
        assert stream is not None
        await wait_until(lambda: stream.broken, 10, "the client to see the channel end")
        assert await leader.get_element("a") == b"1"
        assert dialer.opened == 2
        assert channel_of(served).accepted["DRefStream"] == 2
        assert session.streams_opened == 2


async def test_channel_off_on_either_side_means_the_grpc_stream() -> None:
    async with (
        GrpcServer("n1", Consensus(), Client(), port=0, stream_window=8) as plain,
        LeaderClient(plain.address, stream_window=8, channel=True) as leader,
    ):
        await leader.set_element("k", b"v")
        session, dialer = parts(leader)
        assert (dialer.opened, dialer.fallbacks, session.calls_sent) == (0, 0, 1)
    async with (
        GrpcServer("n1", Consensus(), Client(), port=0, stream_window=8, channel_port=0) as server,
        LeaderClient(server.address, stream_window=8) as leader,
    ):
        await leader.set_element("k", b"v")
        assert leader.session is not None
        assert leader.session.calls_sent == 1
        assert channel_of(server).accepted["DRefStream"] == 0


async def test_an_unreachable_channel_falls_back_to_grpc_logged_once(
    served: GrpcServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "dref_raft.transport")
    await channel_of(served).aclose()  # announced, but nothing listens any more
    async with LeaderClient(served.address, stream_window=8, channel=True) as leader:
        await leader.set_element("k", b"v")
        session, dialer = parts(leader)
        assert (dialer.opened, dialer.fallbacks) == (0, 1)
        await session.aclose()  # the next call opens a new stream: the channel is not redialed
        assert await leader.get_element("k") == b"v"
        assert (dialer.opened, dialer.fallbacks) == (0, 1)
    failures = [r for r in caplog.records if "channel to" in r.getMessage()]
    assert len(failures) == 1
    assert "using the gRPC stream" in failures[0].getMessage()


async def test_a_stale_announcement_is_refused_by_name(
    served: GrpcServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "dref_raft.transport")
    dialer = ChannelDialer(PLAINTEXT, "DRefStream", 1 << 20)
    assert await dialer.dial(served.address, f"{channel_of(served).port}/0123") is None
    assert "FAILED_PRECONDITION" in caplog.text
    assert "a restarted member?" in caplog.text


async def raw(server: GrpcServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plaintext connection to `server`'s channel that passed the handshake."""
    channel = channel_of(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", channel.port)
    writer.write(frame(encode_hello("DRefStream", channel.instance, None)))
    head = await reader.readexactly(4)
    await reader.readexactly(struct.unpack(">I", head)[0])
    return reader, writer


@pytest.mark.parametrize(
    ("sent", "code", "logged"),
    [
        (
            struct.pack(">I", (16 << 20) + 1),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "larger than max message size",
        ),
        (frame(b"\xff\xff\xff garbage"), grpc.StatusCode.INVALID_ARGUMENT, "malformed StreamCalls"),
    ],
)
async def test_an_oversized_or_malformed_frame_closes_the_connection(
    served: GrpcServer,
    caplog: pytest.LogCaptureFixture,
    sent: bytes,
    code: grpc.StatusCode,
    logged: str,
) -> None:
    caplog.set_level(logging.WARNING, "dref_raft.transport")
    reader, writer = await raw(served)
    writer.write(sent)
    async with asyncio.timeout(10):
        with pytest.raises(RpcStatusError) as ended:  # the closing status, then the end
            await read_frame(reader, 1 << 20)
        assert await reader.read() == b""
    writer.close()
    assert ended.value.code == code
    assert logged in ended.value.details
    assert "closing the channel connection from" in caplog.text
    assert logged in caplog.text
    async with LeaderClient(served.address, stream_window=8, channel=True) as leader:
        await leader.set_element("still", b"serving")


async def test_a_hello_that_is_not_one_closes_the_connection(
    served: GrpcServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "dref_raft.transport")
    reader, writer = await asyncio.open_connection("127.0.0.1", channel_of(served).port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    async with asyncio.timeout(10):
        answer = await reader.read()  # the closing status frame, then the end
    writer.close()
    assert b"larger than max message size" in answer
    assert "closing the channel connection" in caplog.text
    assert "larger than max message size" in caplog.text  # b"GET " read as a length


async def test_a_request_above_the_members_limit_fails_as_over_grpc() -> None:
    async with (
        GrpcServer(
            "n1",
            Consensus(),
            Client(),
            port=0,
            stream_window=8,
            channel_port=0,
            max_message_bytes=128 * 1024,
        ) as server,
        LeaderClient(server.address, stream_window=8, channel=True) as leader,
    ):
        await leader.set_element("small", b"x")
        with pytest.raises(LimitExceededError, match=r"larger than max.*max_message_bytes"):
            await leader.set_element("huge", b"x" * 200_000)
        await leader.set_element("small", b"y")  # a new channel
        assert parts(leader)[1].opened == 2


# -- security: the gRPC port's rules -----------------------------------------------------------
@pytest.fixture
async def tls_member(pki: Pki) -> AsyncIterator[GrpcServer]:  # noqa: F811
    security = pki.member(client_auth="token", token_file=pki.token)
    async with GrpcServer(
        "n1",
        Consensus(),
        Client(),
        port=0,
        security=security,
        client_port=0,
        stream_window=8,
        channel_port=0,
    ) as server:
        yield server


async def test_tls_channel_serves_token_clients_and_members(
    tls_member: GrpcServer,
    pki: Pki,  # noqa: F811
) -> None:
    address = f"127.0.0.1:{tls_member.client_port}"
    security = pki.client(token=TOKEN)
    async with LeaderClient(address, stream_window=8, channel=True, security=security) as leader:
        await leader.set_element("k", b"v")
        assert parts(leader)[1].opened == 1
    async with PeerClients(security=pki.member("n2"), stream_window=8, channel=True) as peers:
        assert (await peers.call(tls_member.address, vote(), timeout=10)).term >= 0
        assert peers.dialer is not None
        assert peers.dialer.opened == 1
    assert channel_of(tls_member).accepted == {"DRefStream": 1, "DRefPeer": 1}


async def test_tls_channel_refuses_what_the_grpc_port_refuses(
    tls_member: GrpcServer,
    pki: Pki,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    address = f"127.0.0.1:{tls_member.client_port}"
    channel = channel_of(tls_member)
    # no token: the gRPC port refuses the session (so no channel is learnt), the channel too
    async with LeaderClient(address, stream_window=8, channel=True, security=pki.client()) as c:
        with pytest.raises(AccessDeniedError, match="no bearer token was sent"):
            await c.set_element("k", b"v")
        assert parts(c)[1].opened == 0
    dialer = ChannelDialer(pki.client(), "DRefStream", 1 << 20)
    assert await dialer.dial(address, f"{channel.port}/{channel.instance}") is None
    assert "refused a DRefStream channel" in caplog.text
    assert "UNAUTHENTICATED" in caplog.text
    # a wrong token: refused, and never shown
    wrong = TOKEN[:-1] + "X"
    security = pki.client(token=wrong)
    dialer = ChannelDialer(security, "DRefStream", 1 << 20)
    assert await dialer.dial(address, f"{channel.port}/{channel.instance}") is None
    assert "the bearer token was refused" in caplog.text
    assert TOKEN not in caplog.text
    assert wrong not in caplog.text
    # consensus without a member certificate
    dialer = ChannelDialer(pki.client(token=TOKEN), "DRefPeer", 1 << 20)
    assert await dialer.dial(address, f"{channel.port}/{channel.instance}") is None
    assert "PERMISSION_DENIED: DRefPeer is member-to-member traffic" in caplog.text
    # a certificate from another CA: the TLS handshake fails
    intruder = pki.member("intruder")
    dialer = ChannelDialer(intruder, "DRefPeer", 1 << 20)
    assert await dialer.dial(address, f"{channel.port}/{channel.instance}") is None
    assert "its TLS refused this side's certificate?" in caplog.text
    # ... and the member says so too (the gRPC port's handshake is logged by gRPC itself)
    assert "refused a channel connection from ('127.0.0.1'" in caplog.text
    # a member certificate this side's CA did not sign
    rogue = load_security(ca_file=pki.other_ca, token_file=pki.token, member=False)
    dialer = ChannelDialer(rogue, "DRefStream", 1 << 20)
    assert await dialer.dial(address, f"{channel.port}/{channel.instance}") is None
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    # plaintext to the TLS channel
    dialer = ChannelDialer(PLAINTEXT, "DRefStream", 1 << 20)
    assert await dialer.dial(address, f"{channel.port}/{channel.instance}") is None
    assert "(a TLS member? this side is plaintext)" in caplog.text
    assert channel.accepted == {}
    refused = [
        r
        for r in caplog.records
        if "TLS handshake failed" in r.getMessage() and r.name == "dref_raft.transport"
    ]
    # Three handshakes failed (another CA's member, an unknown CA, plaintext): the first
    # at WARNING, the next ones from the same host within `RETRY` seconds at DEBUG.
    assert [r.levelno for r in refused] == [logging.WARNING, logging.DEBUG, logging.DEBUG]


# -- a real cluster ----------------------------------------------------------------------------
async def test_cluster_members_and_clients_use_the_channel() -> None:
    with ProcCluster(2, extra=1).running() as procs:
        async with (
            follower_member(procs) as member,
            dref.connect("raft", **procs.member_options(0)) as ctx,
        ):
            await asyncio.gather(*(ctx.backend.set(f"c:{i}", b"%d" % i) for i in range(100)))
            assert member.server is not None
            accepted = channel_of(member.server).accepted
            # the leader process replicates to this member over its channel
            assert accepted["DRefPeer"] >= 1
            leader = member.node.leader_id
            assert leader is not None
            client = member.leader_client(leader)
            assert isinstance(client, LeaderClient)
            # this member forwards to the leader process over the leader's channel
            assert parts(client)[1].opened >= 1
            assert parts(client)[0].calls_sent >= 100
            values = await asyncio.gather(*(ctx.backend.get(f"c:{i}") for i in range(100)))
            assert values == [b"%d" % i for i in range(100)]


async def test_cluster_members_without_the_channel_are_called_over_grpc() -> None:
    with ProcCluster(2, extra=1, node_args=("--no-channel",)).running() as procs:
        async with (
            follower_member(procs) as member,
            dref.connect("raft", **procs.member_options(0)) as ctx,
        ):
            await asyncio.gather(*(ctx.backend.set(f"g:{i}", b"%d" % i) for i in range(50)))
            values = await asyncio.gather(*(ctx.backend.get(f"g:{i}") for i in range(50)))
            assert values == [b"%d" % i for i in range(50)]
            leader = member.node.leader_id
            assert leader is not None
            client = member.leader_client(leader)
            assert isinstance(client, LeaderClient)
            session, dialer = parts(client)
            assert (dialer.opened, dialer.fallbacks) == (0, 0)  # nothing announced
            assert session.calls_sent >= 50  # the gRPC stream
            assert member.server is not None
            assert channel_of(member.server).accepted == {}  # the others do not dial


# -- settings ----------------------------------------------------------------------------------
def test_channel_settings_and_their_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints = "n2=127.0.0.1:7002,n3=127.0.0.1:7003"
    assert RaftSettings(node_id="n1", endpoints=endpoints).channel  # on by default, port 0
    with pytest.raises(ValidationError, match="channel_port 7001 is taken by port"):
        RaftSettings(node_id="n1", port=7001, endpoints=endpoints, channel_port=7001)
    monkeypatch.setenv("DREF_RAFT_CHANNEL", "false")
    monkeypatch.setenv("DREF_RAFT_CHANNEL_PORT", "7101")
    settings = RaftSettings(node_id="n1", endpoints=endpoints)
    assert (settings.channel, settings.channel_port) == (False, 7101)
