"""`dref raft ...`: run one member, or a local multi-process cluster with a live status table.

Contributed to core's `dref` command through the `dref.cli` entry point `raft`:

- `dref raft node --node-id n1 --port 8082 --endpoints n1=...,n2=...,n3=...`: one member (the
  same as `python -m dref_raft`; options override `DREF_RAFT_*` and `DREF_PORT`); or
  `--node-addresses a,b,c --expected-size 3` (or `--node-services`) to discover the members;
- `dref raft cluster --nodes 3`: N member processes on 127.0.0.1 and a live table of their role,
  term, commit and applied indexes and leader, read from each member's status file
  (`dref_raft.cli.local_cluster`); Ctrl-C stops them (SIGTERM, then SIGKILL after a deadline);
  `--tls-cert-file/--tls-key-file/--tls-ca-file` make it a TLS cluster (docs/security.md);
- `dref raft demo`: core's use cases on such a cluster, with a leader killed (`dref demo`);
- `dref raft snapshot save|restore`: backups (`dref_raft.cli.snapshot_commands`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from dref.context import Connector
from dref.context import connect as dref_connect
from dref.errors import BackendUnavailableError, DRefError, ElementNotFoundError
from dref.ref import DRef
from dref.settings import load_settings
from dref_raft.bulk import tune_malloc
from dref_raft.cli.event_loop import EVENT_LOOPS, EventLoopName, loop_factory
from dref_raft.cli.event_loop import run as run_on_loop
from dref_raft.cli.local_cluster import STATUS_INTERVAL, LocalCluster, NodeStatus, write_status
from dref_raft.cli.snapshot_commands import snapshot
from dref_raft.commands import MembersView
from dref_raft.member.loop_stalls import LoopStalls
from dref_raft.settings import RaftSettings, format_address

__all__ = ["raft", "run_member", "status_table"]

PARENT_CHECK = 0.5
"""Seconds between checks of `--exit-with-parent`."""


# -- one member ------------------------------------------------------------------------------------
async def _serve(
    options: dict[str, Any],
    status_file: Path | None,
    metrics_port: int | None = None,
    loop_stalls: LoopStalls | None = None,
    exit_with_parent: bool = False,
) -> None:
    from dref_raft.member.registry import local_members

    sampler = None if loop_stalls is None else asyncio.create_task(loop_stalls.run())
    parent = os.getppid()

    member = await local_members.acquire(load_settings(RaftSettings, options, table="raft"))
    settings = member.settings  # with discovery: the voter set and address found at bootstrap
    stop_metrics: Callable[[], None] | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(_watch_parent(parent, stop)) if exit_with_parent else None
    node = member.node

    def report(role: str | None = None) -> None:
        if status_file is not None:
            status = NodeStatus(
                node=node.id,
                role=role or node.role.value,
                term=node.term,
                commit=node.core.commit,
                applied=node.applied,
                leader=node.leader_id,
                pid=os.getpid(),
                address=settings.address,
                at=time.time(),
            )
            write_status(status_file, status)

    try:
        print(f"dref-raft node {settings.node_id} serving {settings.address}", flush=True)
        if metrics_port is not None:
            from dref_raft.member.metrics import serve_metrics

            # The member's bind address (--host; 127.0.0.1 by default): never wider than gRPC.
            stop_metrics = serve_metrics(settings.host, metrics_port)
            url = f"http://{format_address(settings.host, metrics_port)}/metrics"
            print(f"dref-raft node {settings.node_id} metrics at {url}", flush=True)
        period = STATUS_INTERVAL if status_file is not None else None  # None: just wait
        while not stop.is_set():
            if status_file is not None:
                # A few hundred bytes, but a create and a rename: on a disk busy writing a
                # snapshot they can wait on the file system's journal, so not on the loop.
                await asyncio.to_thread(report)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await stop.wait()
        await _hand_over(node)
    finally:
        if stop_metrics is not None:
            stop_metrics()
        await local_members.release(member)
        report("stopped")
        for task in (sampler, watcher):
            if task is not None:
                task.cancel()


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Set `stop` once the process that started this one is gone (this process was handed to
    another parent): a member of `dref raft cluster` or of a test harness does not outlive it,
    even when it was killed without stopping its members."""
    while os.getppid() == parent:  # noqa: ASYNC110 (nothing signals a parent's exit portably)
        await asyncio.sleep(PARENT_CHECK)
    print(f"dref-raft: parent process {parent} is gone: stopping", file=sys.stderr, flush=True)
    stop.set()


