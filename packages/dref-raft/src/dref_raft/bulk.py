"""`paused_gc`: the cyclic garbage collector off while a snapshot's million objects are built.

Building (or decoding) a snapshot creates one or more objects per element; with the collector
on, each young-generation collection and the occasional full one walk every object built so far,
which made these builds several times slower (and, run from a worker thread, held the GIL away
from the event loop meanwhile). Nothing built here forms reference cycles; reference counting
still frees everything. Nested and concurrent uses (threads) are counted: the collector is back
on when the last one ends, if it was on before the first.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["paused_gc"]

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Disable the cyclic garbage collector inside the block (see the module docstring)."""
    global _depth, _was_enabled
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
                gc.enable()
