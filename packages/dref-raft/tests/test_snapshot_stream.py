"""Snapshots streamed in chunks over `DRefSnapshot` (docs/raft-wire.md#snapshot-streaming): a
3-member cluster in this process over real gRPC, a follower restarted behind a compacted log,
faults injected into the leader's stream (dropped, corrupted chunk, corrupted file); the
snapshot a member holds in its file instead of memory while it takes or receives the next one
(docs/raft.md#large-state)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import sys
import time
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import pytest
from cluster_procs import free_ports, wait_until

from dref_raft.commands import DeleteElement, SetElement
from dref_raft.core import InstallSnapshot
from dref_raft.errors import TransportError
from dref_raft.fsm import (
    ClusterSnapshot,
    NamesCopy,
    PackedEntries,
    SnapshotEntry,
    StateCopy,
    StateMachine,
)
from dref_raft.install_difference import SnapshotDifference
from dref_raft.member.node import RaftNode
from dref_raft.member.registry import Member, local_members
from dref_raft.member.snapshot_transfer import SnapshotTransfer
from dref_raft.settings import RaftSettings
from dref_raft.storage import SnapshotStore
from dref_raft.storage.snapshot import FileEntries, decode_snapshot_file
from dref_raft.storage.snapshot_files import CHUNK_SIZE, IncomingSnapshot
from dref_raft.wire.commands import EntrySink
from dref_raft.wire.snapshot_messages import SnapshotChunk, SnapshotHeader

pytestmark = pytest.mark.timeout(60)

VALUES = {f"big{i}": bytes([i]) * 400_000 for i in range(8)}  # 3.2 MB: 4 chunks


def _settings(tmp_path: Path, ports: list[int], i: int) -> RaftSettings:
    endpoints = ",".join(f"s{j}=127.0.0.1:{p}" for j, p in enumerate(ports))
    return RaftSettings(
        node_id=f"s{i}",
        port=ports[i],
        endpoints=endpoints,
        storage_dir=tmp_path / f"s{i}",
        snapshot_every=4,
    )


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[list[RaftSettings], list[Member]]]:
    ports = free_ports(3)
    settings = [_settings(tmp_path, ports, i) for i in range(3)]
    members = [await local_members.acquire(s) for s in settings]
    try:
        for member in members:
            assert await member.node.wait_for_leader(10) is not None
        yield settings, members
    finally:
        for member in members:
            if member.refs > 0:
                await local_members.release(member)


async def _restart_behind_a_snapshot(
    settings: list[RaftSettings],
    members: list[Member],
    hook: _Faulty,
    deleted: tuple[str, ...] = (),
) -> tuple[Member, Member]:
    """Stop a follower, delete `deleted`, write VALUES (the leader compacts past it), install
    `hook` on the leader's stream, restart the follower and wait until it holds every value."""
    leader = next(m for m in members if m.node.is_leader)
    index = next(i for i, m in enumerate(members) if m is not leader)
    await local_members.release(members[index])
    for name in deleted:
        await leader.node.propose(DeleteElement(name), 10)
    for name, value in VALUES.items():
        await leader.node.propose(SetElement(name, value, None), 10)
    await wait_until(lambda: leader.node.core.log.base_seq > 0, 10, "the leader to compact")
    hook.follower_dir = settings[index].storage_dir
    leader.node.snapshots.on_chunk = hook
    follower = await local_members.acquire(settings[index])
    members[index] = follower
    target = leader.node.applied
    await wait_until(
        lambda: follower.node.applied >= target, 30, "the follower to install the snapshot"
    )
    for name, value in VALUES.items():
        assert follower.node.get_local(name) == value
    # The received file became its `state-snapshot` (renamed, not encoded again); no leftovers.
    directory = settings[index].storage_dir
    assert directory is not None
    await wait_until(
        lambda: not (directory / "state-snapshot.part").exists(), 10, "the part file to go"
    )
    assert not (directory / "state-snapshot.part-header").exists()
    saved = await asyncio.to_thread(SnapshotStore(directory).load)
    assert saved is not None
    assert saved.last_seq >= 8
    assert len(saved.entries) >= 6  # the state at its seq; the later values came as entries
    assert all(VALUES[e.key] == e.value for e in saved.entries if not e.key.startswith("a"))
    return leader, follower


