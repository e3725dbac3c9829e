"""Real multi-process Raft clusters on 127.0.0.1: one `python -m dref_raft` process per node."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dref.errors import ElementNotFoundError
from dref.ref import DRef
from dref_raft.member.registry import Member, local_members
from dref_raft.settings import RaftSettings

__all__ = [
    "NodeProcess",
    "ProcCluster",
    "follower_member",
    "free_ports",
    "lead_elsewhere",
    "wait_until",
]


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` every 20 ms until it holds; AssertionError after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        await asyncio.sleep(0.02)


async def lead_elsewhere(node: Any, timeout: float = 20.0) -> str:
    """Make sure the in-test member `node` (a RaftNode) does not lead; the leader's id.

    Uses `RaftNode.step_down` (bounded: at most `timeout` seconds).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while node.is_leader or node.leader_id is None:
        assert loop.time() < deadline, "no other member became leader"
        if node.is_leader:
            await node.step_down()
        await asyncio.sleep(0.02)
    leader: str = node.leader_id
    return leader


def free_ports(count: int) -> list[int]:
    """Ports the kernel reports free right now (bound once, then released)."""
    socks, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@dataclass
class NodeProcess:
    """A `python -m dref_raft` process: `args`, plus `env` over an environment without the
    caller's `DREF_*` variables. `capture_stderr` keeps its stderr for a start failure (only
    for short-lived nodes: nobody drains the pipe)."""

    node_id: str
    port: int
    args: list[str]
    proc: subprocess.Popen[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    capture_stderr: bool = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        self.launch()
        self.wait_serving(timeout)

    def launch(self) -> None:
        """Start the process (`wait_serving` waits until it serves)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("DREF_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dref_raft", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if self.capture_stderr else subprocess.DEVNULL,
            text=True,
            env={**base, **self.env},
        )

    def wait_serving(self, timeout: float = 20.0) -> str:
        """The line it prints once serving; RuntimeError (with its stderr if captured)."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()  # the process prints one line once serving
        if "serving" not in line or time.monotonic() > deadline:
            proc = self.proc
            if "serving" not in line:  # it exited (or closed stdout): let it finish
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
            self.kill()
            err = proc.stderr.read() if proc.stderr is not None else ""
            raise RuntimeError(f"node {self.node_id} did not start: {line!r} {err}")
        return line

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        """SIGTERM (SIGCONT first, in case it is stopped), then SIGKILL after 5 s."""
        if self.proc is None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None


@dataclass
class ProcCluster:
    """`size` node processes, plus `extra` member slots for in-test members; `node_args` are
    more `python -m dref_raft` options for every process (e.g. timings)."""

    size: int
    storage: Path | None = None
    extra: int = 0
    nodes: list[NodeProcess] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    node_args: tuple[str, ...] = ()
    node_env: dict[str, str] = field(default_factory=dict)
    """More environment for every process (e.g. `DREF_RAFT_WATCH_HISTORY`)."""

    def __post_init__(self) -> None:
        self.ports = free_ports(self.size + self.extra)
        self.ids = [f"p{i}" for i in range(self.size + self.extra)]
        self.endpoints = ",".join(
            f"{i}=127.0.0.1:{p}" for i, p in zip(self.ids, self.ports, strict=True)
        )
        for node_id, port in list(zip(self.ids, self.ports, strict=True))[: self.size]:
            args = ["--node-id", node_id, "--port", str(port), "--endpoints", self.endpoints]
            args.append("--exit-with-parent")  # a killed test run leaves no member behind
            if self.storage is not None:
                args += ["--storage-dir", str(self.storage / node_id)]
            args += self.node_args
            self.nodes.append(NodeProcess(node_id, port, args, env=dict(self.node_env)))

    def member_options(self, index: int) -> dict[str, object]:
        """connect options of the in-test member slot `index` (0-based among the extras)."""
        slot = self.size + index
        return {
            "node_id": self.ids[slot],
            "port": self.ports[slot],
            "endpoints": self.endpoints,
        }

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator[ProcCluster]:
        """Started while inside; stopped on leaving, also when a start failed part way."""
        try:
            self.start()
            yield self
        finally:
            self.stop()


@contextlib.asynccontextmanager
async def follower_member(
    cluster: ProcCluster, index: int = 0, **settings: Any
) -> AsyncIterator[Member]:
    """The in-test member of slot `index` (`settings`: more RaftSettings), held while inside:
    contexts opened on it in the meantime join it instead of starting it again. A leader is
    elected and it is not this member (`lead_elsewhere`)."""
    options = {**cluster.member_options(index), **settings}
    member = await local_members.acquire(RaftSettings.model_validate(options))
    try:
        assert await member.node.wait_for_leader(20) is not None, "no leader within 20 s"
        await lead_elsewhere(member.node)
        yield member
    finally:
        await local_members.release(member)


async def check_session_reads_see_own_writes(refs: Sequence[DRef[Any]], writes: int) -> None:
    """Write 0 … `writes` - 1 round `refs`, each read back at once with
    `consistency="session"`; then delete `refs[0]`, which the next session read no longer
    finds."""
    for n in range(writes):
        ref = refs[n % len(refs)]
        await ref.set(n)
        assert await ref.get(consistency="session") == n
    await refs[0].delete()
    with pytest.raises(ElementNotFoundError):
        await refs[0].get(consistency="session")
