"""Every example program, run as its users run it: one command, real processes, bounded time.

The launchers wait on conditions (lines their workers print), never on sleeps; each test bounds
the whole run. The dashboard is checked end to end in headless Chromium (Debian's `chromium`,
driven by Playwright, never a downloaded browser).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
RUN_TIMEOUT = 120


def _env() -> dict[str, str]:
    """The environment without DREF_* settings: the examples start their own Raft cluster."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DREF_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.parametrize(
    ("script", "last_line"),
    [
        ("leader_election.py", r"took over from worker-\w after [\d.]+ s \(fence \d+ -> \d+\)"),
        ("feature_flags.py", r"every worker saw every version"),
        ("cron_job.py", r"6 runs, one per slot, never two at once"),
        ("live_counter.py", r"3 writers added 50 each; the watcher saw \d+"),
    ],
)
def test_use_case_program(script: str, last_line: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "use_cases" / script)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(last_line, done.stdout.strip().splitlines()[-1]), done.stdout[-3000:]


class _Lines:
    """A process's stdout lines, read by a thread, waited on with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.queue: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.queue.put(line.rstrip("\n"))

    def expect(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.queue.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no line matching {pattern!r}; output: {self.seen[-20:]}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dashboard() -> Iterator[tuple[str, dict[str, str]]]:
    """The dashboard app on a free port with no writers of its own: (url, the env of its store)."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLES / "dashboard" / "app.py"),
            "--port",
            str(port),
            "--writers",
            "0",
        ],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = _Lines(proc)
        found = lines.expect(r"other processes: (.*) python ")
        store_env = dict(pair.split("=", 1) for pair in found.group(1).split())
        lines.expect(r"serving (http://\S+)")
        deadline = time.monotonic() + 30
        while True:  # uvicorn binds after the line above: wait until it accepts
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, lines.seen
            assert proc.poll() is None, lines.seen
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/", store_env
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _bump(store_env: dict[str, str], name: str, times: int) -> None:
    subprocess.run(
        [sys.executable, str(EXAMPLES / "dashboard" / "app.py"), "bump", name, str(times)],
        env={**_env(), **store_env},
        check=True,
        timeout=60,
    )


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")
def test_dashboard_updates_live_in_chromium(dashboard: tuple[str, dict[str, str]]) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    url, store_env = dashboard
    profile = tempfile.mkdtemp(prefix="dref-chromium-")
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(  # a fresh --user-data-dir
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            try:
                page = browser.new_page()
                page.route(  # nothing but the dashboard: no traffic beyond 127.0.0.1
                    re.compile(r"^(?!http://127\.0\.0\.1[:/]).*"), lambda route: route.abort()
                )
                page.goto(url)
                page.wait_for_function(
                    "document.getElementById('status').textContent === 'live'"
                    " && /^\\d+$/.test(document.getElementById('visits').textContent)",
                    timeout=30_000,
                )
                before = int(page.text_content("#visits") or "")
                signups = int(page.text_content("#signups") or "")
                _bump(store_env, "visits", 3)  # another process, another client of the cluster
                page.wait_for_function(
                    f"document.getElementById('visits').textContent === '{before + 3}'",
                    timeout=30_000,
                )
                _bump(store_env, "signups", 1)
                page.wait_for_function(
                    f"document.getElementById('signups').textContent === '{signups + 1}'",
                    timeout=30_000,
                )
            finally:
                browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
