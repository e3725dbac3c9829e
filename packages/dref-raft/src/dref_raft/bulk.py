"""Bulk work on a snapshot's million objects: `paused_gc` while they are built,
`release_in_slices` when they go.

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
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["FREEZE_AFTER", "built_large", "paused_gc", "release_in_slices"]

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
