"""Bulk work on a snapshot's million objects: `paused_gc` while they are built,
`release_in_slices` when they go, `tune_malloc` so that the memory they leave is returned.

`release_in_slices` empties big containers (an installed-over state's dicts) a slice at a time
in a worker thread: dropping a million-entry dict at once frees its objects in one C call that
holds the GIL for tens of milliseconds — an event-loop stall wherever it runs.

`paused_gc`: the cyclic garbage collector off while a snapshot's million objects are built.

Building (or decoding) a snapshot creates one or more objects per element; with the collector
on, each young-generation collection and the occasional full one walk every object built so far,
which made these builds several times slower (and, run from a worker thread, held the GIL away
from the event loop meanwhile). Nothing built here forms reference cycles; reference counting
still frees everything. Nested and concurrent uses (threads) are counted: the collector is back
on when the last one ends, if it was on before the first.

When the pause leaves many young objects (`FREEZE_AFTER`), or built a container of that many
references (`built_large`: a snapshot's names or values, few objects but a million references
to walk), they are moved to the collector's permanent generation (`gc.freeze()`) instead of
being walked by the next collection: that walk holds the GIL (about 0.1 s per million objects
or ~80 ms per two million references here) wherever it happens, the event loop's thread
included. A frozen object is still freed by reference counting; only a reference cycle
that was alive at that moment and becomes garbage later is never collected (a small, one-off
cost per large snapshot; the elements themselves form no cycles).

`tune_malloc` (a member process calls it once at start, docs/raft.md#large-state): glibc's
allocator keeps memory a snapshot's transient buffers leave behind. A freed block served by
its own mapping raises glibc's mapping threshold to that block's size, so the next lists,
tuples, dict tables and 1 MiB chunks of up to that size (32 MiB at most) are carved from the
heap, where a freed block below a live one is never given back; and each worker thread that
allocates while another does gets an arena of its own (up to 8 per core), each holding its
own freed memory. Measured with 1,000,000 elements: a member's resident memory stayed up to
~0.5x the data above its live objects after a few installs and snapshots. `tune_malloc` fixes the
threshold (blocks from `MMAP_THRESHOLD` up are mapped, and unmapped when freed) and caps the
arenas at `ARENA_MAX`; a parameter set through glibc's environment (`MALLOC_MMAP_THRESHOLD_`,
`MALLOC_ARENA_MAX`, `GLIBC_TUNABLES`) is left as given.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import threading
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "ARENA_MAX",
    "FREEZE_AFTER",
    "MMAP_THRESHOLD",
    "built_large",
    "paused_gc",
    "release_in_slices",
    "tune_malloc",
]

FREEZE_AFTER = 100_000
"""Young tracked objects left by a pause above which they are frozen (see the module)."""

#: Items freed per C call by `release_in_slices`.
RELEASE_SLICE = 8192

_lock = threading.Lock()
_depth = 0
_was_enabled = False
_built_large = False


def built_large() -> None:
    """Note that a container of `FREEZE_AFTER` or more references was built (a snapshot's
    names or values): the next pause to end freezes the young objects however few they are,
    as the first collection to see that container would walk every reference in it (~80 ms
    per two million on a loaded machine, the GIL held, on whichever thread it runs)."""
    global _built_large
    _built_large = True


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Disable the cyclic garbage collector inside the block (see the module docstring)."""
    global _depth, _was_enabled, _built_large
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                if _built_large or gc.get_count()[0] > FREEZE_AFTER:
                    _built_large = False
                    gc.freeze()
                gc.enable()


def release_in_slices(containers: list[dict[Any, Any] | list[Any]]) -> None:
    """Empty (and drop) each of `containers` a slice of items at a time, so that freeing them
    never holds the GIL for long (blocking: run it in a worker thread)."""
    while containers:
        container = containers.pop()
        if isinstance(container, dict):
            pop = container.popitem
            while container:
                for _ in range(min(len(container), RELEASE_SLICE)):
                    pop()
        else:
            while container:
                del container[-RELEASE_SLICE:]


MMAP_THRESHOLD = 128 * 1024
"""Bytes from which `tune_malloc` has glibc map a block of its own (returned when freed): a
snapshot's tuples of `CHUNK_ITEMS` references (128 KiB and a header) are (from the heap, a
freed snapshot's 0.14x stayed resident, and the next snapshot's tuples, built in another
thread's arena, did not reuse it)."""
ARENA_MAX = 2
"""glibc arenas `tune_malloc` allows (the event loop's thread and the worker threads')."""

#: glibc's `mallopt` parameters (malloc.h) and the environment variables that set them.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_PARAMETERS = (
    ("mmap_threshold", _M_MMAP_THRESHOLD, MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_"),
    ("arena_max", _M_ARENA_MAX, ARENA_MAX, "MALLOC_ARENA_MAX"),
)


def tune_malloc(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """Set glibc's mapping threshold and arena count for a process holding a large state (see
    the module docstring); what was set, by name ({} off glibc, or when the environment
    `environ`, default `os.environ`, sets them: `GLIBC_TUNABLES` leaves both as given)."""
    env = os.environ if environ is None else environ
    if platform.libc_ver()[0] != "glibc" or "GLIBC_TUNABLES" in env:
        return {}
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done: dict[str, int] = {}
    for name, parameter, value, variable in _PARAMETERS:
        if variable not in env and mallopt(parameter, value) == 1:
            done[name] = value
    return done
