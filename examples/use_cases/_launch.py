"""What the example programs share: a store to run on, worker processes, and their output.

`store()` gives the environment every worker (and the launcher) connects with (`dref.connect()`
reads it): the
caller's own `DREF_*` variables if `DREF_BACKEND` is set (e.g. `DREF_BACKEND=redis
DREF_REDIS_URL=redis://127.0.0.1:6379/0`), else a local 3-process Raft cluster started for the
run, which the workers use as clients (`DREF_RAFT_MODE=client`).

`Workers` starts this script again as worker processes and hands their output lines, prefixed by
the worker's name, to the launcher, which waits on them (`expect`) instead of sleeping.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

TIMEOUT = 30.0
"""Seconds a launcher waits for an expected line before it gives up."""


@contextlib.contextmanager
def store() -> Iterator[dict[str, str]]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if "DREF_BACKEND" in os.environ:
        print(f"store: {os.environ['DREF_BACKEND']} (from DREF_BACKEND)", flush=True)
        yield env
        return
    from dref_raft.cli.local_cluster import LocalCluster

    cluster = LocalCluster(3)
    cluster.start()
    try:
        leader, _term = cluster.wait_for_leader(TIMEOUT)
        print(f"store: local Raft cluster {cluster.endpoints} (leader {leader})", flush=True)
        client = {
            "DREF_BACKEND": "raft",
            "DREF_RAFT_MODE": "client",
            "DREF_RAFT_ENDPOINTS": cluster.endpoints,
        }
        env.update(client)
        os.environ.update(client)  # the launcher's own `dref.connect()` too
        yield env
    finally:
        cluster.stop()


class Workers:
    """Worker processes running `script worker <name> [args]`; their lines in one queue."""

    def __init__(self, script: str, env: dict[str, str]) -> None:
        self.script = script
        self.env = env
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()

    def start(self, name: str, *args: str) -> None:
        proc = subprocess.Popen(
            [sys.executable, self.script, "worker", name, *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs[name] = proc
        threading.Thread(target=self._pump, args=(name, proc), daemon=True).start()

    def _pump(self, name: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.put((name, line.rstrip("\n")))

    def expect(
        self, predicate: Callable[[str, str], bool], what: str, timeout: float = TIMEOUT
    ) -> tuple[str, str]:
        """Echo worker lines until one satisfies `predicate(name, line)`; TimeoutError else."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                name, line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            print(f"[{name}] {line}", flush=True)
            if predicate(name, line):
                return name, line
        raise TimeoutError(f"{what} did not happen within {timeout:g} s")

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def wait(self, name: str, timeout: float = TIMEOUT) -> int:
        return self.procs[name].wait(timeout)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def worker_logging(name: str) -> None:
    """Workers log to stdout, one line per record, which the launcher reads."""
    import logging

    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format=f"%(asctime)s {name} %(message)s"
    )