class _Faulty:
    """Records where each stream started; corrupts the first attempt with `fault`."""

    def __init__(self, fault: str) -> None:
        self.fault = fault
        self.starts: list[int] = []
        self.follower_dir: Path | None = None

    async def __call__(self, chunk: SnapshotChunk) -> SnapshotChunk:
        if chunk.header is not None:
            self.starts.append(chunk.offset)
        if self.fault == "none" or len(self.starts) > 1 or chunk.offset != CHUNK_SIZE:
            return chunk
        broken = bytes([chunk.data[0] ^ 0xFF]) + chunk.data[1:]
        if self.fault == "drop":  # once the follower wrote the first chunk
            assert self.follower_dir is not None
            part = self.follower_dir / "state-snapshot.part"
            await wait_until(
                lambda: part.exists() and part.stat().st_size >= CHUNK_SIZE, 10, "chunk 0 held"
            )
            raise TransportError("injected: connection dropped")
        if self.fault == "crc":  # damaged in transit: the CRC no longer matches
            return dataclasses.replace(chunk, data=broken)
        return SnapshotChunk.of(chunk.offset, broken, chunk.header)  # damaged at the source


async def test_a_restarted_follower_gets_the_snapshot_streamed_in_chunks(
    cluster: tuple[list[RaftSettings], list[Member]],
) -> None:
    settings, members = cluster
    hook = _Faulty("none")
    leader, _ = await _restart_behind_a_snapshot(settings, members, hook)
    assert hook.starts == [0]
    assert leader.node.snapshots.transfers_done == 1
    # The leader streamed the `state-snapshot` file it had saved, not a new encoding of it.
    assert leader.node.snapshots.encoded_for_sending == 0


async def test_a_dropped_stream_resumes_from_the_offset_the_follower_holds(
    cluster: tuple[list[RaftSettings], list[Member]],
) -> None:
    settings, members = cluster
    hook = _Faulty("drop")
    await _restart_behind_a_snapshot(settings, members, hook)
    assert hook.starts[0] == 0
    assert hook.starts[1] == CHUNK_SIZE, "the second attempt resumes after the chunk held"


async def test_a_corrupt_chunk_is_refused_and_the_transfer_resumes_before_it(
    cluster: tuple[list[RaftSettings], list[Member]], caplog: pytest.LogCaptureFixture
) -> None:
    settings, members = cluster
    hook = _Faulty("crc")
    with caplog.at_level(logging.WARNING, "dref_raft"):
        await _restart_behind_a_snapshot(settings, members, hook)
    assert hook.starts[:2] == [0, CHUNK_SIZE]
    assert "fails its CRC-32 check" in caplog.text


async def test_a_file_failing_its_sha256_is_discarded_and_sent_again_whole(
    cluster: tuple[list[RaftSettings], list[Member]], caplog: pytest.LogCaptureFixture
) -> None:
    settings, members = cluster
    hook = _Faulty("sha")
    with caplog.at_level(logging.WARNING, "dref_raft"):
        await _restart_behind_a_snapshot(settings, members, hook)
    assert hook.starts[:2] == [0, 0]
    assert "SHA-256 of the received" in caplog.text