async def _hand_over(node: Any) -> None:
    """A leader that is asked to stop hands leadership to an up-to-date voter first
    (`transfer_leadership`), so the cluster does not wait out an election timeout."""
    if not node.is_leader or node.closed or node.failure is not None:
        return
    try:
        new = await node.transfer_leadership(None, 2 * node.config.election_timeout)
    except DRefError as exc:
        print(f"dref-raft node {node.id}: leadership not handed over: {exc}", file=sys.stderr)
        return
    print(f"dref-raft node {node.id}: handed leadership to {new}", flush=True)


def run_member(
    options: dict[str, Any],
    *,
    status_file: Path | None = None,
    metrics_port: int | None = None,
    event_loop: EventLoopName = "auto",
    loop_stalls: LoopStalls | None = None,
    exit_with_parent: bool = False,
) -> int:
    """Run one member from `options` (over `DREF_RAFT_*`) until SIGTERM/SIGINT; exit status.
    `metrics_port`: serve Prometheus metrics at http://<host>:<port>/metrics; `event_loop`:
    see `dref_raft.cli.event_loop`; `loop_stalls`: sampled while the member runs;
    `exit_with_parent`: also stop (gracefully) once the parent process is gone."""
    try:
        serving = _serve(options, status_file, metrics_port, loop_stalls, exit_with_parent)
        run_on_loop(serving, event_loop)
    except DRefError as exc:
        print(f"dref-raft: {exc}", file=sys.stderr)
        return 2
    return 0


# -- status table ----------------------------------------------------------------------------------
_ROLE_STYLE = {"leader": "bold green", "follower": "cyan", "candidate": "yellow"}


