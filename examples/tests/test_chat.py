"""The chat demo: three replicas as real processes discovering each other through upstream's
variables, and the compose file that runs them in containers."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_examples import _env, _free_port, _Lines

CHAT = Path(__file__).resolve().parent.parent / "chat"
REPLICAS = ("chat-1", "chat-2", "chat-3")


def test_three_replicas_discover_each_other_and_chat() -> None:
    port = _free_port()  # every replica on its own loopback address, all on one port (DREF_PORT)
    addresses = [f"127.0.0.{i}" for i in range(1, 4)]
    procs = []
    try:
        for name, host in zip(REPLICAS, addresses, strict=True):
            env = {
                **_env(),
                "DREF_NODE_ADDRESSES": ",".join(addresses),
                "DREF_PORT": str(port),
                "DREF_RAFT_HOST": host,  # every 127.0.0.x is local here: say which is ours
                "DREF_RAFT_EXPECTED_SIZE": "3",
                "DREF_RAFT_NODE_ID": name,
                "CHAT_NAME": name,
                "CHAT_EVERY": "0.3",
            }
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(CHAT / "chat.py")],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        for proc in procs:  # each replica hears every replica, itself included
            lines = _Lines(proc)
            heard: set[str] = set()
            while heard != set(REPLICAS):
                found = lines.expect(r"(chat-\d) says: hello #\d+ from \1", timeout=60)
                heard.add(found.group(1))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_compose_file_runs_three_replicas_as_upstream() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((CHAT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert sorted(services) == list(REPLICAS)
    host_ports = set()
    for name, service in services.items():
        assert service["build"] == {"context": "../..", "dockerfile": "examples/chat/Dockerfile"}
        env = service["environment"]
        assert env["DREF_NODE_SERVICES"] == "dref-interop"
        assert env["DREF_PORT"] == "8082"
        assert env["DREF_RAFT_EXPECTED_SIZE"] == str(len(REPLICAS))
        assert env["DREF_RAFT_NODE_ID"] == name
        assert env["CHAT_NAME"] == name
        assert "dref-interop" in service["networks"]["chat"]["aliases"]
        (mapping,) = service["ports"]
        host, container = mapping.split(":")
        assert container == "8082"
        host_ports.add(host)
    assert len(host_ports) == len(REPLICAS)
    assert "chat" in compose["networks"]
    dockerfile = (CHAT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^EXPOSE 8082$", dockerfile, re.MULTILINE)
    for copied in re.findall(r"^COPY (\S+)", dockerfile, re.MULTILINE):
        assert (CHAT.parent.parent / copied).exists(), copied


def _has_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _has_compose(), reason="docker compose is not installed")
def test_docker_compose_config_accepts_the_file() -> None:
    done = subprocess.run(
        ["docker", "compose", "-f", str(CHAT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
