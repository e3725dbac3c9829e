"""A snapshot install reports every changed element at one seq; `DRefWatch` takes them as one
batch: the ring keeps only its `history`, a watcher of every name lags (and resumes with a
resync) instead of buffering a million events, a watcher of a few names gets exactly those."""

from __future__ import annotations

import asyncio
import random

import pytest

from dref_raft.commands import SetElement, WatchEvent
from dref_raft.core import Snapshot
from dref_raft.errors import WatchLaggedError
from dref_raft.fsm import Changed, ClusterSnapshot
from dref_raft.member.node import NodeConfig, RaftNode
from dref_raft.member.watch_service import WatchService
from dref_raft.transport import MemoryNetwork


async def test_a_large_install_reaches_watchers_as_one_bounded_batch() -> None:
    node = RaftNode(NodeConfig("n", {}), MemoryNetwork().peer_clients("n"))
    service = WatchService(node, history=8, buffer=4)
    everything = service.watch([], 0)
    few = service.watch(["k00003", "k50000", "missing"], 0)
    first_of_everything = asyncio.ensure_future(anext(everything))
    resync = [await anext(few) for _ in range(3)]  # the current values (none yet)
    assert [(e.name, e.value, e.resync) for e in resync] == [
        ("k00003", None, True),
        ("k50000", None, True),
        ("missing", None, True),
    ]
    await asyncio.sleep(0)  # both watchers are registered now

    changes = tuple(Changed(f"k{i:05d}", b"v%d" % i) for i in range(60_000))
    node.snapshot_installed(Snapshot(100, 2, ClusterSnapshot()), changes)

    assert [e.name for e in service._ring] == [f"k{i:05d}" for i in range(59_992, 60_000)]
    assert service._floor == 101  # no resume from inside the batch
    assert [await anext(few) for _ in range(2)] == [
        WatchEvent("k00003", b"v3", 100),
        WatchEvent("k50000", b"v50000", 100),
    ]
    assert (await first_of_everything).name == "k00000"
    with pytest.raises(WatchLaggedError):  # its buffer (4) overflowed: it resumes, resyncs
        async for _ in everything:
            pass
    await few.aclose()
    await node.aclose()


async def test_a_watch_of_every_name_resyncs_the_whole_state_sorted_at_the_applied_seq() -> None:
    node = RaftNode(NodeConfig("n", {}), MemoryNetwork().peer_clients("n"))
    service = WatchService(node)
    names = [f"k{i:05d}" for i in range(20_000)]
    random.Random(3).shuffle(names)
    for name in names:
        node.machine.apply(SetElement(name, name.encode(), None))
    everything = service.watch([], 0)
    first = [await anext(everything) for _ in range(20_000)]
    assert [e.name for e in first] == sorted(names)
    assert all(e.value == e.name.encode() and e.resync and e.seq == node.applied for e in first)
    await everything.aclose()
    await node.aclose()
