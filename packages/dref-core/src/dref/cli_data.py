"""`dref get | set | del | ls | watch | lock | status`: the store from the terminal.

Every command opens the backend like `dref.connect()`: `--backend NAME`, else `DREF_BACKEND`,
`DREF_<BACKEND>_*` variables and the `DREF_CONFIG` file, with the same precedence. Against Raft
the commands are a client of the cluster (`mode="client"`). Values are JSON on the command line
and stored with the configured codec (msgpack by default). `--json` prints one JSON document
(one per line for `watch`). Expected failures are one line on stderr and an exit status of
`EXIT_CODES` (docs/cli.md); see `exit_code_of`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dref.changes import ChangeEvent, Subscription
from dref.context import Connector, DRefContext, connect
from dref.errors import (
    BackendUnavailableError,
    ConfigurationError,
    ConsensusError,
    DRefError,
    ElementNotFoundError,
    LockStolenError,
    PluginError,
    UnsupportedOperationError,
)
from dref.settings import DRefSettings, load_settings

__all__ = [
    "COMMANDS",
    "EXIT_BAD_INPUT",
    "EXIT_CODES",
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_LOCK_LOST",
    "EXIT_NOT_FOUND",
    "EXIT_TIMEOUT",
    "EXIT_UNREACHABLE",
    "EXIT_UNSUPPORTED",
    "exit_code_of",
]

T = TypeVar("T")

EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_UNREACHABLE = 4
EXIT_TIMEOUT = 5
EXIT_CONFIG = 6
EXIT_UNSUPPORTED = 7
EXIT_LOCK_LOST = 8

EXIT_CODES: dict[int, str] = {
    0: "success",
    EXIT_ERROR: "any other error",
    EXIT_BAD_INPUT: "bad input: usage error, VALUE not JSON",
    EXIT_NOT_FOUND: "not found: the element does not exist",
    EXIT_UNREACHABLE: "unreachable: no server or member answered, no leader, no quorum",
    EXIT_TIMEOUT: "timeout: an operation, or `lock --timeout`, ran out of time",
    EXIT_CONFIG: "bad configuration: invalid settings, unknown or unloadable backend",
    EXIT_UNSUPPORTED: "not supported by this backend",
    EXIT_LOCK_LOST: "`lock`: the lock was lost and CMD was terminated",
    130: "interrupted (Ctrl-C) before the command finished; `watch` exits 0",
}

LOCK_GRACE = 5.0
"""Seconds `dref lock` waits after SIGTERM before it sends SIGKILL to CMD (`--grace`)."""


def exit_code_of(exc: BaseException) -> int:
    """The documented exit status of an expected failure (`EXIT_ERROR` for other errors)."""
    if isinstance(exc, ElementNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, (ConfigurationError, PluginError)):
        return EXIT_CONFIG
    if isinstance(exc, UnsupportedOperationError):
        return EXIT_UNSUPPORTED
    if isinstance(exc, LockStolenError):
        return EXIT_LOCK_LOST
    if isinstance(exc, TimeoutError):  # BackendTimeoutError, LockTimeoutError
        return EXIT_TIMEOUT
    if isinstance(exc, (BackendUnavailableError, ConsensusError)):
        return EXIT_UNREACHABLE
    return EXIT_ERROR


class CliFailure(DRefError):
    """A failure the command itself detects (bad VALUE, unsupported flag): message and status."""

    def __init__(self, message: str, code: int) -> None:
        self.code = code
        super().__init__(message)


# -- shared plumbing ----------------------------------------------------------------------------
JSON_META = "dref.json"


def _options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Machine-readable output: one JSON document (one per line for watch).",
    )(f)
    return click.option(
        "--backend",
        metavar="NAME",
        help="Backend id [DREF_BACKEND, the DREF_CONFIG file; default: inmemory].",
    )(f)


def _setup(backend: str | None, as_json: bool) -> Connector:
    """Remember `--json` for error reports, then configure the backend like `dref.connect`."""
    click.get_current_context().meta[JSON_META] = as_json
    name = backend if backend is not None else load_settings(DRefSettings, {}).backend
    options: dict[str, Any] = {"mode": "client"} if name == "raft" else {}
    return connect(name, **options)


EXIT_INTERRUPTED = 130


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


def _jsonable(value: Any) -> Any:
    """A decoded value as JSON: byte strings become base64 text, tuples lists, others str."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _dumps(value: Any) -> str:
    return json.dumps(_jsonable(value), ensure_ascii=False)


