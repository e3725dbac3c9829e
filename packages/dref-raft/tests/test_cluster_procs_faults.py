"""Faults on real multi-process clusters (`python -m dref_raft` over gRPC on 127.0.0.1).

What is real: every node here is its own process except, where a test needs a dref context
(locks and fences), one member running in the test process; histories are recorded
by clients that talk upstream's `DRefRaft` to the process members (`LeaderClient`), routed by
`NotLeaderError` hints, and checked with `dref_compat.check_linearizable`.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_procs import ProcCluster

import dref
from dref.errors import NoLeaderError, NotLeaderError
from dref_compat import HistoryRecorder, check_linearizable
from dref_raft.transport import LeaderClient

pytestmark = pytest.mark.timeout(120)

DEFINITE = (NotLeaderError, NoLeaderError)  # refused, or replaced: certainly not applied


class Router:
    """A DRefRaft client of the process members that follows NotLeader hints."""

    def __init__(self, cluster: ProcCluster, op_timeout: float = 1.0) -> None:
        self.clients = {
            n.node_id: LeaderClient(n.address, target_id=n.node_id) for n in cluster.nodes
        }
        self.order = itertools.cycle(sorted(self.clients))
        self.leader: str | None = None
        self.op_timeout = op_timeout

    async def leader_of(self, timeout: float) -> str:
        """The id a GetElement succeeds on (the leader), trying members in turn."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            target = self.leader or next(self.order)
            try:
                await self.clients[target].get_element("probe", timeout=0.5)
                self.leader = target
                return target
            except NotLeaderError as exc:
                self.leader = exc.leader_id if exc.leader_id in self.clients else None
            except Exception:
                self.leader = None
            assert loop.time() < deadline, "no leader answered"
            await asyncio.sleep(0.02)

    async def set(self, name: str, value: bytes) -> None:
        await self._client().set_element(name, value, timeout=self.op_timeout)

    async def get(self, name: str) -> bytes | None:
        return await self._client().get_element(name, timeout=self.op_timeout)

    def _client(self) -> LeaderClient:
        return self.clients[self.leader or next(self.order)]

    def note(self, exc: BaseException) -> None:
        """Learn from a failed call: follow the hint, else forget the leader."""
        hint = exc.leader_id if isinstance(exc, NotLeaderError) else None
        self.leader = hint if hint in self.clients else None

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()


async def run_clients(
    router: Router, rec: HistoryRecorder, keys: list[str], ops: int, first_client: int
) -> None:
    """`ops` alternating writes/reads per key, each recorded; failures retried on a new client."""

    async def one(key: str, client: int) -> None:
        for i in range(ops):
            kind = "set" if i % 2 == 0 else "get"
            value = f"{client}-{i}".encode()
            try:
                async with rec.op(client, key, kind, value if kind == "set" else None,
                                  definite=DEFINITE) as op:  # fmt: skip
                    if kind == "set":
                        await router.set(key, value)
                    else:
                        op.output = await router.get(key)
            except Exception as exc:
                router.note(exc)
                client += 1000  # a fresh id after an unknown outcome
                await asyncio.sleep(0.02)  # back-off before the retry, bounded by `ops`

    await asyncio.gather(*(one(k, first_client + n) for n, k in enumerate(keys)))


def assert_linearizable(rec: HistoryRecorder) -> None:
    history = rec.history()
    assert sum(op.ret is not None for op in history) > 20, "too few completed operations"
    result = check_linearizable(history, timeout=30)
    assert result, result.explanation


# ---------------------------------------------------------------------------- SIGSTOP


@pytest.fixture
def three(tmp_path: Path) -> Iterator[ProcCluster]:
    with ProcCluster(3, storage=tmp_path).running() as cluster:
        yield cluster


