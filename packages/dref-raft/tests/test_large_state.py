"""Large state in one process (docs/raft.md#large-state): snapshots held as `PackedEntries`,
decoded from a file a block at a time with exactly the result of one whole decode, values a
member already holds reused instead of duplicated, a replaced state freed a slice at a time off
the event loop, and event-loop stalls measured."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from dref_raft import fsm
from dref_raft._pb import dref_consensus_pb2
from dref_raft.bulk import FREEZE_AFTER, release_in_slices
from dref_raft.cli import commands as cli_commands
from dref_raft.cli.commands import node
from dref_raft.commands import DeleteElement, Membership, SetElement
from dref_raft.errors import CorruptStateError, WireError
from dref_raft.fsm import (
    CHUNK_ITEMS,
    Changed,
    ChangeList,
    ChunkedTuple,
    ChunkedTupleBuilder,
    ClusterSnapshot,
    Element,
    PackedEntries,
    SnapshotEntry,
    StateMachine,
    release_snapshot,
)
from dref_raft.member.loop_stalls import LoopStalls
from dref_raft.member.node import NodeConfig, RaftNode
from dref_raft.storage import open_stores
from dref_raft.storage.recovery import boot
from dref_raft.storage.snapshot import (
    FileEntries,
    decode_snapshot_file,
    encode_snapshot_file,
    read_snapshot_file,
    write_snapshot_file,
)
from dref_raft.transport.memory import MemoryNetwork
from dref_raft.wire import commands
from dref_raft.wire.commands import SnapshotDecoder, decode_snapshot, encode_snapshot


def _entries(count: int, seed: int) -> tuple[SnapshotEntry, ...]:
    rng = random.Random(seed)
    return tuple(
        SnapshotEntry(
            f"k{i:06d}",
            rng.randbytes(rng.choice([0, 5, 127, 128, 400])),
            rng.choice([None, None, 0, 7, 2**40]),
        )
        for i in range(count)
    )


def test_packed_entries_are_a_sequence_equal_to_the_same_tuple() -> None:
    entries = (SnapshotEntry("a", b"1"), SnapshotEntry("b", b"2", 9), SnapshotEntry("c", b""))
    packed = PackedEntries(["a", "b", "c"], [b"1", b"2", b""], {1: 9})
    assert packed == entries
    assert entries == packed
    assert list(packed) == list(entries)
    assert (len(packed), packed[1], packed[-1], packed[1:]) == (
        3,
        entries[1],
        entries[2],
        entries[1:],
    )
    assert ClusterSnapshot(packed, 4) == ClusterSnapshot(entries, 4)
    assert packed != entries[:2]
    assert packed != (*entries[:2], SnapshotEntry("c", b"", 1))
    assert hash(packed) == hash(entries)
    with pytest.raises(IndexError):
        packed[3]
    with pytest.raises(ValueError, match="2 names but 1 values"):
        PackedEntries(["a", "b"], [b"1"])


def test_a_machine_snapshot_is_packed_sorted_and_shares_the_values() -> None:
    machine = StateMachine()
    value = b"v" * 100
    for name, expire_at in (("b", 5), ("c", None), ("a", None)):
        machine.apply(SetElement(name, value, expire_at))
    snapshot = machine.snapshot(last_seq=3)
    assert isinstance(snapshot.entries, PackedEntries)
    assert snapshot.entries.names == ("a", "b", "c")
    assert snapshot.entries.expiries == {1: 5}
    assert all(v is value for v in snapshot.entries.values)
    gc.collect()  # a full collection never walks a snapshot's names and values again
    assert not any(gc.is_tracked(chunk) for chunk in snapshot.entries.names.chunks)
    assert not any(gc.is_tracked(chunk) for chunk in snapshot.entries.values.chunks)


@pytest.mark.parametrize("count", [0, 1, 7, 40])
def test_a_state_copied_in_slices_is_the_whole_copy(count: int) -> None:
    machine = StateMachine()
    for i in range(count):
        machine.apply(SetElement(f"n{i}", bytes([i]), 100 + i if i % 3 == 0 else None))
    machine.apply(DeleteElement("n1"))
    steps = machine.copy_state_in_slices(4)
    taken = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            copy = done.value
            break
        taken += 1
    assert taken == -(-len(machine) // 4)  # a step per slice of 4: the copy is never one call
    whole = machine.copy_state()
    assert [len(names) for names, _ in copy.slices] == [4] * (len(machine) // 4) + (
        [len(machine) % 4] if len(machine) % 4 else []
    )
    assert list(copy.pairs()) == list(whole.pairs())
    assert (copy.expiries, copy.membership, copy.sessions, copy.lines) == (
        whole.expiries,
        whole.membership,
        whole.sessions,
        whole.lines,
    )


def test_a_state_copy_in_slices_refuses_a_change_meanwhile() -> None:
    machine = StateMachine()
    for i in range(10):
        machine.apply(SetElement(f"n{i}", b"v", None))
    steps = machine.copy_state_in_slices(4)
    next(steps)
    machine.apply(SetElement("n1", b"w", None))
    with pytest.raises(RuntimeError, match="changed while its state was being copied"):
        next(steps)


@pytest.mark.parametrize("count", [0, 1, 5000, 9000])
def test_fed_in_pieces_the_decoder_gives_the_whole_decode(count: int) -> None:
    snapshot = ClusterSnapshot(
        _entries(count, count),
        last_seq=77,
        last_term=3,
        membership=Membership(("n1", "n2"), ("n3",), (("n1", "h:1"),)),
    )
    data = encode_snapshot(snapshot)
    rng = random.Random(count)
    decoder = SnapshotDecoder()
    offset = 0
    while offset < len(data):
        size = rng.choice([1, 2, 7, 300, 70_000])
        piece = data[offset : offset + size]
        offset += len(piece)
        assert decoder.feed(piece, final=offset >= len(data))
    decoded = decoder.result()
    assert decoded == snapshot == decode_snapshot(data)
    assert isinstance(decoded.entries, PackedEntries)


def test_a_snapshot_file_read_a_block_at_a_time_matches_one_whole_decode(tmp_path: Path) -> None:
    snapshot = ClusterSnapshot(_entries(20_000, 1), 5, 2)
    path = tmp_path / "state-snapshot"
    size = write_snapshot_file(snapshot, path, durable=True)
    data = path.read_bytes()
    assert (size, data) == (len(data), encode_snapshot_file(snapshot))
    assert read_snapshot_file(path) == snapshot == decode_snapshot_file(data, str(path))


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[:6],  # truncated header
        lambda d: b"XXXX" + d[4:],  # bad magic
        lambda d: d[:4] + b"\x02" + d[5:],  # unknown version
        lambda d: d[:-1],  # truncated payload
        lambda d: d + b"\x00",  # trailing byte
        lambda d: d[:9] + b"\x0a\x7f" + d[11:],  # an entry running past the end
    ],
)
def test_a_damaged_file_read_in_blocks_fails_as_a_whole_decode_does(
    tmp_path: Path, damage: object
) -> None:
    path = tmp_path / "state-snapshot"
    data = encode_snapshot_file(ClusterSnapshot(_entries(50, 2), 5))
    bad = damage(data)  # type: ignore[operator]
    path.write_bytes(bad)
    with pytest.raises(CorruptStateError) as whole:
        decode_snapshot_file(bad, str(path))
    with pytest.raises(CorruptStateError) as streamed:
        read_snapshot_file(path)
    assert str(streamed.value) == str(whole.value)


def test_decoded_values_equal_to_held_ones_are_the_held_objects(tmp_path: Path) -> None:
    machine = StateMachine()
    for i in range(100):
        machine.apply(SetElement(f"k{i}", b"same %d" % i))
    machine.apply(SetElement("changed", b"old"))
    path = tmp_path / "state-snapshot"
    other = StateMachine()
    for i in range(100):
        other.apply(SetElement(f"k{i}", b"same %d" % i))
    other.apply(SetElement("changed", b"new"))
    write_snapshot_file(other.snapshot(7), path, durable=False)
    held = machine.values()
    known = machine.snapshot().entries
    assert isinstance(known, PackedEntries)
    decoded = read_snapshot_file(path, held, known.names)
    assert isinstance(decoded.entries, PackedEntries)
    by_name = dict(zip(decoded.entries.names, decoded.entries.values, strict=True))
    assert all(by_name[f"k{i}"] is held[f"k{i}"] for i in range(100))
    known_names = {name: name for name in known.names}
    assert all(name is known_names[name] for name in decoded.entries.names)
    assert by_name["changed"] == b"new"
    assert machine.install(decoded) == (Changed("changed", b"new"),)


@pytest.mark.parametrize("count", [0, 1, CHUNK_ITEMS - 1, CHUNK_ITEMS, 2 * CHUNK_ITEMS + 5])
def test_a_chunked_tuple_built_in_batches_equals_the_flat_one(count: int) -> None:
    flat = [f"n{i:06d}" for i in range(count)]
    builder: ChunkedTupleBuilder[str] = ChunkedTupleBuilder()
    rng, at = random.Random(count), 0
    while at < count:
        size = rng.choice([1, 7, 4000, CHUNK_ITEMS, CHUNK_ITEMS + 3])
        builder.extend(flat[at : at + size])
        at += size
        assert builder.count == min(at, count)
        # Never more than a chunk's worth waits beside the tuples.
        assert len(builder._tail) < CHUNK_ITEMS
    built = builder.build()
    assert all(len(chunk) == CHUNK_ITEMS for chunk in built.chunks[:-1])
    assert (len(built), built) == (count, tuple(flat))
    assert len(builder.build()) == 0  # it starts over
    with pytest.raises(ValueError, match="every chunk but the last"):
        ChunkedTuple.of_chunks([("a",), ("b",)])


def test_a_decoder_given_a_state_fills_it_as_an_install_would_build_it(tmp_path: Path) -> None:
    # Duplicates (the later wins), expiries, both entry forms (plain, and one with an expiry
    # parsed by protobuf): the state filled while decoding is the one an install builds, and
    # an install given it takes it as it is.
    names = ["a", "b", "a", "c"] + [f"k{i:05d}" for i in range(3 * CHUNK_ITEMS)]
    values = [b"1", b"2", b"3", b"4"] + [b"v%d" % i for i in range(3 * CHUNK_ITEMS)]
    path = tmp_path / "state-snapshot"
    snapshot = ClusterSnapshot(PackedEntries(names, values, {0: 5, 1: 6}), 9)
    write_snapshot_file(snapshot, path, durable=False)
    state: dict[str, bytes] = {}
    decoded = read_snapshot_file(path, state=state)
    assert decoded.entries == snapshot.entries
    built = StateMachine()
    changes = built.install(decoded)
    assert state == dict(built.values())
    machine = StateMachine()
    prepared = machine.prepare_install(decoded, state)
    assert prepared.values is state
    machine.offer_prepared(prepared)
    assert machine.install(decoded) == changes
    assert dict(machine.elements()) == dict(built.elements())
    assert machine.expiries() == {"b": 6}
    with pytest.raises(ValueError, match="start empty"):
        SnapshotDecoder(state={"x": b"y"})


def test_a_member_booting_from_its_snapshot_file_fills_its_state_while_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"k{i:05d}" for i in range(CHUNK_ITEMS + 9)]
    snapshot = ClusterSnapshot(PackedEntries(names, [n.encode() for n in names]), 4, 1)
    open_stores(tmp_path).snapshot.save(snapshot)
    filled: list[int] = []
    install = StateMachine.install

    def recording(
        machine: StateMachine, snapshot: ClusterSnapshot, state: dict[str, bytes] | None = None
    ) -> ChangeList:
        filled.append(len(state or ()))
        return install(machine, snapshot, state)

    monkeypatch.setattr(StateMachine, "install", recording)
    machine, _ = boot(open_stores(tmp_path))
    assert filled == [len(names)]
    assert dict(machine.values()) == {n: n.encode() for n in names}


def test_a_member_booting_with_a_held_file_keeps_the_entries_there(tmp_path: Path) -> None:
    names = [f"k{i:05d}" for i in range(CHUNK_ITEMS + 9)]
    expiries = {3: 70, CHUNK_ITEMS + 1: 80}
    members = Membership(("a", "b"))
    snapshot = ClusterSnapshot(
        PackedEntries(names, [n.encode() for n in names], expiries), 4, 1, members
    )
    open_stores(tmp_path).snapshot.save(snapshot)
    held = tmp_path / "held"
    machine, state = boot(open_stores(tmp_path), held)
    entries = state.snapshot.data.entries
    assert isinstance(entries, FileEntries)
    assert entries.path == held
    assert held.stat().st_ino == (tmp_path / "state-snapshot").stat().st_ino
    assert list(entries) == list(snapshot.entries)
    assert dict(machine.values()) == {n: n.encode() for n in names}
    assert machine.expiries() == {names[i]: at for i, at in expiries.items()}
    assert machine.membership == members
    assert (state.snapshot.seq, state.snapshot.term) == (4, 1)


def test_a_snapshot_file_out_of_name_order_is_booted_in_memory(tmp_path: Path) -> None:
    # Not a dref member's file (names not strictly ascending): held in memory, duplicates
    # resolved as an install resolves them (the later wins).
    entries = (SnapshotEntry("b", b"1"), SnapshotEntry("a", b"2", 9), SnapshotEntry("a", b"3"))
    open_stores(tmp_path).snapshot.save(ClusterSnapshot(entries, 4, 1))
    held = tmp_path / "held"
    machine, state = boot(open_stores(tmp_path), held)
    assert not held.exists()
    assert not isinstance(state.snapshot.data.entries, FileEntries)
    assert dict(machine.values()) == {"a": b"3", "b": b"1"}
    assert machine.expiries() == {}


def test_install_of_packed_entries_keeps_expiries_and_the_later_duplicate() -> None:
    machine = StateMachine()
    machine.apply(SetElement("gone", b"x"))
    packed = PackedEntries(["a", "b", "a", "c"], [b"1", b"2", b"3", b"4"], {0: 5, 1: 6})
    changes = machine.install(ClusterSnapshot(packed, 9))
    assert changes == (
        Changed("a", b"3"),
        Changed("b", b"2"),
        Changed("c", b"4"),
        Changed("gone", None),
    )
    assert isinstance(changes, ChangeList)
    assert dict(machine.elements()) == {
        "a": Element(b"3"),  # the later "a" has no TTL
        "b": Element(b"2", 6),
        "c": Element(b"4"),
    }
    assert machine.expiries() == {"b": 6}


def test_a_new_member_install_reports_every_element_without_copying_them() -> None:
    packed = PackedEntries(["a", "b"], [b"1", b"2"])
    changes = StateMachine().install(ClusterSnapshot(packed, 2))
    assert isinstance(changes, ChangeList)
    assert changes.names is packed.names
    assert changes == (Changed("a", b"1"), Changed("b", b"2"))
    assert changes[-1:] == (Changed("b", b"2"),)


def test_the_replaced_state_is_handed_over_to_be_freed_in_slices() -> None:
    machine = StateMachine()
    machine.retired = []
    for i in range(20_000):
        machine.apply(SetElement(f"k{i}", b"v", 5 if i % 2 else None))
    old_values = machine.values()
    machine.install(ClusterSnapshot((SnapshotEntry("new", b"1"),), 1))
    assert len(machine.retired) == 2
    assert sorted(len(d) for d in machine.retired) == [10_000, 20_000]
    release_in_slices(machine.retired)
    assert machine.retired == []
    assert len(old_values) == 0
    assert machine.values() == {"new": b"1"}
    big = list(range(20_000))
    release_in_slices([big])
    assert big == []


async def test_loop_stalls_are_measured_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="dref_raft.member.loop")
    stalls = LoopStalls(threshold=0.05, interval=0.005)
    sampler = asyncio.create_task(stalls.run())
    try:
        await asyncio.sleep(0.02)  # the sampler runs
        time.sleep(0.12)  # noqa: ASYNC251 - the stall to be seen: the loop is blocked
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while stalls.over_threshold == 0:
            assert loop.time() < deadline, "the stall was not seen"
            await asyncio.sleep(0.005)
    finally:
        sampler.cancel()
    assert stalls.longest >= 0.1
    assert stalls.over_threshold == 1
    (line,) = [r.getMessage() for r in caplog.records if r.name == "dref_raft.member.loop"]
    match = re.fullmatch(
        r"event loop stalled ([0-9.]+) ms: ([0-9.]+) ms on the loop's thread, [0-9.]+ ms in "
        r"other threads \(ended at [0-9.]+\)",
        line,
    )
    assert match is not None, line
    assert float(match[1]) >= 100  # the blocked 120 ms, on the loop's thread (a sleep: no CPU)


def test_dref_raft_node_log_loop_stalls_runs_the_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[LoopStalls | None] = []

    def run_member(options: dict[str, object], **kwargs: object) -> int:
        stalls = kwargs["loop_stalls"]
        assert stalls is None or isinstance(stalls, LoopStalls)
        seen.append(stalls)
        return 0

    monkeypatch.setattr(cli_commands, "run_member", run_member)
    assert CliRunner().invoke(node, ["--node-id", "n1", "--log-loop-stalls", "20"]).exit_code == 0
    assert CliRunner().invoke(node, ["--node-id", "n1"]).exit_code == 0
    first, second = seen
    assert first is not None
    assert first.threshold == pytest.approx(0.02)
    assert second is None
    assert logging.getLogger("dref_raft.member.loop").isEnabledFor(logging.INFO)


def test_a_snapshot_close_to_the_held_state_is_applied_in_place() -> None:
    held = StateMachine()
    for i in range(1000):
        held.apply(SetElement(f"k{i:04d}", b"v%d" % i, 50 if i % 100 == 0 else None))
    source = StateMachine()
    for i in range(1000):
        source.apply(SetElement(f"k{i:04d}", b"v%d" % i, 60 if i % 100 == 0 else None))
    source.apply(SetElement("k0001", b"changed"))
    source.apply(SetElement("new", b"added"))
    source.apply(DeleteElement("k0002"))
    snapshot = source.snapshot(1003)
    reference = StateMachine()
    for i in range(1000):
        reference.apply(SetElement(f"k{i:04d}", b"v%d" % i, 50 if i % 100 == 0 else None))
    expected = reference.install(snapshot)  # built from scratch (no prepared swap)
    prepared = held.prepare_install(snapshot)
    assert prepared.values is None  # three differences: applied to the held dict
    held.offer_prepared(prepared)
    changes = held.install(snapshot)
    assert (
        changes
        == expected
        == (
            Changed("k0001", b"changed"),
            Changed("k0002", None),
            Changed("new", b"added"),
        )
    )
    assert dict(held.elements()) == dict(source.elements()) == dict(reference.elements())
    assert held.expiries() == {f"k{i:04d}": 60 for i in range(0, 1000, 100)}


def test_many_differences_build_the_new_state_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsm, "IN_PLACE_MAX", 2)
    held = StateMachine()
    for name in "abcd":
        held.apply(SetElement(name, b"old"))
    snapshot = ClusterSnapshot(PackedEntries(["a", "b", "c"], [b"1", b"2", b"3"]), 5)
    prepared = held.prepare_install(snapshot)
    assert prepared.values == {"a": b"1", "b": b"2", "c": b"3"}
    held.offer_prepared(prepared)
    assert held.install(snapshot) == (
        Changed("a", b"1"),
        Changed("b", b"2"),
        Changed("c", b"3"),
        Changed("d", None),
    )


def _one_parse(data: bytes) -> ClusterSnapshot | str:
    """What one protobuf parse of the whole message gives (or the error's type)."""
    try:
        return commands.snapshot_of(
            commands._parse(dref_consensus_pb2.ClusterSnapshot(), data, "ClusterSnapshot")
        )
    except WireError:
        return "WireError"


def _decoded(data: bytes) -> ClusterSnapshot | str:
    try:
        return decode_snapshot(data)
    except WireError:
        return "WireError"


def test_entries_read_straight_from_the_bytes_decode_as_one_protobuf_parse() -> None:
    rng = random.Random(42)
    names = ["", "a", "n" * 127, "n" * 128, "ünï", "k" * 300]
    sizes = [0, 1, 100, 127, 128, 16383, 16384, 20000]
    entries = tuple(
        SnapshotEntry(rng.choice(names) + str(i), rng.randbytes(rng.choice(sizes)), expire_at)
        for i in range(300)
        for expire_at in [rng.choice([None, None, None, 0, 5])]
    )
    data = encode_snapshot(ClusterSnapshot(entries, 9, 2))
    assert _decoded(data) == _one_parse(data) == ClusterSnapshot(entries, 9, 2)
    small = encode_snapshot(ClusterSnapshot(entries[:40], 9, 2))
    for _ in range(3000):  # damaged bytes: the same snapshot, or refused by both
        damaged = bytearray(small)
        for _ in range(rng.choice([1, 2, 3])):
            damaged[rng.randrange(len(damaged))] = rng.choice(
                [0x0A, 0x12, 0x18, 0x80, 0xFF, 0x00, rng.randrange(256)]
            )
        cut = bytes(damaged[: rng.choice([len(damaged), rng.randrange(len(damaged) + 1)])])
        assert _decoded(cut) == _one_parse(cut), cut.hex()


@pytest.mark.parametrize("count", [0, 1, CHUNK_ITEMS - 1, CHUNK_ITEMS, 2 * CHUNK_ITEMS + 5])
def test_a_chunked_tuple_equals_the_flat_one(count: int) -> None:
    flat = tuple(f"n{i:06d}" for i in range(count))
    chunked = ChunkedTuple(list(flat))
    assert all(len(chunk) == CHUNK_ITEMS for chunk in chunked.chunks[:-1])
    assert (len(chunked), tuple(chunked), chunked) == (count, flat, flat)
    assert hash(chunked) == hash(flat)
    for index in {0, 1, CHUNK_ITEMS - 1, CHUNK_ITEMS, count - 1, -1, -count}:
        if -count <= index < count:
            assert chunked[index] == flat[index]
    for bounds in [(0, count), (5, 9), (CHUNK_ITEMS - 3, CHUNK_ITEMS + 4), (-7, None)]:
        assert chunked[slice(*bounds)] == flat[slice(*bounds)]
    assert chunked[::3] == flat[::3]
    with pytest.raises(IndexError):
        chunked[count]
    assert ChunkedTuple(chunked) == chunked  # wrapping shares the tuples, not the list
    packed = PackedEntries(list(flat), [b"v"] * count, {count - 1: 4} if count else None)
    assert packed == tuple(
        SnapshotEntry(name, b"v", 4 if i == count - 1 else None) for i, name in enumerate(flat)
    )


def test_a_replaced_snapshot_is_released_a_tuple_at_a_time_only_when_nothing_else_holds_it() -> (
    None
):
    def boxed() -> tuple[list[ClusterSnapshot], list[tuple[str, ...]], list[tuple[bytes, ...]]]:
        names = [f"n{i:06d}" for i in range(2 * CHUNK_ITEMS + 1)]
        snapshot = ClusterSnapshot(PackedEntries(names, [b"v"] * len(names)), 1)
        entries = snapshot.entries
        assert isinstance(entries, PackedEntries)
        return [snapshot], entries.names.chunks, entries.values.chunks

    box, names, values = boxed()
    held = box[0]
    release_snapshot(box)  # still held by `held`: left whole
    assert (len(names), len(values), box) == (3, 3, [])
    box, names, values = boxed()
    changes = StateMachine().install(box[0])  # a new member's changes share the names
    release_snapshot(box)
    assert (len(names), len(values)) == (3, 3)
    assert changes[-1] == Changed(f"n{2 * CHUNK_ITEMS:06d}", b"v")
    box, names, values = boxed()
    release_snapshot(box)  # nothing else holds it: emptied a tuple at a time
    assert (names, values) == ([], [])
    assert held == boxed()[0][0]


def test_a_large_snapshot_taken_or_decoded_is_never_walked_by_the_collector(
    tmp_path: Path,
) -> None:
    # The first collection to see a snapshot's names and values would walk every reference in
    # them (~80 ms per million elements, the GIL held, on the event loop's thread as likely as
    # on any): the pause they are built in freezes them instead (`dref_raft.bulk`).
    machine = StateMachine()
    for i in range(FREEZE_AFTER):
        machine.apply(SetElement(f"k{i:06d}", b"v"))
    taken = machine.snapshot(1)
    path = tmp_path / "state-snapshot"
    write_snapshot_file(taken, path, durable=False)
    decoded = read_snapshot_file(path)
    tracked = {id(o) for o in gc.get_objects()}
    for snapshot in (taken, decoded):
        entries = snapshot.entries
        assert isinstance(entries, PackedEntries)
        assert len(entries) == FREEZE_AFTER
        assert not any(id(c) in tracked for c in entries.names.chunks + entries.values.chunks)


async def test_the_drivers_copy_of_a_large_state_is_never_walked_by_the_collector() -> None:
    # The copy a snapshot (or a backup) starts from grows to a million references on the event
    # loop, slice by slice: no collection walks it meanwhile, none after (frozen).
    machine = StateMachine()
    for i in range(FREEZE_AFTER):
        machine.apply(SetElement(f"k{i:06d}", b"v"))
    node = RaftNode(NodeConfig("a", {}), MemoryNetwork().peer_clients("mem:a"), machine=machine)
    try:
        state = await node._copy_state()
    finally:
        await node.aclose()
    assert len(state) == FREEZE_AFTER
    tracked = {id(o) for o in gc.get_objects()}
    assert id(state.slices) not in tracked
    assert not any(id(names) in tracked or id(values) in tracked for names, values in state.slices)