async def test_a_save_during_writes_holds_the_state_at_exactly_its_seq(
    cluster: tuple[list[RaftSettings], list[Member]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `DRefSnapshot/Save` (`dref raft snapshot save`) has the driver copy the state a slice at
    # a time, the event loop running in between (2 elements a slice here, and a pause after
    # the first for up to 0.1 s, until 2 more writes were answered — none can be while the
    # driver copies): the file holds exactly the writes through the seq it names.
    _, members = cluster
    sliced = StateMachine.copy_state_in_slices
    seqs: dict[str, int] = {}

    def copy_with_a_pause(machine: StateMachine, size: int = 2) -> Generator[None, None, StateCopy]:
        steps = sliced(machine, size)
        next(steps)
        seen, deadline = len(seqs), time.monotonic() + 0.1
        while len(seqs) < seen + 2 and time.monotonic() < deadline:
            yield
        return (yield from steps)

    monkeypatch.setattr(StateMachine, "copy_state_in_slices", copy_with_a_pause)
    leader = next(m for m in members if m.node.is_leader)
    await asyncio.gather(
        *(leader.node.propose(SetElement(f"pre{i}", b"x", None), 10) for i in range(40))
    )
    saved_all = False

    async def write() -> None:
        for i in range(100):
            if saved_all:
                return
            name = f"w{i:03d}"
            seqs[name], _ = await leader.node.propose(SetElement(name, b"v", None), 10)

    writer = asyncio.create_task(write())
    await wait_until(lambda: len(seqs) >= 5, 10, "the writes to start")
    chunks = [chunk async for chunk in leader.node.snapshots.save()]
    saved_all = True
    await writer
    header = chunks[0].header
    assert header is not None
    saved = decode_snapshot_file(b"".join(chunk.data for chunk in chunks), "saved")
    assert saved.last_seq == header.last_seq
    written = {e.key for e in saved.entries if e.key.startswith("w")}
    assert written == {name for name, seq in seqs.items() if seq <= saved.last_seq}
    assert len(written) >= 5
    assert {e.key for e in saved.entries if e.key.startswith("pre")} == {
        f"pre{i}" for i in range(40)
    }


def _held_files(directory: Path | None) -> list[Path]:
    assert directory is not None
    return sorted(directory.glob("state-snapshot.held-*"))


def _packed(node: RaftNode) -> PackedEntries | None:
    entries = node.core.log.snapshot.data.entries
    return entries if isinstance(entries, PackedEntries) and len(entries) > 0 else None


async def _emptied_follower(
    settings: list[RaftSettings], members: list[Member]
) -> tuple[Member, int, Path]:
    """Stop a follower and empty its storage directory, then write until the leader compacted
    past it (it will rejoin as a new member); the leader, its index and directory."""
    leader = next(m for m in members if m.node.is_leader)
    index = next(i for i, m in enumerate(members) if m is not leader)
    directory = settings[index].storage_dir
    assert directory is not None
    await local_members.release(members[index])
    shutil.rmtree(directory)
    for i in range(12):
        await leader.node.propose(SetElement(f"a{i}", b"x%d" % i, None), 10)
    await wait_until(lambda: leader.node.core.log.base_seq > 0, 10, "the leader to compact")
    return leader, index, directory


async def _compacted_everywhere(members: list[Member]) -> Member:
    """Write 8 elements `a0`… and wait until every member applied them and took a snapshot;
    the leader."""
    leader = next(m for m in members if m.node.is_leader)
    for i in range(8):
        await leader.node.propose(SetElement(f"a{i}", b"x", None), 10)
    target = leader.node.applied
    await wait_until(
        lambda: all(_held(m.node) is not None and m.node.applied >= target for m in members),
        10,
        "every member to apply the writes and compact",
    )
    return leader


def _held(node: RaftNode) -> FileEntries | None:
    """The core's snapshot, if it compacted (a snapshot it took is held in its file)."""
    entries = node.core.log.snapshot.data.entries
    return entries if isinstance(entries, FileEntries) and len(entries) > 0 else None


async def test_a_snapshot_a_member_takes_is_written_to_a_held_file_never_kept_in_memory(
    cluster: tuple[list[RaftSettings], list[Member]],
) -> None:
    # The snapshot is written straight from the copy of the state into a file of its own,
    # hard-linked as the saved `state-snapshot`: the core holds it as `FileEntries`; when the
    # next one replaces it, its file goes.
    settings, members = cluster
    index, leader = next((i, m) for i, m in enumerate(members) if m.node.is_leader)
    node, directory = leader.node, settings[index].storage_dir
    assert directory is not None
    for i in range(6):
        await node.propose(SetElement(f"a{i}", b"x", None), 10)
    await wait_until(lambda: _held(node) is not None, 10, "the leader to compact")
    first = _held(node)
    assert first is not None
    assert _held_files(directory) == [first.path]
    saved = await asyncio.to_thread(SnapshotStore(directory).load)
    assert saved is not None
    assert saved.last_seq == node.core.log.snapshot.seq
    assert first.path.read_bytes() == (directory / "state-snapshot").read_bytes()
    assert await asyncio.to_thread(list, first) == list(saved.entries)
    assert [e.key for e in saved.entries] == [f"a{i}" for i in range(len(saved.entries))]
    for i in range(6):
        await node.propose(SetElement(f"b{i}", b"y", None), 10)
    await wait_until(lambda: _held(node) is not first, 10, "the next compaction")
    await wait_until(
        lambda: _held_files(directory) == [getattr(_held(node), "path", None)],
        10,
        "the first file to go",
    )
    assert not first.path.exists()


async def test_a_member_boots_with_its_snapshot_held_in_its_file(
    cluster: tuple[list[RaftSettings], list[Member]],
) -> None:
    # Booting, a member fills its state from its `state-snapshot` file and keeps the snapshot
    # in that file (hard-linked, `FileEntries`), never its entries in memory; held files a
    # crash left are removed first; the next snapshot replaces the boot link.
    settings, members = cluster
    leader = await _compacted_everywhere(members)
    index = next(i for i, m in enumerate(members) if m is not leader)
    directory = settings[index].storage_dir
    assert directory is not None
    await local_members.release(members[index])
    (directory / "state-snapshot.held-1-1").write_bytes(b"left by a crash")
    saved = await asyncio.to_thread(SnapshotStore(directory).load)
    assert saved is not None
    assert len(saved.entries) > 0
    members[index] = await local_members.acquire(settings[index])
    node = members[index].node
    booted = _held(node)
    assert booted is not None
    assert _held_files(directory) == [booted.path] == [directory / "state-snapshot.held-boot"]
    assert await asyncio.to_thread(list, booted) == list(saved.entries)
    values = node.machine.values()
    assert all(values[e.key] == e.value for e in saved.entries)
    for i in range(6):
        await leader.node.propose(SetElement(f"b{i}", b"y", None), 10)
    await wait_until(lambda: _held(node) is not booted, 10, "the next compaction")
    await wait_until(
        lambda: _held_files(directory) == [getattr(_held(node), "path", None)],
        10,
        "the boot link to go",
    )


async def test_a_snapshot_in_memory_is_held_in_its_file_before_the_next_is_taken(
    cluster: tuple[list[RaftSettings], list[Member]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A snapshot decoded whole (here forced; a snapshot whose names are not in order, from an
    # upstream node, is) is in memory; the driver copies its state for the next snapshot only
    # once that one is held as `FileEntries` over a hard link of the saved file (the same
    # entries) and its tuples are freed.
    settings, members = cluster
    leader, index, directory = await _emptied_follower(settings, members)

    async def not_into_file(self: SnapshotTransfer, header: SnapshotHeader) -> None:
        return None

    monkeypatch.setattr(SnapshotTransfer, "_decode_into_file", not_into_file)
    members[index] = await local_members.acquire(settings[index])
    node = members[index].node
    await wait_until(lambda: _packed(node) is not None, 10, "the snapshot installed")
    first = _packed(node)
    assert first is not None
    first_seq = node.core.log.snapshot.seq
    expected = list(first)
    chunk = first.names.chunks[0]
    del first
    seen: list[tuple[int, object, list[Path], list[SnapshotEntry] | None]] = []
    copy = node._copy_names

    async def recording() -> NamesCopy:
        held = node.core.log.snapshot
        entries = held.data.entries
        read = await asyncio.to_thread(list, entries) if isinstance(entries, FileEntries) else None
        seen.append((held.seq, entries, _held_files(directory), read))
        # Before the copy is taken: nothing holds the replaced tuples but this test.
        await wait_until(lambda: sys.getrefcount(chunk) == 2, 10, "the tuples to be freed")
        return await copy()

    monkeypatch.setattr(node, "_copy_names", recording)
    for i in range(6):
        await leader.node.propose(SetElement(f"b{i}", b"y", None), 10)
    await wait_until(lambda: node.core.log.snapshot.seq > first_seq, 10, "the next compaction")
    seq, entries, files, read = seen[0]
    assert seq == first_seq
    assert isinstance(entries, FileEntries)
    assert files == [entries.path]
    assert read == expected
    # The link goes with the held snapshot.
    await wait_until(
        lambda: _held_files(directory) == [getattr(_held(node), "path", None)],
        10,
        "the held file to be replaced",
    )


async def test_a_new_member_decodes_its_first_snapshot_straight_into_its_state(
    cluster: tuple[list[RaftSettings], list[Member]],
) -> None:
    # A member that joins empty fills its state as the received snapshot is decoded, and holds
    # the snapshot in its file: never its entries in memory.
    settings, members = cluster
    leader, index, _ = await _emptied_follower(settings, members)
    members[index] = await local_members.acquire(settings[index])
    node = members[index].node
    target = leader.node.applied
    await wait_until(lambda: node.applied >= target, 10, "the new member to catch up")
    held = _held(node)
    assert held is not None
    assert held.path.name.startswith(f"state-snapshot.held-{node.core.log.snapshot.seq}-")
    assert dict(node.machine.values()) == dict(leader.node.machine.values())
    assert all(node.machine.values()[e.key] == e.value for e in await asyncio.to_thread(list, held))


async def test_a_held_snapshot_newer_saves_replaced_is_streamed_from_its_file(
    cluster: tuple[list[RaftSettings], list[Member]],
) -> None:
    # A transfer of the held snapshot once the saved file holds another one: the held file is
    # streamed as it is (linked), never decoded and encoded again.
    _, members = cluster
    node = next(m for m in members if m.node.is_leader).node
    for i in range(6):
        await node.propose(SetElement(f"a{i}", b"x", None), 10)
    await wait_until(lambda: _held(node) is not None, 10, "the leader to compact")
    held = node.core.log.snapshot
    assert isinstance(held.data.entries, FileEntries)
    # Another term: the saved file does not hold that snapshot.
    msg = InstallSnapshot(node.id, "s9", node.term, held.data, held.seq, True, held.term + 7)
    spooled = await node.snapshots._spool(msg)
    assert spooled.path.read_bytes() == held.data.entries.path.read_bytes()
    assert node.snapshots.encoded_for_sending == 0


async def test_a_restarted_follower_decodes_a_snapshot_against_its_state(
    cluster: tuple[list[RaftSettings], list[Member]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A follower restarted on its own snapshot gets a newer one: it compares the entries with
    # its state as they are decoded, keeping only the differences (never the new snapshot's
    # entries in memory), while its own snapshot is held in its file; once installed, the new
    # snapshot is held in its file too (a hard link of the received one), the old link gone.
    settings, members = cluster
    await _compacted_everywhere(members)
    decoding: list[tuple[list[Path], object, ClusterSnapshot]] = []
    load = IncomingSnapshot.load

    def recording(
        incoming: IncomingSnapshot,
        header: SnapshotHeader,
        reuse: object = None,
        reuse_names: PackedEntries | None = None,
        state: dict[str, bytes] | None = None,
        *,
        sink: EntrySink | None = None,
    ) -> ClusterSnapshot:
        files = _held_files(incoming.directory)
        snapshot = load(incoming, header, reuse, reuse_names, state, sink=sink)  # type: ignore[arg-type]
        decoding.append((files, sink, snapshot))
        return snapshot

    monkeypatch.setattr(IncomingSnapshot, "load", recording)
    _, follower = await _restart_behind_a_snapshot(settings, members, _Faulty("none"))
    files, sink, decoded = decoding[-1]
    # Nothing removed: no second pass (a decode is repeated if the follower applied entries
    # meanwhile).
    assert all(isinstance(d[1], SnapshotDifference) for d in decoding)
    # Its own snapshot held in its file (the one it booted from), and the received one's link.
    names = {path.name for path in files}
    received = {n for n in names if n.startswith(f"state-snapshot.held-{decoded.last_seq}-")}
    assert len(received) == 1
    assert names - received  # its own
    assert isinstance(sink, SnapshotDifference)
    assert sink.changed
    assert set(sink.changed) <= set(VALUES)
    held = follower.node.core.log.snapshot.data
    assert isinstance(held.entries, FileEntries)
    assert held.entries is not decoded.entries  # linked to its held name, not the part file
    assert _held_files(follower.node.snapshots.directory) == [held.entries.path]
    entries = await asyncio.to_thread(list, held.entries)
    values = follower.node.machine.values()
    assert len(entries) == len(held.entries) >= 8
    assert all(values[e.key] == e.value for e in entries)  # later writes: other names


@pytest.mark.parametrize("stale", [1, 3])
async def test_a_difference_made_stale_by_applies_is_decoded_again_then_whole(
    cluster: tuple[list[RaftSettings], list[Member]], monkeypatch: pytest.MonkeyPatch, stale: int
) -> None:
    # The follower applied entries while it decoded (here: the first `stale` decodes come back
    # prepared at an older version): the difference is decoded again, at most three times,
    # then the snapshot is decoded whole; either way the follower ends up holding every value.
    settings, members = cluster
    await _compacted_everywhere(members)
    calls: list[int] = []
    whole: list[bool] = []
    decode = SnapshotTransfer._decode_in_worker
    load = IncomingSnapshot.load

    def staled(self: SnapshotTransfer, *args: Any) -> Any:
        got = decode(self, *args)
        calls.append(1)
        if len(calls) <= stale and isinstance(got, tuple):
            snapshot, prepared, decoded = got
            return snapshot, dataclasses.replace(prepared, version=prepared.version - 1), decoded
        return got

    def recording(
        incoming: IncomingSnapshot, header: SnapshotHeader, *args: object, **kwargs: object
    ) -> ClusterSnapshot:
        whole.append(kwargs.get("sink") is None)
        return load(incoming, header, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SnapshotTransfer, "_decode_in_worker", staled)
    monkeypatch.setattr(IncomingSnapshot, "load", recording)
    _, follower = await _restart_behind_a_snapshot(settings, members, _Faulty("none"))
    assert len(calls) == min(stale + 1, 3)
    assert whole[-1] == (stale >= 3)  # decoded whole after three stale differences
    held = follower.node.core.log.snapshot.data.entries
    assert isinstance(held, PackedEntries if stale >= 3 else FileEntries)


async def test_a_restarted_follower_drops_the_names_deleted_while_it_was_down(
    cluster: tuple[list[RaftSettings], list[Member]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fewer of the snapshot's names are held than the follower holds: a second pass over the
    # received file finds the deleted ones, and the install removes them.
    settings, members = cluster
    await _compacted_everywhere(members)
    passes: list[object] = []
    load = IncomingSnapshot.load

    def recording(
        incoming: IncomingSnapshot, header: SnapshotHeader, *args: object, **kwargs: object
    ) -> ClusterSnapshot:
        passes.append(kwargs.get("sink"))
        return load(incoming, header, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(IncomingSnapshot, "load", recording)
    _, follower = await _restart_behind_a_snapshot(
        settings, members, _Faulty("none"), deleted=("a1", "a3")
    )
    # The difference, then the names it lacks (both again if it applied entries meanwhile).
    kinds = [type(sink).__name__ for sink in passes]
    assert kinds[-2:] == ["SnapshotDifference", "AbsentNames"]
    values = follower.node.machine.values()
    assert "a1" not in values
    assert "a3" not in values
    assert {f"a{i}" for i in (0, 2, 4, 5, 6, 7)} <= set(values)


async def test_a_snapshot_being_streamed_is_held_by_its_file_alone(
    cluster: tuple[list[RaftSettings], list[Member]],
) -> None:
    # While the leader streams its snapshot, nothing but the file holds it: its core holds it
    # as `FileEntries`, and the saved file is streamed as it is (nothing encoded to send it).
    settings, members = cluster
    leader = next(m for m in members if m.node.is_leader)
    held: list[bool] = []

    class _Check(_Faulty):
        async def __call__(self, chunk: SnapshotChunk) -> SnapshotChunk:
            if chunk.header is not None and not held:
                held.append(_held(leader.node) is not None)
            return chunk

    await _restart_behind_a_snapshot(settings, members, _Check("none"))
    assert held == [True]
    assert leader.node.snapshots.encoded_for_sending == 0
