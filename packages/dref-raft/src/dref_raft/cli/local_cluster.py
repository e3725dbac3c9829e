"""A local multi-process Raft cluster on loopback: `dref raft cluster`, `dref demo`, benchmarks.

Every member is a `python -m dref_raft` process started with `--status-file`: it rewrites that
small JSON file (`NodeStatus`) every `STATUS_INTERVAL` seconds with its role, term, commit index,
applied index and known leader, atomically (write a temporary file, then rename). The parent
reads the files; a file older than `STALE_AFTER` seconds, or a process that exited, shows the node
as down. No RPC is added to the wire: the status is local to the machine, like the cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = [
    "STALE_AFTER",
    "STATUS_INTERVAL",
    "LocalCluster",
    "MemberProcess",
    "NodeStatus",
    "free_ports",
    "read_status",
    "write_status",
]

STATUS_INTERVAL = 0.1
"""Seconds between two status files written by a member."""
STALE_AFTER = 2.0
"""A status file older than this (seconds) means the member is not running."""
HOST = "127.0.0.1"


@dataclass(frozen=True)
class NodeStatus:
    """What a member reports about itself."""

    node: str
    role: str
    term: int
    commit: int
    applied: int
    leader: str | None
    pid: int
    address: str
    at: float
    """`time.time()` when written."""

    @property
    def fresh(self) -> bool:
        return self.role != "stopped" and time.time() - self.at <= STALE_AFTER


def write_status(path: Path, status: NodeStatus) -> None:
    """Replace `path` with `status` atomically (readers never see a partial file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(asdict(status)), encoding="utf-8")
    os.replace(tmp, path)


def read_status(path: Path) -> NodeStatus | None:
    """The last status written to `path`, or None if there is none (yet)."""
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return NodeStatus(**data)
    except (OSError, ValueError, TypeError):
        return None


def free_ports(count: int, host: str = HOST) -> list[int]:
    """Ports the kernel reports free right now (bound together once, then released)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class MemberProcess:
    """One member process of a `LocalCluster`."""

    node_id: str
    port: int
    args: list[str]
    status_file: Path
    log_file: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the process (returns at once; see `LocalCluster.start`)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DREF_")}
        self.status_file.unlink(missing_ok=True)
        log: IO[bytes]
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dref_raft", *self.args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
                start_new_session=True,  # Ctrl-C reaches the parent only; it stops the members
            )

    def status(self) -> NodeStatus | None:
        """The member's current status; None if it is not running or has not reported lately."""
        if not self.running:
            return None
        status = read_status(self.status_file)
        if status is None or not status.fresh or self.proc is None or status.pid != self.proc.pid:
            return None
        return status

    def kill(self) -> None:
        """SIGKILL (a crash) and reap."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)


@dataclass
class LocalCluster:
    """`size` member processes `n1`…`nN` on loopback (`with LocalCluster(3) as c:` starts them).

    `storage_dir`: each process keeps its files (fsync'ed) in `storage_dir/<id>`; None: RAM.
    `node_args`: more `python -m dref_raft` options for every process.
    """

    size: int = 3
    base_port: int | None = None
    storage_dir: Path | None = None
    node_args: list[str] = field(default_factory=list)
    run_dir: Path = field(init=False)
    members: list[MemberProcess] = field(init=False, default_factory=list)
    endpoints: str = field(init=False)
    ids: list[str] = field(init=False)
    ports: list[int] = field(init=False)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError("a cluster has at least one member")
        count = self.size
        if self.base_port is None:
            self.ports = free_ports(count)
        else:
            self.ports = list(range(self.base_port, self.base_port + count))
        self.ids = [f"n{i}" for i in range(1, count + 1)]
        self.endpoints = ",".join(
            f"{i}={HOST}:{p}" for i, p in zip(self.ids, self.ports, strict=True)
        )
        self.run_dir = Path(tempfile.mkdtemp(prefix="dref-raft-cluster-"))
        for node_id, port in zip(self.ids, self.ports, strict=True):
            status_file = self.run_dir / f"{node_id}.json"
            args = [
                *("--node-id", node_id, "--host", HOST, "--port", str(port)),
                *("--endpoints", self.endpoints, "--status-file", str(status_file)),
                "--exit-with-parent",  # killed without stopping them, we leave no orphans
                *self.node_args,
            ]
            if self.storage_dir is not None:
                args += ["--storage-dir", str(self.storage_dir / node_id)]
            log_file = self.run_dir / f"{node_id}.log"
            self.members.append(MemberProcess(node_id, port, args, status_file, log_file))

    # -- life cycle --------------------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> None:
        """Start every process; return once each reports a status (RuntimeError otherwise)."""
        for member in self.members:
            member.spawn()
        deadline = time.monotonic() + timeout
        waiting = list(self.members)
        while waiting:
            for member in list(waiting):
                if member.status() is not None:
                    waiting.remove(member)
                elif not member.running:
                    self.stop()
                    raise RuntimeError(f"raft node {member.node_id} exited: {self.log(member)}")
            if waiting and time.monotonic() > deadline:
                names = ", ".join(m.node_id for m in waiting)
                self.stop()
                raise RuntimeError(f"raft nodes {names} did not start within {timeout:g} s")
            if waiting:
                time.sleep(STATUS_INTERVAL / 2)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM every process, wait up to `grace` seconds in all, SIGKILL what is left."""
        for member in self.members:
            member.terminate()
        deadline = time.monotonic() + grace
        for member in self.members:
            if member.proc is None:
                continue
            try:
                member.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                member.kill()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observation -------------------------------------------------------------------------------
    def member(self, node_id: str) -> MemberProcess:
        for member in self.members:
            if member.node_id == node_id:
                return member
        raise KeyError(node_id)

    def statuses(self) -> dict[str, NodeStatus | None]:
        """Every process's status by node id (None: down or silent)."""
        return {m.node_id: m.status() for m in self.members}

    def leader(self) -> tuple[str, int] | None:
        """(leader id, term) in the newest term the running processes report, if most of them
        name the same leader there (and it says it leads, when it is one of them)."""
        live = [s for s in self.statuses().values() if s is not None]
        if not live:
            return None
        term = max(s.term for s in live)
        current = [s for s in live if s.term == term]
        named, votes = Counter(s.leader for s in current).most_common(1)[0]
        if named is None or votes * 2 <= len(current):
            return None
        own = next((s for s in live if s.node == named), None)
        if own is not None and (own.role != "leader" or own.term != term):
            return None
        return named, term

    def wait_for_leader(self, timeout: float, *, other_than: str | None = None) -> tuple[str, int]:
        """Poll the status files until `leader()` names a node (not `other_than`)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.leader()
            if found is not None and found[0] != other_than:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"no raft leader within {timeout:g} s")
            time.sleep(STATUS_INTERVAL / 2)

    def log(self, member: MemberProcess, lines: int = 5) -> str:
        """The last lines of a member's stderr, joined (for error messages)."""
        try:
            text = member.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"
