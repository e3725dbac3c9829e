"""`dref` commands against a real redis-server: `watch` and `lock` as real subprocesses (signals,
streams), the others through CliRunner."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from redis_procs import RedisServer

import dref
from dref.cli import main

DEADLINE = 20.0


def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def env(redis_server: RedisServer) -> dict[str, str]:
    return {"COLUMNS": "200", "DREF_BACKEND": "redis", "DREF_REDIS_URL": redis_server.url}


@pytest.fixture
def prefix() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}:"


def spawn(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dref.cli", *args],
        env={**os.environ, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(stream: Iterator[str] | object, needle: str) -> str:
    """Read lines until one contains `needle` (the pipe's reads are bounded by the test)."""
    for line in stream:  # type: ignore[attr-defined]
        if needle in line:
            return str(line)
    raise AssertionError(f"{needle!r} never printed")


def finish(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()  # a command reading stdin ends
    if proc.poll() is None:
        proc.kill()
    proc.wait(DEADLINE)


def test_get_set_ls_status(env: dict[str, str], prefix: str) -> None:
    assert cli(env, "set", f"{prefix}a", '{"n": 1}')[0] == 0
    assert cli(env, "set", f"{prefix}b", "2", "--ttl", "60")[0] == 0
    assert cli(env, "get", f"{prefix}a") == (0, '{"n": 1}\n', "")
    assert cli(env, "ls", prefix) == (0, f"{prefix}a\n{prefix}b\n", "")
    assert cli(env, "del", f"{prefix}a")[0] == 0
    assert cli(env, "get", f"{prefix}a")[0] == 3
    code, out, _ = cli(env, "status", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["backend"] == "redis"
    (row,) = doc["rows"]
    assert row["role"] == "master"
    assert row["latency_ms"] >= 0


async def test_ls_skips_lock_lines_and_respects_the_key_prefix(
    env: dict[str, str], redis_server: RedisServer, prefix: str
) -> None:
    async with dref.connect("redis", url=redis_server.url) as ctx:
        async with ctx.lock(f"{prefix}job", ttl=5):
            # a second, failed attempt leaves a line of waiters (queue and lives keys)
            assert await ctx.backend.try_lock(f"{prefix}job", b"\x00" * 8, 5) is None
            code, out = await _cli_in_thread(env, "ls", prefix)
            assert (code, out) == (0, f"{prefix}job\n")
        await ctx.backend.delete(f"{prefix}job")
    async with dref.connect("redis", url=redis_server.url, key_prefix="app1/") as ctx:
        await ctx.backend.set(f"{prefix}x", b"\x01")
    code, out = await _cli_in_thread(
        {**env, "DREF_REDIS_KEY_PREFIX": "app1/"}, "ls", prefix, "--json"
    )
    assert code == 0
    assert json.loads(out) == [f"{prefix}x"]


async def _cli_in_thread(env: dict[str, str], *args: str) -> tuple[int, str]:
    code, out, _ = await asyncio.to_thread(cli, env, *args)
    return code, out


def test_unreachable_server_is_exit_4(env: dict[str, str]) -> None:
    code, out, err = cli(
        {**env, "DREF_REDIS_URL": "redis://127.0.0.1:1/0", "DREF_REDIS_CONNECT_TIMEOUT": "0.5"},
        "get",
        "x",
    )
    assert code == 4
    assert out == ""
    assert err.startswith("error: BackendUnavailableError: redis at redis://127.0.0.1:1")


def test_watch_streams_json_lines_until_sigterm(env: dict[str, str], prefix: str) -> None:
    a, b = f"{prefix}a", f"{prefix}b"
    proc = spawn(env, "watch", a, b, "--json")
    try:
        assert proc.stderr is not None
        assert proc.stdout is not None
        wait_for_line(proc.stderr, "watching")  # subscribed from here on
        assert cli(env, "set", a, "1")[0] == 0
        assert cli(env, "set", b, '"two"')[0] == 0
        assert cli(env, "del", a)[0] == 0
        lines = [json.loads(proc.stdout.readline()) for _ in range(3)]
        assert lines == [  # revisions count each element's changes
            {"name": a, "value": 1, "revision": 1},
            {"name": b, "value": "two", "revision": 1},
            {"name": a, "deleted": True, "revision": 2},
        ]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0
    finally:
        finish(proc)


def test_watch_since_replays_then_goes_live(env: dict[str, str], prefix: str) -> None:
    a = f"{prefix}a"
    for value in ("1", "2", "3"):
        assert cli(env, "set", a, value)[0] == 0
    proc = spawn(env, "watch", a, "--since", "1", "--json")
    try:
        assert proc.stderr is not None
        assert proc.stdout is not None
        wait_for_line(proc.stderr, "watching")
        assert cli(env, "set", a, "4")[0] == 0
        lines = [json.loads(proc.stdout.readline()) for _ in range(3)]
        assert lines == [
            {"name": a, "value": 2, "revision": 2},
            {"name": a, "value": 3, "revision": 3},
            {"name": a, "value": 4, "revision": 4},
        ]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0
    finally:
        finish(proc)


def test_lock_holds_the_lock_while_the_command_runs(env: dict[str, str], prefix: str) -> None:
    name = f"{prefix}job"
    script = "import sys; print('in', flush=True); sys.stdin.read()"
    proc = spawn(env, "lock", name, "--ttl", "2", "--", sys.executable, "-c", script)
    try:
        assert proc.stdout is not None
        wait_for_line(proc.stdout, "in")
        code, _, err = cli(env, "lock", name, "--timeout", "0.3", "--", "true")
        assert code == 5
        assert "LockTimeoutError" in err
        assert cli(env, "ls", prefix) == (0, f"{name}\n", "")
    finally:
        finish(proc)


def test_lost_lock_terminates_the_command_and_exits_8(env: dict[str, str], prefix: str) -> None:
    name = f"{prefix}job"
    # The command ignores SIGTERM: dref must follow up with SIGKILL after --grace.
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('running', flush=True); time.sleep(60)"
    )
    argv = ["lock", name, "--ttl", "3", "--grace", "0.5", "--json", "--"]
    proc = spawn(env, *argv, sys.executable, "-c", script)
    try:
        assert proc.stdout is not None
        wait_for_line(proc.stdout, "running")
        started = time.monotonic()
        assert cli(env, "set", name, '"stolen"')[0] == 0  # overwrite the lock's token
        assert proc.wait(DEADLINE) == 8
        assert time.monotonic() - started < 10
        report = json.loads(proc.stdout.read().strip().splitlines()[-1])
        assert report["lost"] is True
        assert report["cmd_status"] == -signal.SIGKILL
        assert proc.stderr is not None
        assert f"lock {name} lost" in proc.stderr.read()
    finally:
        finish(proc)
