"""`dref raft node`, `dref raft cluster`, `dref demo --backend raft`: real processes on loopback."""

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
from pathlib import Path
from typing import IO

from click.testing import CliRunner

from dref.cli import main
from dref_raft.cli.local_cluster import NodeStatus, free_ports, read_status, write_status

DREF = [sys.executable, "-m", "dref.cli"]
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("DREF_")}, "COLUMNS": "200"}


class Lines:
    """A child's stdout, read line by line in a thread; `until(pred, timeout)` waits for a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def until(self, predicate: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"no such line within {timeout:g} s; got:\n{''.join(self.seen)}")


@contextlib.contextmanager
def running(args: list[str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_raft_node_help_lists_the_member_options() -> None:
    result = CliRunner().invoke(main, ["raft", "node", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in (
        "--node-id",
        "--host",
        "--port",
        "--endpoints",
        "--storage-dir",
        "--status-file",
    ):
        assert option in result.stdout
    result = CliRunner().invoke(main, ["raft", "--help"], env={"COLUMNS": "200"})
    assert {"node", "cluster", "demo"} <= {
        line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")
    }


def test_python_m_dref_raft_is_dref_raft_node() -> None:
    """One command-line implementation: the module's help is the click command's, option for
    option (the usage line names the program it was started as)."""
    module = subprocess.run(
        [sys.executable, "-m", "dref_raft", "--help"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=True,
    ).stdout
    command = subprocess.run(
        [*DREF, "raft", "node", "--help"], capture_output=True, text=True, env=ENV, timeout=60
    ).stdout
    assert module.startswith("Usage: python -m dref_raft [OPTIONS]")
    assert module.split("\n", 1)[1] == command.split("\n", 1)[1]
    assert "--node-addresses" in module


def test_raft_node_runs_a_member_from_flags_and_env_and_stops_on_sigterm(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    status = tmp_path / "status.json"
    args = [*DREF, "raft", "node", "--port", str(port), "--status-file", str(status)]
    env = {**ENV, "DREF_RAFT_NODE_ID": "solo", "DREF_RAFT_STORAGE_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        lines = Lines(proc)
        lines.until(lambda line: "serving" in line, 20)
        assert lines.seen == [f"dref-raft node solo serving 127.0.0.1:{port}\n"]
        deadline = time.monotonic() + 10
        while (now := read_status(status)) is None or now.role != "leader":
            assert time.monotonic() < deadline, f"no leader: {now}"
            time.sleep(0.05)
        assert (now.node, now.leader, now.pid, now.address) == (
            "solo",
            "solo",
            proc.pid,
            f"127.0.0.1:{port}",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stopped = read_status(status)
    assert stopped is not None
    assert stopped.role == "stopped"
    assert (tmp_path / "data").is_dir()  # DREF_RAFT_STORAGE_DIR was read


def test_a_member_started_with_exit_with_parent_stops_when_its_parent_is_killed(
    tmp_path: Path,
) -> None:
    """`dref raft cluster` starts its members so: killed with SIGKILL, it leaves no orphan."""
    (port,) = free_ports(1)
    status = tmp_path / "status.json"
    member = [
        sys.executable, "-m", "dref_raft", "--node-id", "solo", "--port", str(port),
        "--status-file", str(status), "--exit-with-parent",
    ]  # fmt: skip
    parent_code = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen({member!r}, stdout=subprocess.DEVNULL)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        deadline = time.monotonic() + 20
        while (now := read_status(status)) is None or now.role != "leader":
            assert time.monotonic() < deadline, f"the member did not start: {now}"
            time.sleep(0.05)
        parent.kill()  # no chance to stop its child
        parent.wait(timeout=10)
        deadline = time.monotonic() + 20
        while not gone(pid):
            assert time.monotonic() < deadline, "the member outlived its parent"
            time.sleep(0.05)
        stopped = read_status(status)
        assert stopped is not None
        assert stopped.role == "stopped"  # a graceful stop
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        with contextlib.suppress(ProcessLookupError, NameError):
            os.kill(pid, signal.SIGKILL)


def test_raft_node_reports_a_configuration_error_with_exit_status_2() -> None:
    result = subprocess.run(
        [*DREF, "raft", "node", "--heartbeat-interval", "0.1", "--election-timeout", "0.15"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=30,
    )
    assert result.returncode == 2
    assert "must be at least twice heartbeat_interval" in result.stderr


def test_raft_cluster_shows_a_leader_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    args = [*DREF, "raft", "cluster", "--nodes", "3", "--storage-dir", str(tmp_path)]
    with running(args) as proc:
        lines = Lines(proc)
        serving: dict[str, int] = {}

        def all_serving(line: str) -> bool:
            """The end of a table in which every member knows a leader of term 1 or later (so
            each has started and persisted its term: its storage exists), not only two."""
            cells = [c.strip() for c in line.split("│")]
            if len(cells) > 8 and cells[4] in {"leader", "follower"} and cells[5].isdigit():
                serving[cells[1]] = int(cells[5]) if cells[8] != "—" else 0
            return line.startswith("└") and len(serving) == 3 and min(serving.values()) >= 1

        lines.until(all_serving, 30)
        leader = next(
            cells[1]
            for line in lines.seen
            if len(cells := [c.strip() for c in line.split("│")]) > 4 and cells[4] == "leader"
        )
        pids = [
            int(cells[3])
            for line in lines.seen
            if len(cells := [c.strip() for c in line.split("│")]) > 3 and cells[3].isdigit()
        ]
        assert len(set(pids)) == 3
        assert all(not gone(pid) for pid in set(pids))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        assert lines.until(lambda line: line == "stopped.\n", 5)
    assert all(gone(pid) for pid in set(pids)), "member processes left behind"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n1", "n2", "n3"]
    assert leader in {"n1", "n2", "n3"}


def test_demo_on_raft_runs_every_use_case_and_a_failover() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [*DREF, "demo", "--backend", "raft"], capture_output=True, text=True, env=ENV, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for title in ("Leader election", "Feature flags", "Throttled job", "Live counter", "failover"):
        assert title in out
    assert "every failover raised the fence" in out
    assert "none lost" in out
    assert "first write acknowledged" in out
    assert "│ down " in out  # the killed leader
    assert "All use cases passed" in out
    assert time.monotonic() - started < 45


def test_status_files_are_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "n1.json"
    assert read_status(path) is None
    status = NodeStatus("n1", "leader", 3, 10, 9, "n1", 123, "127.0.0.1:1", time.time())
    write_status(path, status)
    assert read_status(path) == status
    assert [p.name for p in tmp_path.iterdir()] == ["n1.json"]
    path.write_text("{not json")
    assert read_status(path) is None


def test_demo_rejects_unknown_use_cases() -> None:
    result = CliRunner().invoke(main, ["raft", "demo", "nope"])
    assert result.exit_code == 2
