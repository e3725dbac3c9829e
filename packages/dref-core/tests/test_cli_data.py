"""`dref get | set | del | ls | watch | lock | status` in process (CliRunner) on the in-memory
backend; every exit status of docs/cli.md that needs no server. Redis and Raft: their tests."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from click.testing import CliRunner

import dref
from dref.cli import main
from dref.cli_data import EXIT_CODES, exit_code_of
from dref.errors import (
    BackendTimeoutError,
    BackendUnavailableError,
    LockTimeoutError,
    NoLeaderError,
    QuorumLostError,
    UnsupportedOperationError,
)


@pytest.fixture
def env() -> dict[str, str]:
    """A fresh in-memory namespace (every invocation of this process shares its store)."""
    return {"COLUMNS": "200", "DREF_INMEMORY_NAMESPACE": f"cli-{uuid.uuid4().hex}"}


def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_set_get_del_round_trip_as_json(env: dict[str, str]) -> None:
    assert run(env, "set", "flags", '{"dark": true, "max": [1, 2]}') == (0, "", "")
    assert run(env, "get", "flags") == (0, '{"dark": true, "max": [1, 2]}\n', "")
    code, out, _ = run(env, "get", "flags", "--json")
    assert json.loads(out) == {"name": "flags", "value": {"dark": True, "max": [1, 2]}}
    assert run(env, "del", "flags") == (0, "", "")
    code, out, err = run(env, "get", "flags")
    assert (code, out) == (3, "")
    assert err == "error: ElementNotFoundError: Element flags not found\n"


async def test_set_stores_msgpack_that_the_api_reads(env: dict[str, str]) -> None:
    # The CLI runs its own event loop: call it from a thread (the store is this process's).
    assert (await asyncio.to_thread(run, env, "set", "visits", "41"))[0] == 0
    namespace = env["DREF_INMEMORY_NAMESPACE"]
    async with dref.connect("inmemory", namespace=namespace) as ctx:
        assert await ctx.backend.get("visits") == b"\x29"  # msgpack positive fixint 41
        ref = ctx.ref("visits", type=int)
        await ref.update(lambda n: n + 1)
    assert await asyncio.to_thread(run, env, "get", "visits") == (0, "42\n", "")


def test_set_with_ttl_expires(env: dict[str, str]) -> None:
    assert run(env, "set", "short", '"x"', "--ttl", "30")[0] == 0
    assert run(env, "ls") == (0, "short\n", "")
    code, _, err = run(env, "set", "short", '"x"', "--ttl", "0")
    assert code == 2
    assert "--ttl" in err


def test_bad_json_value_is_exit_2_with_one_line(env: dict[str, str]) -> None:
    code, out, err = run(env, "set", "a", "not json")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert err.startswith("error: VALUE is not valid JSON")
    assert "Traceback" not in err


def test_ls_sorted_by_prefix_and_json(env: dict[str, str]) -> None:
    for name in ("user:b", "user:a", "job:1"):
        assert run(env, "set", name, "1")[0] == 0
    assert run(env, "ls") == (0, "job:1\nuser:a\nuser:b\n", "")
    assert run(env, "ls", "user:") == (0, "user:a\nuser:b\n", "")
    code, out, _ = run(env, "ls", "nothing", "--json")
    assert (code, json.loads(out)) == (0, [])


def test_status_of_the_in_memory_backend(env: dict[str, str]) -> None:
    code, out, _ = run(env, "status")
    assert code == 0
    assert out.startswith("inmemory: in-memory store")
    assert "own" in out
    code, out, _ = run(env, "status", "--json")
    doc = json.loads(out)
    assert doc["backend"] == "inmemory"
    assert doc["rows"] == []
    assert doc["capabilities"]["names"] is True


def test_watch_since_needs_a_revision_exit_2(env: dict[str, str]) -> None:
    for bad in ("soon", "-1"):
        code, out, err = run(env, "watch", "a", "--since", bad, "--json")
        assert code == 2
        assert json.loads(out)["exit"] == 2
        assert f"--since: REV must be a revision (an integer >= 0), got '{bad}'" in err


def test_watch_since_without_revisions_is_exit_7(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from dref_inmemory.backend import InMemoryBackend

    caps = replace(InMemoryBackend.capabilities, revisions=False)
    monkeypatch.setattr(InMemoryBackend, "capabilities", caps)
    code, out, err = run(env, "watch", "a", "--since", "12", "--json")
    assert code == 7
    assert json.loads(out)["exit"] == 7
    assert "--since: not supported by this backend ('inmemory' keeps no change revisions)" in err


def test_bad_configuration_is_exit_6(env: dict[str, str]) -> None:
    code, _, err = run({**env, "DREF_LOCK_TTL": "soon"}, "get", "a")
    assert code == 6
    assert "lock_ttl (DREF_LOCK_TTL)" in err
    code, _, err = run(env, "get", "a", "--backend", "nope")
    assert code == 6
    assert "BackendNotFoundError" in err
    code, out, _ = run({**env, "DREF_BACKEND": "nope"}, "ls", "--json")
    assert code == 6
    assert json.loads(out)["error"] == "BackendNotFoundError"


def test_backend_from_the_config_file(env: dict[str, str], tmp_path: object) -> None:
    from pathlib import Path

    config = Path(str(tmp_path)) / "dref.toml"
    config.write_text('backend = "nope"\n')
    code, _, err = run({**env, "DREF_CONFIG": str(config)}, "ls")
    assert code == 6
    assert "'nope'" in err
    # --backend wins over the file
    assert run({**env, "DREF_CONFIG": str(config)}, "ls", "--backend", "inmemory")[0] == 0


def test_lock_runs_the_command_and_exits_with_its_status(env: dict[str, str]) -> None:
    # The in-memory store lives in this process: the lock is real, the command a subprocess.
    assert run(env, "lock", "job", "--ttl", "5", "--", "true")[0] == 0
    assert run(env, "lock", "job", "--", "sh", "-c", "exit 3")[0] == 3
    code, out, _ = run(env, "lock", "job", "--json", "--", "sh", "-c", "kill -TERM $$")
    assert code == 128 + 15
    assert json.loads(out.splitlines()[-1])["exit"] == 143
    code, _, err = run(env, "lock", "job", "--", "no-such-command-dref")
    assert code == 127
    assert "cannot run 'no-such-command-dref'" in err
    assert run(env, "ls") == (0, "", "")  # released


async def test_lock_timeout_is_exit_5(env: dict[str, str]) -> None:
    namespace = env["DREF_INMEMORY_NAMESPACE"]
    async with dref.connect("inmemory", namespace=namespace) as ctx, ctx.lock("busy", ttl=30):
        # CliRunner runs asyncio.run: call it from a thread while this loop holds the lock.
        code, _, err = await asyncio.to_thread(
            run, env, "lock", "busy", "--timeout", "0.2", "--", "true"
        )
    assert code == 5
    assert "LockTimeoutError: Lock busy not acquired within 0.2 s" in err


def test_exit_codes_of_errors() -> None:
    assert exit_code_of(BackendUnavailableError("x")) == 4
    assert exit_code_of(NoLeaderError()) == 4
    assert exit_code_of(QuorumLostError()) == 4
    assert exit_code_of(BackendTimeoutError("x")) == 5
    assert exit_code_of(LockTimeoutError("l", 1)) == 5
    assert exit_code_of(RuntimeError()) == 1
    assert exit_code_of(UnsupportedOperationError("no names")) == 7
    assert set(EXIT_CODES) == {0, 1, 2, 3, 4, 5, 6, 7, 8, 130}
