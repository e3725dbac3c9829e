"""Private Redis processes for tests and benchmarks: servers, Sentinel groups, clusters.

Every process listens on a free 127.0.0.1 port, keeps nothing on disk (`--save ""`, no AOF), is
awaited with a deadline (PING or a state check), and is stopped by its process id. The binaries
are found on PATH (`redis-server`, `redis-cli`).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import redis

__all__ = [
    "RedisCluster",
    "RedisServer",
    "SentinelGroup",
    "free_port",
    "redis_server_binary",
    "wait_for",
]

START_DEADLINE = 15.0


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(check: Callable[[], bool], what: str, deadline: float = START_DEADLINE) -> None:
    """Poll `check` until true; fail with `what` after `deadline` seconds."""
    end = time.monotonic() + deadline
    delay = 0.005
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > end:
            raise TimeoutError(f"{what} not reached within {deadline} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


@dataclass
class RedisServer:
    """One `redis-server` process (or a sentinel with `sentinel=True`)."""

    port: int = 0
    args: list[str] = field(default_factory=list)
    password: str | None = None
    sentinel_config: str | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dref-redis-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=2,
            socket_connect_timeout=2,
            **kwargs,  # type: ignore[arg-type]
        )

    def start(self) -> RedisServer:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not on PATH; tools/ensure-redis-server installs it")
        for _ in range(5):
            if not self.port:
                self.port = free_port()
            cmd = [binary]
            if self.sentinel_config is not None:
                conf = self.workdir / f"sentinel-{self.port}.conf"
                conf.write_text(f"port {self.port}\n{self.sentinel_config}")
                cmd += [str(conf), "--sentinel"]
            cmd += [
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.workdir),
                "--logfile", str(self.workdir / f"redis-{self.port}.log"),
            ]  # fmt: skip
            if self.sentinel_config is None:
                cmd += ["--save", "", "--appendonly", "no"]
            if self.password is not None:
                cmd += ["--requirepass", self.password]
            cmd += self.args
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
            )
            try:
                wait_for(self._answers, f"redis on port {self.port}")
                return self
            except TimeoutError:
                self.stop()
                self.port = 0  # the port was probably taken meanwhile: try another
        raise RuntimeError(f"could not start redis-server; see logs in {self.workdir}")

    def _answers(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise TimeoutError("redis-server exited")
        return bool(self.client().ping())

    def stop(self) -> None:
        """Kill the process (no shutdown save) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> RedisServer:
        """Kill and start again on the same port, empty (no persistence)."""
        port = self.port
        self.stop()
        self.port = port
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing."""
        assert self.proc is not None
        self.proc.send_signal(19)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(18)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def running(server: RedisServer) -> Iterator[RedisServer]:
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


class _StartedTogether:
    """Processes started as one: if any of them fails to start, the ones started are stopped."""

    def start(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError


@dataclass
class SentinelGroup(_StartedTogether):
    """A primary, one replica and three sentinels monitoring them as `master_name`."""

    master_name: str = "dref-primary"
    primary: RedisServer = field(default_factory=RedisServer)
    replica: RedisServer = field(default_factory=RedisServer)
    sentinels: list[RedisServer] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self.sentinels]

    def _start(self) -> None:
        self.primary.start()
        self.replica.args = ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica.start()
        config = (
            f"sentinel monitor {self.master_name} 127.0.0.1 {self.primary.port} 2\n"
            f"sentinel down-after-milliseconds {self.master_name} 1000\n"
            f"sentinel failover-timeout {self.master_name} 5000\n"
            f"sentinel parallel-syncs {self.master_name} 1\n"
        )
        for _ in range(3):
            self.sentinels.append(RedisServer(sentinel_config=config).start())
        wait_for(self._ready, "sentinel group ready")

    def _ready(self) -> bool:
        info = self.primary.client().info("replication")
        if int(info.get("connected_slaves", 0)) < 1:
            return False
        for sentinel in self.sentinels:
            client = sentinel.client()
            if len(client.sentinel_sentinels(self.master_name)) < 2:
                return False
            if not client.sentinel_slaves(self.master_name):
                return False
        return True

    def master_port(self) -> int:
        """The primary's port as the first sentinel reports it."""
        _host, port = self.sentinels[0].client().sentinel_get_master_addr_by_name(self.master_name)
        return int(port)

    def cleanup(self) -> None:
        for server in (*self.sentinels, self.replica, self.primary):
            server.cleanup()


@dataclass
class RedisCluster(_StartedTogether):
    """Three cluster-enabled masters joined by `redis-cli --cluster create`."""

    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def _start(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not on PATH")
        for _ in range(3):
            node = RedisServer()
            node.port = free_port()
            node.args = [
                "--cluster-enabled", "yes",
                "--cluster-port", str(free_port()),
                "--cluster-config-file", str(node.workdir / f"nodes-{node.port}.conf"),
                "--cluster-node-timeout", "2000",
            ]  # fmt: skip
            self.nodes.append(node.start())
        subprocess.run(
            [cli, "--cluster", "create", *(n.address for n in self.nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=60,
        )  # fmt: skip
        wait_for(self._ok, "cluster state ok")

    def _ok(self) -> bool:
        for node in self.nodes:
            info = node.client().execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text:
                return False
        return True

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
