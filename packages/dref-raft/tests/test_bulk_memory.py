"""Memory of a large state (docs/raft.md#large-state): what a member gives back after the
transient buffers of snapshots, and how many references taking and decoding a snapshot hold
on top of the state."""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner

from dref_raft.bulk import ARENA_MAX, MMAP_THRESHOLD, tune_malloc
from dref_raft.cli import commands
from dref_raft.commands import SetElement
from dref_raft.fsm import ClusterSnapshot, PackedEntries, StateMachine, snapshot_of_state
from dref_raft.storage import snapshot as snapshot_module
from dref_raft.storage.snapshot import (
    read_snapshot_file,
    write_snapshot_file,
    write_snapshot_parts,
)
from dref_raft.wire.commands import encode_state_parts

glibc = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="tune_malloc sets glibc's allocator only"
)

#: Prepended to each script below: the process's resident memory, in bytes.
_RSS = textwrap.dedent(
    """
    def rss():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")
    """
)


def _retained_mib(script: str, *args: str, env: dict[str, str] | None = None) -> int:
    """What `script` (run after `_RSS` in a fresh interpreter, glibc's allocator left to what
    the process sets, plus `env`) prints: MiB still resident."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    out = subprocess.run(
        [sys.executable, "-c", _RSS + script, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=clean | (env or {}),
    )
    return int(out.stdout)


#: Worker threads allocate 1 MiB-class transient buffers (chunks, lists' arrays) and keep a
#: small object allocated after each one, as a member's snapshot work does; MiB still resident
#: once the buffers are gone.
_TRANSIENTS = textwrap.dedent(
    """
    import sys, threading
    from dref_raft.bulk import tune_malloc

    if sys.argv[1] == "tuned":
        assert tune_malloc(), "nothing set"
    kept = []
    big = b"z" * (1 << 20)  # mapped on its own; freeing it raises glibc's threshold
    del big

    def work():
        held = []
        for _ in range(128):
            held.append(b"x" * (256 << 10))
            held.append(b"y" * 1024)
        kept.extend(held[1::2])

    before = rss()
    for _ in range(2):
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    print((rss() - before) >> 20)
    """
)


@glibc
def test_tune_malloc_gives_back_what_transient_buffers_of_worker_threads_leave() -> None:
    # Untuned, what glibc keeps depends on how the threads met its arenas (about 1 run in 4
    # keeps nothing): the most of three runs shows it.
    untuned = max(_retained_mib(_TRANSIENTS, "untuned") for _ in range(3))
    if untuned < 10:
        pytest.skip(f"glibc kept only {untuned} MiB untuned in three runs: nothing to compare")
    assert _retained_mib(_TRANSIENTS, "tuned") <= 3


@glibc
def test_tune_malloc_leaves_parameters_set_through_the_environment() -> None:
    assert tune_malloc({"MALLOC_MMAP_THRESHOLD_": "1", "MALLOC_ARENA_MAX": "1"}) == {}
    assert tune_malloc({"GLIBC_TUNABLES": "glibc.malloc.arena_max=1"}) == {}
    script = "from dref_raft.bulk import tune_malloc; print(tune_malloc({'MALLOC_ARENA_MAX': '4'}))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == repr({"mmap_threshold": MMAP_THRESHOLD})
    assert ARENA_MAX >= 1


#: A worker thread builds a snapshot-sized `ChunkedTuple` (a million references: 61 tuples of
#: 128 KiB) and then allocates a small block, as a member keeps serving after taking a
#: snapshot; MiB still resident once the tuples are freed.
_CHUNKS = textwrap.dedent(
    """
    import threading
    from dref_raft.bulk import tune_malloc
    from dref_raft.fsm import ChunkedTuple

    tune_malloc()
    items = [None] * 1_000_000
    held, kept = [], []

    def build():
        held.append(ChunkedTuple(items))
        kept.extend(bytes(4096) for _ in range(64))  # above the tuples, if in the heap

    before = rss()
    thread = threading.Thread(target=build)
    thread.start()
    thread.join()
    held.clear()
    print((rss() - before) >> 20)
    """
)


@glibc
def test_tune_malloc_gives_back_the_tuples_of_a_freed_snapshot() -> None:
    # The previous threshold (256 KiB) kept them: the test can fail.
    assert _retained_mib(_CHUNKS, env={"MALLOC_MMAP_THRESHOLD_": str(256 * 1024)}) >= 6
    assert _retained_mib(_CHUNKS) <= 2


def test_a_member_process_tunes_malloc(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[bool] = []
    monkeypatch.setattr(commands, "tune_malloc", lambda: called.append(True) or {})
    monkeypatch.setattr(commands, "run_member", lambda *args, **kwargs: 0)
    result = CliRunner().invoke(commands.node, ["--node-id", "n1"])
    assert result.exit_code == 0, result.output
    assert called == [True]


def _state_in_name_order(count: int) -> StateMachine:
    machine = StateMachine()
    names = tuple(f"key{i:08d}" for i in range(count))
    machine.install(ClusterSnapshot(PackedEntries(names, tuple(n.encode() for n in names))))
    return machine


def test_taking_a_snapshot_holds_under_two_references_per_element_beyond_the_state() -> None:
    count = 100_000
    machine = _state_in_name_order(count)
    state = machine.copy_state()  # (the copy's own 16 bytes per element are not counted)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        snapshot = snapshot_of_state(state, 7)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(e.key, e.value) for e in snapshot.entries] == sorted(machine.values().items())
    assert (held - start) / count < 16.5  # the snapshot's two tuples
    # Sorted runs freed as merged, lists freed as they become tuples: ~27 (it was ~33: the
    # runs and the merged lists, then the lists and the tuples, all held at once).
    assert (peak - start) / count < 29


def _state_in_random_order(count: int) -> StateMachine:
    machine = StateMachine()
    for i in random.Random(5).sample(range(count), count):
        machine.apply(SetElement(f"key{i:08d}", b"v%d" % i))
    return machine


@pytest.mark.parametrize("order", ["name", "random"])
def test_a_snapshot_taken_into_its_file_holds_only_the_copy_beyond_the_state(
    tmp_path: Path, order: str
) -> None:
    count = 300_000
    machine = (_state_in_name_order if order == "name" else _state_in_random_order)(count)
    path = tmp_path / "state-snapshot"
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        steps = machine.copy_state_in_slices()
        while True:
            try:
                next(steps)
            except StopIteration as done:
                state = done.value
                break
        write_snapshot_parts(encode_state_parts(state, 7, 1), path)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del state
    assert list(read_snapshot_file(path).entries) == list(machine.snapshot(7).entries)
    # The copy's two references per element (~16.7 bytes with the lists' spare room), each
    # slice of it sorted in place into a run, the runs merged as they are written, plus
    # ~1.4 MB to sort one slice: no second list of the references, no tuples (runs made
    # beside a copy taken in one piece took ~24 bytes per element; a snapshot built in
    # memory from such a copy peaks at ~40 with the copy, and keeps 16).
    assert (peak - start - 2_000_000) / count < 17.5
    assert (held - start) / count < 1


def test_decoding_a_snapshot_file_holds_little_beyond_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 300_000
    names = tuple(f"key{i:08d}" for i in range(count))
    path = tmp_path / "state-snapshot"
    write_snapshot_file(
        ClusterSnapshot(PackedEntries(names, (b"v",) * count), 3), path, durable=False
    )
    del names
    monkeypatch.setattr(snapshot_module, "_READ_BLOCK", 64 * 1024)  # its share made small
    tracemalloc.start()
    try:
        snapshot = read_snapshot_file(path)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(snapshot.entries) == count
    assert snapshot.last_seq == 3
    # Beyond what the result holds (objects and two tuples): a block being decoded and its
    # entries; the tuples are made as the entries come (~0.3 bytes per element; it was ~10:
    # a list of all the names or values beside their tuples).
    assert (peak - held) / count < 2
