"""The PySyncObj side of `raft_bench.py`: one node process holding a replicated counter.

`worker(conn, spec)` runs in a process started by the benchmark and answers the same commands as
dref's worker (see `raft_bench.py`): `leader?`, `run` (writers or readers), `probe_start`,
`probe_report`, `stop`. Writes are `incr(sync=True)` (one log entry, acknowledged once committed
and applied here); reads are `read(sync=True)`, a no-op command through the log (PySyncObj has no
ReadIndex: its local reads may be stale, so a linearizable read goes through the log).
"""

from __future__ import annotations

import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated  # type: ignore[import-untyped]

__all__ = ["worker"]

OP_TIMEOUT = 10.0


class Counter(SyncObj):  # type: ignore[misc]
    """A replicated integer."""

    def __init__(self, self_addr: str, partners: list[str], conf: Any) -> None:
        super().__init__(self_addr, partners, conf)
        self.__value = 0

    @replicated  # type: ignore[untyped-decorator]
    def incr(self) -> int:
        self.__value += 1
        return self.__value

    @replicated  # type: ignore[untyped-decorator]
    def read(self) -> int:
        return self.__value


def worker(conn: Connection, spec: dict[str, Any]) -> None:
    """Serve the benchmark's commands on `conn` until `stop` (or the pipe closes)."""
    conf = SyncObjConf(
        journalFile=spec["journal"],  # mmap'ed; PySyncObj has no per-entry fsync
        dynamicMembershipChange=False,
        commandsWaitLeader=True,
    )
    node = Counter(spec["self"], spec["partners"], conf)
    probe: _Probe | None = None
    conn.send(("ready", None))
    try:
        while True:
            cmd, args = conn.recv()
            if cmd == "stop":
                break
            if cmd == "leader?":
                result: Any = bool(node._isLeader())
            elif cmd == "run":
                result = _run(node, **args)
            elif cmd == "probe_start":
                probe = _Probe(node)
                result = None
            elif cmd == "probe_report":
                assert probe is not None
                result = probe.report(args["kill_at"])
            else:
                raise ValueError(cmd)
            conn.send(("ok", result))
    except EOFError:
        pass
    finally:
        node.destroy()


#: Above this many operations in flight per process, `_run` keeps them in flight with
#: callbacks instead of one thread each (hundreds of threads would measure the GIL).
MAX_THREADS = 64


def _run(
    node: Counter, kind: str, tasks: int, go_at: float, warmup: float, seconds: float
) -> tuple[int, list[int]]:
    """`tasks` threads write (or read) from `go_at` for warmup + seconds; count the window."""
    start, end = go_at + warmup, go_at + warmup + seconds
    op = node.incr if kind == "write" else node.read
    if tasks > MAX_THREADS:
        return _run_window(op, tasks, go_at, start, end)
    counts = [0] * tasks
    latencies: list[list[int]] = [[] for _ in range(tasks)]

    def loop(i: int) -> None:
        time.sleep(max(0.0, go_at - time.time()))
        clock = time.perf_counter_ns
        while (now := time.time()) < end:
            t0 = clock()
            op(sync=True, timeout=OP_TIMEOUT)
            t1 = clock()
            if now >= start:
                counts[i] += 1
                latencies[i].append(t1 - t0)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(tasks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=warmup + seconds + 2 * OP_TIMEOUT + max(0.0, go_at - time.time()))
    return sum(counts), [x for lat in latencies for x in lat]


def _run_window(
    op: Any, tasks: int, go_at: float, start: float, end: float
) -> tuple[int, list[int]]:
    """Keep `tasks` operations in flight with PySyncObj's callback API: each completion
    issues the next one (from PySyncObj's own thread)."""
    lock = threading.Lock()
    count = [0]
    latencies: list[int] = []
    done = threading.Event()
    outstanding = [0]
    clock = time.perf_counter_ns

    def issue() -> None:
        t0 = clock()
        issued_at = time.time()

        def callback(result: Any, error: int) -> None:
            t1 = clock()
            now = time.time()
            with lock:
                if error == FAIL_REASON.SUCCESS and start <= issued_at and now < end:
                    count[0] += 1
                    latencies.append(t1 - t0)
                if now >= end:
                    outstanding[0] -= 1
                    if outstanding[0] == 0:
                        done.set()
                    return
            issue()

        op(callback=callback)

    time.sleep(max(0.0, go_at - time.time()))
    outstanding[0] = tasks
    for _ in range(tasks):
        issue()
    done.wait(timeout=end - time.time() + 2 * OP_TIMEOUT)
    with lock:
        return count[0], list(latencies)


PROBE_PERIOD = 0.005


class _Probe:
    """Start a write every `PROBE_PERIOD` (callback API); record (issued, acked) wall times."""

    def __init__(self, node: Counter) -> None:
        self.node = node
        self.acks: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            issued = time.time()

            def done(result: Any, error: int, issued: float = issued) -> None:
                if error == FAIL_REASON.SUCCESS:
                    self.acks.append((issued, time.time()))

            self.node.incr(callback=done)
            self.stop.wait(PROBE_PERIOD)

    def report(self, kill_at: float) -> float | None:
        """Wall time of the first acknowledgement of a write issued after `kill_at`."""
        self.stop.set()
        self.thread.join(timeout=5)
        after = [acked for issued, acked in list(self.acks) if issued > kill_at]
        return min(after) if after else None