async def test_sigstop_of_the_leader_elects_another_and_the_old_one_catches_up(
    three: ProcCluster,
) -> None:
    router = Router(three)
    rec = HistoryRecorder()
    keys = ["a", "b", "c"]
    try:
        old = await router.leader_of(20)
        await run_clients(router, rec, keys, 10, 0)
        victim = next(n for n in three.nodes if n.node_id == old)
        victim.signal(signal.SIGSTOP)
        try:
            router.leader = None
            new = await router.leader_of(20)
            assert new != old
            await run_clients(router, rec, keys, 16, 100)  # writes served while it is stopped
        finally:
            victim.signal(signal.SIGCONT)
        await run_clients(router, rec, keys, 10, 200)
        # the old leader steps down and catches up: it answers NotLeader and holds the data
        final = {k: await router.get(k) for k in keys}
        marker = b"after-resume"
        await router.set("marker", marker)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        old_client = router.clients[old]
        while True:
            try:
                await old_client.get_element("marker", timeout=0.5)
                leads_again = True
            except NotLeaderError:
                leads_again = False
            except Exception:
                leads_again = None
            if leads_again is False:
                break
            assert loop.time() < deadline, "the resumed node never answered as a follower"
            await asyncio.sleep(0.05)
        assert final
    finally:
        await router.aclose()
    assert_linearizable(rec)


# ---------------------------------------------------------------------------- restart


async def test_restart_of_every_node_keeps_values_and_fences_keep_growing(
    tmp_path: Path,
) -> None:
    cluster = ProcCluster(2, storage=tmp_path, extra=1)
    options = {**cluster.member_options(0), "storage_dir": str(tmp_path / "member")}
    with cluster.running():
        async with dref.connect("raft", **options) as ctx:
            backend = ctx.backend
            for i in range(20):
                await backend.set(f"k{i}", b"%d" % i)
            grant = await backend.try_lock("lock", b"t1", 30.0)
            assert grant is not None
            assert await backend.release_lock("lock", b"t1")
            fence = grant.fence
        cluster.stop()
        cluster.start()
        async with dref.connect("raft", **options) as ctx:
            backend = ctx.backend
            for i in range(20):
                assert await backend.get(f"k{i}") == b"%d" % i
            grant2 = await backend.try_lock("lock", b"t2", 30.0)
            assert grant2 is not None
            assert grant2.fence > fence


async def test_a_restarted_cluster_with_one_member_still_down_takes_exactly_once_writes(
    tmp_path: Path,
) -> None:
    """A voter that stays down after a whole-cluster restart (never heard from by the new
    leader) does not hold the dref-only commands of sessions and compares back."""
    cluster = ProcCluster(3, storage=tmp_path)
    options = {"mode": "client", "endpoints": cluster.endpoints, "op_timeout": 10.0}
    with cluster.running():
        async with dref.connect("raft", **options) as ctx:
            counter = ctx.ref("counter", type=int)
            await counter.set(1)
            assert ctx.backend.capabilities.exactly_once
    down, *up = cluster.nodes
    for node in up:
        node.start()
    try:
        async with dref.connect("raft", **options) as ctx:
            counter = ctx.ref("counter", type=int)
            assert await counter.update_and_get(lambda n: n + 1) == 2
            await counter.set(7)
            assert await counter.get() == 7
        # the member that was down catches up (the dref-only entries reach it once it
        # has advertised the extensions) and serves the same value as leader later
        down.start()
        async with dref.connect("raft", **options) as ctx:
            counter = ctx.ref("counter", type=int)
            assert await counter.update_and_get(lambda n: n + 1) == 8
    finally:
        cluster.stop()


# ---------------------------------------------------------------------------- 5 nodes


async def test_five_node_cluster_survives_a_kill_9_with_a_linearizable_history(
    tmp_path: Path,
) -> None:
    cluster = ProcCluster(5, storage=tmp_path)
    rec = HistoryRecorder()
    with cluster.running():
        routers = [Router(cluster) for _ in range(3)]
        try:
            for router in routers:
                await router.leader_of(20)
            keys = ["x", "y"]
            await asyncio.gather(
                *(run_clients(r, rec, keys, 8, 100 * n) for n, r in enumerate(routers))
            )
            victim = next(n for n in cluster.nodes if n.node_id == routers[0].leader)
            victim.kill()
            for router in routers:
                router.clients.pop(victim.node_id)
                router.order = itertools.cycle(sorted(router.clients))
                router.leader = None
            await asyncio.gather(
                *(run_clients(r, rec, keys, 8, 1000 + 100 * n) for n, r in enumerate(routers))
            )
            assert (await routers[0].leader_of(10)) != victim.node_id
        finally:
            for router in routers:
                await router.aclose()
    assert_linearizable(rec)