def status_table(cluster: LocalCluster, title: str | None = None) -> Table:
    """node, role, term, commit, applied, leader of every member process."""
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("node", "left"),
        ("address", "left"),
        ("pid", "right"),
        ("role", "left"),
        ("term", "right"),
        ("commit", "right"),
        ("applied", "right"),
        ("leader", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for member in cluster.members:
        status = member.status()
        if status is None:
            table.add_row(member.node_id, member.address, "", "[red]down[/]", "", "", "", "")
            continue
        style = _ROLE_STYLE.get(status.role, "")
        table.add_row(
            status.node,
            status.address,
            str(status.pid),
            f"[{style}]{status.role}[/]" if style else status.role,
            str(status.term),
            str(status.commit),
            str(status.applied),
            status.leader or "—",
        )
    return table


def _summary(cluster: LocalCluster) -> tuple[Any, ...]:
    """What changes the table in a way worth printing again when the output is not a terminal."""
    out: list[Any] = []
    for status in cluster.statuses().values():
        out.append(None if status is None else (status.role, status.term, status.leader))
    return tuple(out)


# -- click -----------------------------------------------------------------------------------------
_HELP = {"help_option_names": ["-h", "--help"]}
_FILE = click.Path(dir_okay=False, path_type=Path)


def _tls_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--tls-cert-file, --tls-key-file, --tls-ca-file (docs/security.md)."""
    for option in reversed(
        [
            click.option(
                "--tls-cert-file", type=_FILE, help="PEM certificate [DREF_RAFT_TLS_CERT_FILE]."
            ),
            click.option(
                "--tls-key-file", type=_FILE, help="Its PEM private key [DREF_RAFT_TLS_KEY_FILE]."
            ),
            click.option(
                "--tls-ca-file",
                type=_FILE,
                help="PEM cluster CA: TLS, peers need a certificate it signed "
                "[DREF_RAFT_TLS_CA_FILE].",
            ),
        ]
    ):
        command = option(command)
    return command


def _limit_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Client authentication and limits of a member (docs/security.md)."""
    for option in reversed(
        [
            click.option(
                "--client-auth",
                type=click.Choice(["none", "token", "mtls"]),
                help="How clients authenticate [DREF_RAFT_CLIENT_AUTH; mtls with TLS, else none].",
            ),
            click.option(
                "--auth-token-file",
                type=_FILE,
                help="File with the bearer token clients must send (--client-auth token) "
                "[DREF_RAFT_AUTH_TOKEN_FILE].",
            ),
            click.option(
                "--client-port",
                type=click.IntRange(1, 65535),
                help="TLS: port for clients without a certificate [DREF_RAFT_CLIENT_PORT].",
            ),
            click.option(
                "--channel/--no-channel",
                default=None,
                help="Serve and use the dref-only TCP channel for sessions [DREF_RAFT_CHANNEL; "
                "on].",
            ),
            click.option(
                "--channel-port",
                type=click.IntRange(0, 65535),
                help="Port of the TCP channel [DREF_RAFT_CHANNEL_PORT; 0: a free port].",
            ),
            click.option("--max-message-bytes", type=int, help="Largest gRPC message [16 MiB]."),
            click.option("--max-name-bytes", type=int, help="Largest element name [4096]."),
            click.option("--max-value-bytes", type=int, help="Largest element value [4 MiB]."),
            click.option(
                "--max-concurrent-streams",
                type=int,
                help="Calls and streams open at once per connection [1024].",
            ),
        ]
    ):
        command = option(command)
    return command


@click.group(context_settings=_HELP)
def raft() -> None:
    """Raft members and local clusters (dref-raft)."""


@raft.command(context_settings=_HELP)
@click.option("--node-id", help="This node's id [DREF_RAFT_NODE_ID; default: random].")
@click.option("--host", help="Bind address [DREF_RAFT_HOST; 127.0.0.1].")
@click.option("--port", type=int, help="gRPC port [DREF_RAFT_PORT, DREF_PORT; 8082].")
@click.option("--endpoints", help="Every member: id=host:port,... [DREF_RAFT_ENDPOINTS].")
@click.option(
    "--node-addresses",
    help="Discover the members: IPs or host names, comma-separated, each on --port "
    "[DREF_RAFT_NODE_ADDRESSES, DREF_NODE_ADDRESSES].",
)
@click.option(
    "--node-services",
    help="Discover the members: DNS names whose A/AAAA records they are "
    "[DREF_RAFT_NODE_SERVICES, DREF_NODE_SERVICES].",
)
@click.option(
    "--expected-size",
    type=int,
    help="Voters of the cluster, self included: required with discovery, else a check "
    "[DREF_RAFT_EXPECTED_SIZE].",
)
@click.option(
    "--discovery-timeout",
    type=float,
    help="Seconds bootstrap waits for --expected-size members [DREF_RAFT_DISCOVERY_TIMEOUT; 60].",
)
@click.option(
    "--storage-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the node's files (fsync'ed) [default: RAM only].",
)
@click.option(
    "--join",
    is_flag=True,
    default=None,
    help="Join a running cluster: wait to be added with `dref raft member add` [DREF_RAFT_JOIN].",
)
@click.option(
    "--learner-promotion-lag",
    type=int,
    help="Promote a learner once at most N entries behind; -1: never [64].",
)
@click.option("--snapshot-every", type=int, help="Snapshot after N applies; 0: never.")
@click.option("--heartbeat-interval", type=float, help="Leader heartbeat, seconds.")
@click.option("--election-timeout", type=float, help="Election timeout, seconds.")
@click.option(
    "--read-mode",
    type=click.Choice(["read_index", "lease"]),
    help="Linearizable reads: read_index (a majority round) or lease (relies on clocks; "
    "docs/raft.md#read-modes) [read_index].",
)
@click.option(
    "--max-clock-drift",
    type=float,
    help="Lease reads: clock drift bound over one election timeout, seconds [0.1].",
)
@click.option(
    "--status-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Keep a JSON status (role, term, commit, applied, leader) in this file.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve Prometheus metrics at http://HOST:PORT/metrics, HOST being --host "
    "(needs dref-raft[metrics]).",
)
@_tls_options
@_limit_options
@click.option(
    "--event-loop",
    type=click.Choice(EVENT_LOOPS),
    default="auto",
    show_default=True,
    help="auto: uvloop when installed (pip install 'dref-raft[uvloop]'), else asyncio's.",
)
@click.option("--log-level", default="WARNING", show_default=True)
@click.option(
    "--log-loop-stalls",
    type=click.FloatRange(1, None),
    metavar="MS",
    help="Log (at INFO) every event-loop stall longer than MS milliseconds.",
)
@click.option(
    "--exit-with-parent",
    is_flag=True,
    help="Stop (gracefully) once the process that started this one is gone "
    "(`dref raft cluster` starts its members so).",
)
def node(
    status_file: Path | None,
    metrics_port: int | None,
    event_loop: EventLoopName,
    log_level: str,
    log_loop_stalls: float | None,
    exit_with_parent: bool,
    **options: Any,
) -> None:
    """Run one Raft member until SIGTERM or Ctrl-C (same as `python -m dref_raft`)."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr)
    # A member may hold a large state: freed memory goes back (docs/raft.md#large-state).
    logging.getLogger(__name__).debug("glibc malloc parameters set: %s", tune_malloc())
    if log_loop_stalls is not None:
        logging.getLogger("dref_raft.member.loop").setLevel(logging.INFO)
    if metrics_port is not None:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise click.UsageError(
                "--metrics-port needs prometheus-client: pip install 'dref-raft[metrics]'"
            ) from None
    if event_loop == "uvloop":
        try:
            loop_factory(event_loop)
        except RuntimeError as exc:
            raise click.UsageError(str(exc)) from None
    given = {k: v for k, v in options.items() if v is not None}
    code = run_member(
        given,
        status_file=status_file,
        metrics_port=metrics_port,
        event_loop=event_loop,
        loop_stalls=None if log_loop_stalls is None else LoopStalls(log_loop_stalls / 1000),
        exit_with_parent=exit_with_parent,
    )
    if code:
        raise click.exceptions.Exit(code)


@raft.command()
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option("--base-port", type=click.IntRange(1, 65535), help="Ports P..P+N-1 [free ports].")
@click.option(
    "--storage-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep node files in DIR/n1, DIR/n2, ... (fsync'ed) [default: RAM only].",
)
@click.option("--refresh", default=0.25, show_default=True, type=click.FloatRange(0.05, 10))
@_tls_options
def cluster(
    nodes: int,
    base_port: int | None,
    storage_dir: Path | None,
    refresh: float,
    **tls: Path | None,
) -> None:
    """Run NODES member processes on 127.0.0.1 with a live status table; Ctrl-C stops them.

    With --tls-* every member uses the same certificate (it must name 127.0.0.1)."""
    out = Console(highlight=False)
    node_args = [
        arg
        for name, path in tls.items()
        if path is not None
        for arg in (f"--{name.replace('_', '-')}", str(path.resolve()))
    ]
    local = LocalCluster(nodes, base_port=base_port, storage_dir=storage_dir, node_args=node_args)
    out.print(f"dref raft cluster: {nodes} member processes, endpoints {local.endpoints}")
    if storage_dir is not None:
        out.print(f"storage: {storage_dir}/<node>")
    stop = _StopFlag()
    previous = signal.signal(signal.SIGINT, stop.set)
    signal.signal(signal.SIGTERM, stop.set)
    try:
        try:
            local.start()
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None
        title = "Raft cluster (Ctrl-C stops it)"
        if out.is_terminal:
            with Live(status_table(local, title), console=out, auto_refresh=False) as live:
                while not stop.wait(refresh):
                    live.update(status_table(local, title), refresh=True)
        else:  # a log, not a screen: print the table whenever a role, term or leader changes
            shown: tuple[Any, ...] | None = None
            while not stop.wait(refresh):
                now = _summary(local)
                if now != shown:
                    out.print(status_table(local, title))
                    shown = now
    finally:
        out.print("stopping the member processes…")
        local.stop()
        signal.signal(signal.SIGINT, previous)
    out.print("stopped.")


# -- membership ------------------------------------------------------------------------------------
_ENDPOINTS = click.option(
    "--endpoints",
    envvar="DREF_RAFT_ENDPOINTS",
    help="Members to ask (the leader is found): id=host:port,... [DREF_RAFT_ENDPOINTS].",
)
_TIMEOUT = click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds for the request, retries included.",
)


@raft.group(context_settings=_HELP)
def member() -> None:
    """Add, remove and list the members of a running cluster (docs/raft.md#membership)."""


def _cluster_members(endpoints: str | None, timeout: float) -> Any:
    from dref.errors import ConfigurationError
    from dref_raft.client.membership import ClusterMembers
    from dref_raft.settings import parse_endpoint

    listed = [part.strip() for part in (endpoints or "").split(",") if part.strip()]
    if not listed:
        raise ConfigurationError(
            "--endpoints (DREF_RAFT_ENDPOINTS) is required: id=host:port of one or more members"
        )
    try:
        parsed = dict(parse_endpoint(text) for text in listed)
    except ValueError as exc:
        raise ConfigurationError(f"--endpoints: {exc}") from None
    # TLS material and limits from DREF_RAFT_* / [raft], as a client-mode context reads them.
    settings = load_settings(RaftSettings, {"mode": "client", "endpoints": listed}, table="raft")
    return ClusterMembers(parsed, timeout=timeout, security=settings.security)


def members_table(view: MembersView, title: str | None = None) -> Table:
    """The configuration as `dref raft member list` prints it."""
    table = Table(title=title, title_justify="left")
    for column in ("node", "address", "role", "match", "behind"):
        table.add_column(column, justify="right" if column in ("match", "behind") else "left")
    for row in view.members:
        role = "voter" if row.voter else "learner"
        if row.node_id == view.leader:
            role = "voter (leader)"
        behind = view.last_seq - row.match_seq
        table.add_row(row.node_id, row.address, role, str(row.match_seq), str(behind))
    return table


def _print_view(view: MembersView) -> None:
    out = Console(highlight=False)
    out.print(members_table(view))
    state = "committed" if view.committed else "not committed yet"
    entry = f"entry {view.config_seq}" if view.config_seq else "the bootstrap configuration"
    out.print(
        f"{len(view.voters)} voters, {len(view.learners)} learners; configuration: {entry} "
        f"({state}); leader {view.leader}, last seq {view.last_seq}"
    )


@member.command("list", context_settings=_HELP)
@_ENDPOINTS
@_TIMEOUT
def member_list(endpoints: str | None, timeout: float) -> None:
    """Print the voters and learners as the leader sees them."""

    async def run() -> MembersView:
        async with _cluster_members(endpoints, timeout) as members:
            view: MembersView = await members.list()
            return view

    _print_view(asyncio.run(run()))


@member.command("add", context_settings=_HELP)
@click.argument("node_id")
@click.argument("address")
@_ENDPOINTS
@_TIMEOUT
@click.option("--no-wait", is_flag=True, help="Return once it is a learner, not a voter.")
@click.option(
    "--promotion-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the promotion to voter (exit 5 when it runs out).",
)
def member_add(
    node_id: str,
    address: str,
    endpoints: str | None,
    timeout: float,
    no_wait: bool,
    promotion_timeout: float,
) -> None:
    """Add NODE_ID at ADDRESS (host:port; started with --join) as a learner and wait until the
    leader promoted it to voter."""

    async def run() -> MembersView:
        async with _cluster_members(endpoints, timeout) as members:
            view: MembersView = await members.add(
                node_id, address, wait=not no_wait, promotion_timeout=promotion_timeout
            )
            return view

    _print_view(asyncio.run(run()))


@member.command("remove", context_settings=_HELP)
@click.argument("node_id")
@_ENDPOINTS
@_TIMEOUT
def member_remove(node_id: str, endpoints: str | None, timeout: float) -> None:
    """Remove NODE_ID (voter or learner); returns once the removal is committed. Stop its
    process afterwards."""

    async def run() -> MembersView:
        async with _cluster_members(endpoints, timeout) as members:
            view: MembersView = await members.remove(node_id)
            return view

    _print_view(asyncio.run(run()))


@raft.group(context_settings=_HELP)
def leader() -> None:
    """Leadership of a running cluster."""


@leader.command("transfer", context_settings=_HELP)
@click.argument("node_id", required=False)
@_ENDPOINTS
@_TIMEOUT
def leader_transfer(node_id: str | None, endpoints: str | None, timeout: float) -> None:
    """Hand leadership to NODE_ID (default: the most up-to-date voter). Exit 5 when it did not
    take over within an election timeout (the old leader leads on)."""

    async def run() -> str:
        async with _cluster_members(endpoints, timeout) as members:
            new: str = await members.transfer_leader(node_id)
            return new

    new = asyncio.run(run())
    Console(highlight=False).print(f"{new} leads")


raft.add_command(snapshot)


# -- demo ------------------------------------------------------------------------------------------
@raft.command()
@click.argument("use_cases", nargs=-1, metavar="[USE_CASE]...")
def demo(use_cases: tuple[str, ...]) -> None:
    """Core's use cases on a local 3-process Raft cluster, then a leader kill and its failover.

    Every node and worker of a use case is its own client (`mode="client"`: DRefRaft to the
    leader, DRefWatch streams from the members) of the 3 member processes.
    """
    from dref.demo import USE_CASES, run_demo

    unknown = set(use_cases) - {case.key for case in USE_CASES}
    if unknown:
        raise click.BadParameter(f"unknown use cases: {', '.join(sorted(unknown))}")
    out = Console(highlight=False)
    out.print(
        "[bold]dref demo[/] — Raft over gRPC: 3 member processes on 127.0.0.1; every node and "
        "worker is its own client of the cluster"
    )
    started = time.monotonic()
    local = LocalCluster(3)
    try:
        local.start()
        local.wait_for_leader(10.0)
        out.print(status_table(local, f"Cluster up in {time.monotonic() - started:.1f} s"))
        options: dict[str, Any] = {"mode": "client", "endpoints": local.endpoints}

        def connect() -> Connector:
            return dref_connect("raft", **options)

        async def run() -> None:
            await run_demo(connect, out, use_cases)
            out.print()
            out.rule(f"[bold]{len(USE_CASES) + 1}. Leader failover", align="left")
            await _failover(local, connect, out)

        asyncio.run(run())
    except (RuntimeError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        local.stop()
    out.print()
    out.print(f"[bold green]All use cases passed[/] in {time.monotonic() - started:.1f} s.")


async def _failover(local: LocalCluster, connect: Callable[[], Connector], out: Console) -> None:
    """Kill -9 the leader process; time the first acknowledged write; check nothing was lost."""
    from dref.demo._common import DemoFailure, bullet, intro, ok

    intro(out, "The leader process is killed with SIGKILL; a client writes at once.")
    old, old_term = await asyncio.to_thread(local.wait_for_leader, 10.0)
    victim = local.member(old)
    async with connect() as ctx:
        marker: DRef[int] = ctx.ref("demo:failover", type=int)
        await marker.set(0)
        counter: DRef[int] = ctx.ref("demo:counter", type=int)
        before = await _value(counter)
        pid = victim.proc.pid if victim.proc is not None else "?"
        bullet(out, old, f"leads in term {old_term}: [red]kill -9[/] (pid {pid})")
        killed = time.perf_counter()
        victim.kill()
        await _write_until_acknowledged(marker, 1, deadline=killed + FAILOVER_DEADLINE)
        acked = time.perf_counter() - killed
        new, new_term = await asyncio.to_thread(
            local.wait_for_leader, FAILOVER_DEADLINE, other_than=old
        )
        bullet(out, new, f"leads in term {new_term}")
        bullet(out, "client", f"first write acknowledged {acked * 1000:.0f} ms after the kill")
        if await marker.get() != 1:
            raise DemoFailure("the acknowledged write is not readable after the failover")
        after = await _value(counter)
        if after != before:
            raise DemoFailure(f"the counter changed across the failover: {before} → {after}")
    out.print(status_table(local, "After the failover"))
    kept = f"; the counter still reads {before}" if before is not None else ""
    ok(out, f"{new} took over from {old} (term {old_term} → {new_term}){kept}")


FAILOVER_DEADLINE = 10.0
"""Seconds the demo and the benchmark allow a failover before they report a failure."""


async def _write_until_acknowledged(ref: DRef[int], value: int, deadline: float) -> None:
    """`ref.set(value)`, retried while the cluster is unavailable, until `deadline`."""
    while True:
        try:
            await ref.set(value)
            return
        except BackendUnavailableError:
            if time.perf_counter() > deadline:
                raise


async def _value(ref: DRef[int]) -> int | None:
    try:
        return await ref.get()
    except ElementNotFoundError:
        return None


class _StopFlag:
    """Set by SIGINT/SIGTERM; `wait(t)` sleeps up to `t` seconds and says whether it is set."""

    def __init__(self) -> None:
        self.flag = False

    def set(self, signum: int, frame: object) -> None:
        self.flag = True

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.flag and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))
        return self.flag