def _echo(text: str) -> None:
    click.echo(text)


def _decode(ctx: DRefContext, data: bytes) -> Any:
    return ctx.codec.decode(data, None)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliFailure(
            f"VALUE is not valid JSON ({exc}): {text!r}; quote strings, e.g. '\"text\"'",
            EXIT_BAD_INPUT,
        ) from None


def _err() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False)


# -- get / set / del / ls ----------------------------------------------------------------------
@click.command("get")
@click.argument("name")
@_options
def get_command(name: str, backend: str | None, as_json: bool) -> None:
    """Print the value of NAME as JSON (exit status 3 if it does not exist)."""
    connector = _setup(backend, as_json)

    async def run() -> Any:
        async with connector as ctx:
            data = await ctx.backend.get(name)
            if data is None:
                raise ElementNotFoundError(name)
            return _decode(ctx, data)

    value = _run(run())
    _echo(_dumps({"name": name, "value": value}) if as_json else _dumps(value))


@click.command("set")
@click.argument("name")
@click.argument("value", metavar="VALUE")
@click.option(
    "--ttl",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds until the element expires [default: never].",
)
@_options
def set_command(
    name: str, value: str, ttl: float | None, backend: str | None, as_json: bool
) -> None:
    """Set NAME to VALUE, a JSON document ('42', '"text"', '{"a": [1, 2]}'), stored with the
    configured codec (msgpack by default, readable by dref's Scala and Rust siblings)."""
    connector = _setup(backend, as_json)
    parsed = _parse_value(value)

    async def run() -> None:
        async with connector as ctx:
            await ctx.backend.set(name, ctx.codec.encode(parsed), ttl)

    _run(run())
    if as_json:
        _echo(_dumps({"name": name, "value": parsed, "ttl": ttl}))


@click.command("del")
@click.argument("name")
@_options
def del_command(name: str, backend: str | None, as_json: bool) -> None:
    """Delete NAME (deleting a missing element is not an error)."""
    connector = _setup(backend, as_json)

    async def run() -> None:
        async with connector as ctx:
            await ctx.backend.delete(name)

    _run(run())
    if as_json:
        _echo(_dumps({"name": name, "deleted": True}))


@click.command("ls")
@click.argument("prefix", default="")
@_options
def ls_command(prefix: str, backend: str | None, as_json: bool) -> None:
    """List the names of the live elements starting with PREFIX (all if omitted), sorted.

    Expired elements and the backend's internal keys are never listed.
    """
    connector = _setup(backend, as_json)

    async def run() -> list[str]:
        async with connector as ctx:
            return sorted({name async for name in ctx.names(prefix)})

    names = _run(run())
    if as_json:
        _echo(_dumps(names))
    else:
        for name in names:
            _echo(name)


# -- watch -------------------------------------------------------------------------------------
@click.command("watch")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option(
    "--since",
    metavar="REV",
    help="Replay every change of each NAME after revision REV first, then go on live "
    "(backends that keep revisions; REV from a `--json` line or `get_with_revision`).",
)
@_options
def watch_command(
    names: tuple[str, ...], since: str | None, backend: str | None, as_json: bool
) -> None:
    """Print every change of the NAMEs until Ctrl-C (or SIGTERM), one line each:
    `NAME VALUE` (VALUE as JSON) or `NAME deleted`; with --json
    `{"name": ..., "value": ...}` or `{"name": ..., "deleted": true}`, plus `"revision"`
    on backends that keep revisions."""
    connector = _setup(backend, as_json)
    revision = None if since is None else _revision(since)
    _run(_watch(connector, names, as_json, revision))


def _revision(text: str) -> int:
    try:
        revision = int(text)
    except ValueError:
        revision = -1
    if revision < 0:
        raise CliFailure(
            f"--since: REV must be a revision (an integer >= 0), got {text!r}", EXIT_BAD_INPUT
        )
    return revision


