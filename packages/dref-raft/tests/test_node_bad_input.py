"""Bad input at the node level: raw `DRefConsensus` requests over gRPC to a real member of a
3-member cluster (two `python -m dref_raft` processes, the leader among them, and a follower
member in this process, so that its state and its log can be read directly).

Each request is refused — a stale term with the node's term, an undecodable request with
`INVALID_ARGUMENT` and a logged reason naming the method and what was wrong, an oversized one
by gRPC with `RESOURCE_EXHAUSTED` — and leaves the node untouched: term, vote, leader, log,
commit, applied state machine and what it knows of its peers. The node keeps serving: a write
made afterwards is applied on it. (Requests from a non-member are not covered here.)
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
from cluster_procs import ProcCluster, follower_member, wait_until
from raft_helpers import varint
from upstream_double import kv, set_element

import dref
from dref_raft._pb import dref_consensus_pb2 as cpb
from dref_raft.core.progress import PeerKind
from dref_raft.core.types import Role
from dref_raft.fsm import ClusterSnapshot
from dref_raft.member.registry import Member
from dref_raft.wire import messages
from dref_raft.wire.messages import DEFAULT_MAX_MESSAGE_BYTES

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio(loop_scope="module")]

# Generous timings: no election may happen between the two state reads of a test, even on a
# loaded machine (an election would change the term without any bad input).
TIMINGS: dict[str, Any] = {"heartbeat_interval": 0.1, "election_timeout": 2.0}
NODE_ARGS = ("--heartbeat-interval", "0.1", "--election-timeout", "2.0")

# Method → (request class, response class, the response's yes/no field).
METHODS: dict[str, tuple[Any, Any, str]] = {
    "AppendEntries": (cpb.AppendEntriesRequest, cpb.AppendEntriesResponse, "success"),
    "Heartbeat": (cpb.HeartbeatRequest, cpb.HeartbeatResponse, "acknowledged"),
    "ReadIndex": (cpb.ReadIndexRequest, cpb.ReadIndexResponse, "granted"),
    "RequestVote": (cpb.VoteRequest, cpb.VoteResponse, "granted"),
    "RequestPreVote": (cpb.PreVoteRequest, cpb.PreVoteResponse, "granted"),
    "InstallSnapshot": (cpb.InstallSnapshotRequest, cpb.InstallSnapshotResponse, "success"),
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[ProcCluster]:
    with ProcCluster(2, extra=1, node_args=NODE_ARGS).running() as procs:
        yield procs


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def member(cluster: ProcCluster) -> AsyncIterator[Member]:
    async with follower_member(cluster, **TIMINGS) as held:
        yield held


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def channel(member: Member) -> AsyncIterator[grpc.aio.Channel]:
    """A raw channel to the member; it may send more than the member accepts."""
    async with grpc.aio.insecure_channel(
        member.settings.address, options=[("grpc.max_send_message_length", -1)]
    ) as raw:
        yield raw


@dataclass(frozen=True)
class NodeState:
    term: int
    vote: str | None
    leader_id: str | None
    role: Role
    last_seq: int
    last_term: int
    commit: int
    applied: int
    machine: ClusterSnapshot
    peer_kinds: dict[str, PeerKind]


def state_of(member: Member) -> NodeState:
    core = member.node.core
    return NodeState(
        core.term,
        core.vote,
        core.leader_id,
        core.role,
        core.log.last_seq,
        core.log.last_term,
        core.commit,
        core.applied,
        member.node.machine.snapshot(),
        dict(core.peer_kinds),
    )


async def settled(member: Member) -> NodeState:
    """The member's state once it is a follower of a leader whose entries it holds, has
    committed and has applied (nothing changes then while nobody writes)."""
    node, core = member.node, member.node.core

    def idle() -> bool:
        return (
            core.leader_id not in (None, node.id)
            and core.log.last_term == core.term
            and core.applied == core.commit == core.log.last_seq
        )

    await wait_until(idle, 20, "a follower with all of its leader's entries applied")
    return state_of(member)


async def call(channel: grpc.aio.Channel, method: str, data: bytes) -> bytes:
    rpc = channel.unary_unary(messages.method_path(messages.CONSENSUS_SERVICE, method))
    answer = await rpc(data, timeout=10)
    assert isinstance(answer, bytes)
    return answer


async def assert_serving(cluster: ProcCluster, member: Member) -> None:
    """A write through a context on the member commits and is applied on the member."""
    name, value = f"bad-input:{uuid.uuid4().hex}", b"still serving"
    async with dref.connect("raft", **cluster.member_options(0), **TIMINGS) as ctx:
        await ctx.backend.set(name, value)
        assert await ctx.backend.get(name) == value
    await wait_until(lambda: member.node.get_local(name) == value, 10, "the write applied here")


def request(method: str, state: NodeState, sender: str, term: int, dref_format: bool) -> Any:
    """A `method` request from `sender` at `term` that, at a current term, would change the
    node: a new entry, a vote for a longer log, a commit, a snapshot replacing its state."""
    pb_class = METHODS[method][0]
    seq, far = state.last_seq + 1, state.last_seq + 100
    command = set_element("injected", b"bad")
    ext: dict[str, Any] = {"dref_ext": True} if dref_format else {}
    match method:
        case "AppendEntries":
            if dref_format:
                ext |= {
                    "prev_seq": state.last_seq,
                    "prev_term": state.last_term,
                    "entries": [cpb.DrefEntry(seq=seq, term=term, command=command)],
                }
            return pb_class(
                leader_id=sender, term=term, command=command, seq=seq, commit_seq=seq, **ext
            )
        case "Heartbeat":
            return pb_class(leader_id=sender, term=term, commit_seq=far, **ext)
        case "ReadIndex":
            ext |= {"read_ctx": 7} if dref_format else {}
            return pb_class(leader_id=sender, term=term, **ext)
        case "RequestVote" | "RequestPreVote":
            ext |= {"last_term": term + 100} if dref_format else {}
            return pb_class(candidate_id=sender, term=term, last_seq=far, **ext)
        case _:
            ext |= {"last_term": term} if dref_format else {}
            snapshot = cpb.ClusterSnapshot(entries=[kv("injected", b"bad")], last_seq=far)
            return pb_class(leader_id=sender, term=term, snapshot=snapshot, last_seq=far, **ext)


def other_peer(state: NodeState, member: Member) -> str:
    """A process member that is not the leader (it never sends to this follower)."""
    return next(p for p in sorted(member.node.peers) if p != state.leader_id)


# ---------------------------------------------------------------------------- stale terms


@pytest.mark.parametrize("method", list(METHODS))
async def test_a_stale_term_is_refused_with_the_nodes_term(
    cluster: ProcCluster, member: Member, channel: grpc.aio.Channel, method: str
) -> None:
    """A delayed request of the leader from an older term (dref's format)."""
    before = await settled(member)
    assert before.term >= 1
    assert before.leader_id is not None
    stale = request(method, before, before.leader_id, before.term - 1, dref_format=True)
    _, response_class, flag = METHODS[method]
    answer = response_class.FromString(await call(channel, method, stale.SerializeToString()))
    assert (getattr(answer, flag), answer.term) == (False, before.term)
    assert state_of(member) == before
    await assert_serving(cluster, member)


async def test_a_stale_term_in_upstreams_format_is_refused_and_changes_nothing(
    cluster: ProcCluster, member: Member, channel: grpc.aio.Channel
) -> None:
    """Requests from an older term without the dref extension fields, as upstream sends them,
    from the process member that is not the leader (it sends nothing else to this follower, so
    a wrongly learned peer kind would still show)."""
    before = await settled(member)
    sender = other_peer(before, member)
    for method in METHODS:
        stale = request(method, before, sender, before.term - 1, dref_format=False)
        _, response_class, flag = METHODS[method]
        answer = response_class.FromString(await call(channel, method, stale.SerializeToString()))
        assert (getattr(answer, flag), answer.term) == (False, before.term), method
    assert state_of(member) == before
    await assert_serving(cluster, member)


# ---------------------------------------------------------------------------- undecodable


def field(number: int, wire_type: int, payload: bytes = b"") -> bytes:
    """One protobuf field: its key and, for wire type 2, the length-prefixed payload."""
    key = varint(number << 3 | wire_type)
    return key + (varint(len(payload)) + payload if wire_type == 2 else payload)


def current(method: str, state: NodeState, stale: bool = False, **changes: Any) -> bytes:
    """A request of the leader at the current term (`stale`: the one before) in dref's format,
    with `changes` applied."""
    assert state.leader_id is not None
    term = state.term - 1 if stale else state.term
    msg = request(method, state, state.leader_id, term, dref_format=True)
    for name, value in changes.items():
        if value is None:
            msg.ClearField(name)
        elif name == "entries":
            del msg.entries[:]
            msg.entries.extend(value)
        else:
            setattr(msg, name, value)
    data: bytes = msg.SerializeToString()
    return data


def snapshot_with(state: NodeState, snapshot: bytes) -> bytes:
    """An InstallSnapshot of the leader whose `snapshot` field holds `snapshot` bytes."""
    return current("InstallSnapshot", state, snapshot=None) + field(3, 2, snapshot)


VARINT_1 = b"\x01"
TRUNCATED = b"\x0a\x05ab"  # field 1, 5 bytes long, and only 2 follow
BAD_UTF8 = b"\xff\xfe"
# (case, method, request bytes from the node's state, what the logged reason says)
UNDECODABLE: list[tuple[str, str, Any, str]] = [
    *[
        (f"truncated-{m}", m, lambda s, m=m: current(m, s) + TRUNCATED, "malformed")
        for m in METHODS
    ],
    *[
        (f"term-wire-type-{m}", m, lambda s, m=m: current(m, s) + field(2, 2, b"\x07"), "term")
        for m in METHODS
    ],
    ("command-not-a-StateCommand", "AppendEntries",
     lambda s: current("AppendEntries", s, command=b"\xff\xff", entries=[]), "malformed command"),
    ("entries-not-consecutive", "AppendEntries",
     lambda s: current("AppendEntries", s, entries=[
         cpb.DrefEntry(seq=s.last_seq + 1, term=s.term, command=set_element("injected", b"bad")),
         cpb.DrefEntry(seq=s.last_seq + 3, term=s.term, command=set_element("x", b"y")),
     ]), "consecutive"),
    ("first-entry-differs", "AppendEntries",
     lambda s: current("AppendEntries", s, entries=[
         cpb.DrefEntry(seq=s.last_seq + 1, term=s.term, command=set_element("x", b"y")),
     ]), "entries[0]"),
    ("snapshot-garbage", "InstallSnapshot", lambda s: snapshot_with(s, b"\xff\xff\xff"),
     "malformed"),
    ("snapshot-key-not-utf8", "InstallSnapshot",
     lambda s: snapshot_with(s, field(1, 2, field(1, 2, BAD_UTF8))), "UTF-8"),
    ("snapshot-entries-wire-type", "InstallSnapshot",
     lambda s: snapshot_with(s, field(1, 0, VARINT_1)), "entries"),
    ("snapshot-value-wire-type", "InstallSnapshot",
     lambda s: snapshot_with(s, field(1, 2, field(1, 2, b"k") + field(2, 0, VARINT_1))),
     "value"),
    ("snapshot-field-wire-type", "InstallSnapshot",
     lambda s: current("InstallSnapshot", s, snapshot=None) + field(3, 0, VARINT_1), "snapshot"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "build", "reason"),
    [case[1:] for case in UNDECODABLE],
    ids=[case[0] for case in UNDECODABLE],
)
async def test_an_undecodable_request_is_rejected_logged_and_changes_nothing(
    cluster: ProcCluster,
    member: Member,
    channel: grpc.aio.Channel,
    caplog: pytest.LogCaptureFixture,
    method: str,
    build: Any,
    reason: str,
) -> None:
    """The leader's request at the current term would be applied; corrupted, it is refused."""
    caplog.set_level(logging.WARNING, "dref_raft.transport")
    before = await settled(member)
    with pytest.raises(grpc.aio.AioRpcError) as raw:
        await call(channel, method, build(before))
    assert raw.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (raw.value.details() or "").startswith("undecodable request: ")
    assert reason in (raw.value.details() or "")
    logged = [r.getMessage() for r in caplog.records if r.name == "dref_raft.transport"]
    assert any(f"DRefConsensus/{method} " in m and reason in m for m in logged), logged
    assert state_of(member) == before
    await assert_serving(cluster, member)


async def test_a_command_with_a_misplaced_field_is_rejected(
    member: Member, channel: grpc.aio.Channel
) -> None:
    """At a stale term, so that the node refuses it either way and its state stays intact."""
    before = await settled(member)
    # StateCommand.set_element (1) whose SetElementCommand.name (1) is a varint.
    command = field(1, 2, field(1, 0, VARINT_1) + field(2, 2, b"v"))
    data = current("AppendEntries", before, stale=True, command=command, entries=None)
    with pytest.raises(grpc.aio.AioRpcError) as raw:
        await call(channel, "AppendEntries", data)
    assert raw.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "field set_element.name (number 1) has wire type 0" in (raw.value.details() or "")
    assert state_of(member) == before


@pytest.mark.parametrize("method", list(METHODS))
async def test_an_oversized_request_is_refused_by_grpc_and_changes_nothing(
    cluster: ProcCluster, member: Member, channel: grpc.aio.Channel, method: str
) -> None:
    """Above the member's limit (16 MiB) gRPC refuses the request before it is decoded (so
    the reason goes to the sender, not to the member's log)."""
    before = await settled(member)
    padding = field(999, 2, bytes(DEFAULT_MAX_MESSAGE_BYTES))  # an unknown field, skipped
    with pytest.raises(grpc.aio.AioRpcError) as raw:
        await call(channel, method, current(method, before) + padding)
    assert raw.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(DEFAULT_MAX_MESSAGE_BYTES) in (raw.value.details() or "")
    assert state_of(member) == before
    await assert_serving(cluster, member)