async def _watch(
    connector: Connector, names: tuple[str, ...], as_json: bool, since: int | None = None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with _signals(loop, (signal.SIGINT, signal.SIGTERM), stop.set):
        async with connector as ctx:
            if since is not None and not ctx.backend.capabilities.revisions:
                raise UnsupportedOperationError(
                    f"--since: not supported by this backend ({connector.spec.name!r} keeps no "
                    "change revisions)",
                    capability="revisions",
                )
            subs: list[Subscription] = []
            try:
                for name in dict.fromkeys(names):
                    if since is None:
                        subs.append(await ctx.backend.subscribe(name))
                    else:
                        subs.append(await ctx.backend.subscribe_since(name, since))
                _err().print(f"watching {escape(', '.join(dict.fromkeys(names)))} (Ctrl-C stops)")
                async for event in _merged(subs, stop):
                    _echo(_event_line(ctx, event, as_json))
            finally:
                for sub in subs:
                    await sub.aclose()


async def _merged(subs: list[Subscription], stop: asyncio.Event) -> AsyncIterator[ChangeEvent]:
    """Events of every subscription as they come, until `stop` is set. The hand-over is
    bounded: a slow terminal holds each subscription back, whose own buffer then decides
    (a lagged stream raises `ChangeStreamLaggedError` rather than drop events)."""
    queue: asyncio.Queue[ChangeEvent | BaseException] = asyncio.Queue(maxsize=len(subs) + 1)

    async def pump(sub: Subscription) -> None:
        try:
            async for event in sub:
                await queue.put(event)
        except Exception as exc:
            await queue.put(exc)

    tasks = [asyncio.create_task(pump(sub)) for sub in subs]
    stopping = asyncio.create_task(stop.wait())
    try:
        while True:
            getting = asyncio.create_task(queue.get())
            await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not getting.done():
                getting.cancel()
                return
            item = getting.result()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        for task in (*tasks, stopping):
            task.cancel()
        await asyncio.gather(*tasks, stopping, return_exceptions=True)


def _event_line(ctx: DRefContext, event: ChangeEvent, as_json: bool) -> str:
    doc: dict[str, Any] = {"name": event.name}
    if event.value is None:
        doc["deleted"] = True
        line = f"{event.name} deleted"
    else:
        try:
            doc["value"] = value = _decode(ctx, event.value)
            line = f"{event.name} {_dumps(value)}"
        except DRefError:
            doc["raw"] = raw = base64.b64encode(event.value).decode()
            line = f"{event.name} (undecodable, base64) {raw}"
    if not as_json:
        return line
    if event.revision:
        doc["revision"] = event.revision
    return _dumps(doc)


@contextlib.contextmanager
def _signals(
    loop: asyncio.AbstractEventLoop, signals: tuple[int, ...], handler: Callable[[], None]
) -> Any:
    installed = []
    try:
        for sig in signals:
            try:
                loop.add_signal_handler(sig, handler)
            except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
                continue
            installed.append(sig)
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


# -- lock --------------------------------------------------------------------------------------
@click.command("lock", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.option(
    "--ttl",
    type=click.FloatRange(min=0, min_open=True),
    help="Lease in seconds, renewed while CMD runs [DREF_LOCK_TTL; the backend's].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    help="Give up after waiting this many seconds for the lock (exit status 5) [forever].",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=LOCK_GRACE,
    show_default=True,
    help="When the lock is lost: seconds between SIGTERM and SIGKILL to CMD.",
)
@_options
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- CMD...")
def lock_command(
    name: str,
    ttl: float | None,
    timeout: float | None,
    grace: float,
    backend: str | None,
    as_json: bool,
    cmd: tuple[str, ...],
) -> None:
    """Run CMD while holding the lock NAME; exit with CMD's status.

    The lease is renewed while CMD runs. If the lock is lost, CMD gets SIGTERM, then SIGKILL
    after --grace seconds, and the exit status is 8. SIGTERM and SIGHUP sent to dref are passed
    on to CMD; Ctrl-C reaches CMD from the terminal. A CMD killed by signal N exits 128+N; one
    that cannot be run 127 (not found) or 126 (not executable).
    """
    connector = _setup(backend, as_json)
    code, report = _run(_lock(connector, name, ttl, timeout, grace, list(cmd)))
    if as_json:
        _echo(_dumps(report))
    if code:
        raise click.exceptions.Exit(code)


async def _lock(
    connector: Connector,
    name: str,
    ttl: float | None,
    timeout: float | None,
    grace: float,
    argv: list[str],
) -> tuple[int, dict[str, Any]]:
    report: dict[str, Any] = {"lock": name, "command": argv}
    loop = asyncio.get_running_loop()
    async with connector as ctx:
        proc: asyncio.subprocess.Process | None = None

        def forward(sig: int) -> None:
            if proc is not None and proc.returncode is None:
                proc.send_signal(sig)

        try:
            async with ctx.lock(name, ttl=ttl, timeout=timeout) as guard:
                report["fence"] = guard.fence
                try:
                    proc = await asyncio.create_subprocess_exec(*argv)
                except FileNotFoundError as exc:
                    return _failed_start(report, 127, f"cannot run {argv[0]!r}: {exc.strerror}")
                except PermissionError as exc:
                    return _failed_start(report, 126, f"cannot run {argv[0]!r}: {exc.strerror}")
                report["pid"] = proc.pid
                with contextlib.ExitStack() as stack:
                    for sig in (signal.SIGTERM, signal.SIGHUP):
                        stack.enter_context(_signals(loop, (sig,), _bind(forward, sig)))
                    stack.enter_context(_signals(loop, (signal.SIGINT,), lambda: None))
                    try:
                        status: int = await proc.wait()
                    except asyncio.CancelledError:
                        await _terminate(proc, grace)
                        raise
        except LockStolenError as exc:
            lost_status = proc.returncode if proc is not None else None
            message = f"lock {name} lost ({exc.reason or 'stolen'}); CMD was terminated"
            _err().print(f"[bold red]error:[/] [red]{escape(message)}[/]")
            report.update(lost=True, reason=exc.reason, exit=EXIT_LOCK_LOST, cmd_status=lost_status)
            return EXIT_LOCK_LOST, report
    code = 128 - status if status < 0 else status
    report.update(lost=False, exit=code)
    return code, report


def _bind(fn: Callable[[int], None], sig: int) -> Callable[[], None]:
    return lambda: fn(sig)


def _failed_start(report: dict[str, Any], code: int, message: str) -> tuple[int, dict[str, Any]]:
    _err().print(f"[bold red]error:[/] [red]{escape(message)}[/]")
    report.update(lost=False, exit=code, error=message)
    return code, report


async def _terminate(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM, then SIGKILL if CMD is still running after `grace` seconds; reap it."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    await asyncio.shield(proc.wait())


# -- status ------------------------------------------------------------------------------------
@click.command("status")
@_options
def status_command(backend: str | None, as_json: bool) -> None:
    """Describe the backend: Raft, a table of the members (role, term, commit, applied, lag,
    leader, last contact); Redis, the server (role, version, latency); in-memory, what it is.

    Exit status 4 when no member or server answers."""
    connector = _setup(backend, as_json)

    async def run() -> tuple[str, Any, dict[str, bool]]:
        async with connector as ctx:
            status = await ctx.backend.status()
            caps = ctx.backend.capabilities
            flags = {f: bool(getattr(caps, f)) for f in caps.__dataclass_fields__}
            return status.summary, [dict(row) for row in status.rows], flags

    summary, rows, caps = _run(run())
    name = connector.spec.name
    if as_json:
        document = {"backend": name, "summary": summary, "rows": rows, "capabilities": caps}
        _echo(_dumps(document))
    else:
        out = Console(highlight=False, soft_wrap=True)
        out.print(f"[bold]{escape(name)}[/]: {escape(summary)}")
        if rows:
            out.print(_table(rows))
    if rows and all(row.get("role") == "unreachable" for row in rows):
        raise click.exceptions.Exit(EXIT_UNREACHABLE)


_ROLE_STYLE = {"leader": "bold green", "master": "bold green", "unreachable": "red"}


def _table(rows: list[dict[str, Any]]) -> Table:
    columns = [c for c in rows[0] if c != "error" or any(row.get("error") for row in rows)]
    table = Table()
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            text = "—" if value is None or value == "" else escape(str(value))
            style = _ROLE_STYLE.get(str(value)) if column == "role" else None
            cells.append(f"[{style}]{text}[/]" if style else text)
        table.add_row(*cells)
    return table


COMMANDS = (
    get_command,
    set_command,
    del_command,
    ls_command,
    watch_command,
    lock_command,
    status_command,
)
"""The commands `dref.cli.main` adds."""
