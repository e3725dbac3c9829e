"""The `dref` console script: `dref demo`, `dref backends`, `dref --version`, the data commands
of `dref.cli_data` (`get`, `set`, `del`, `ls`, `watch`, `lock`, `status`), and plugins' commands.

A `DRefError` (or a failed demo check) is printed as one red line on stderr (and, after `--json`,
as a JSON document on stdout) and exits with the status `dref.cli_data.exit_code_of` gives it
(docs/cli.md): 3 not found, 4 unreachable, 5 timeout, 6 bad configuration, 7 not supported by
this backend, 1 anything else.

Distributions add subcommands through the `dref.cli` entry-point group (name → a click command or
group object, e.g. dref-raft's `raft = "dref_raft.cli:raft"`). An entry point is imported only
when its subcommand is invoked; `dref --help` lists the names from package metadata. A contributed
command may have a `demo` subcommand taking use case keys: `dref demo --backend NAME` runs it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dref.cli_data import COMMANDS, JSON_META, CliFailure, exit_code_of
from dref.context import Connector, connect
from dref.demo import USE_CASES, DemoFailure, run_demo
from dref.errors import DRefError, PluginLoadError
from dref.plugins import BACKENDS_GROUP, PLUGINS_GROUP, installed

__all__ = ["CLI_GROUP", "main"]

CLI_GROUP = "dref.cli"
"""Entry-point group of contributed subcommands: name → a click command or group object."""


def _cli_entry_points() -> dict[str, EntryPoint]:
    """Contributed subcommands by name, from metadata (nothing imported); first one wins."""
    found: dict[str, EntryPoint] = {}
    for ep in sorted(entry_points(group=CLI_GROUP), key=lambda ep: ep.name):
        found.setdefault(ep.name, ep)
    return found


class _Group(click.Group):
    """The `dref` group: dref's errors become one red line and exit status 1; `dref.cli`
    entry points become subcommands, imported only when invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_cli_entry_points()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        ep = _cli_entry_points().get(cmd_name)
        if ep is None:
            return None
        dist = ep.dist.name if ep.dist is not None else None
        try:
            loaded = ep.load()
        except Exception as exc:
            raise PluginLoadError(ep.name, dist, f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(loaded, click.Command):
            raise PluginLoadError(ep.name, dist, f"{ep.value} is not a click command")
        return loaded

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Like click's, but contributed commands are described from metadata, not imported."""
        contributed = _cli_entry_points()
        rows: list[tuple[str, str]] = []
        limit = formatter.width - 6 - max((len(n) for n in self.list_commands(ctx)), default=0)
        for name in self.list_commands(ctx):
            command = self.commands.get(name)
            if command is not None:
                if not command.hidden:
                    rows.append((name, command.get_short_help_str(limit)))
            else:
                ep = contributed[name]
                dist = ep.dist.name if ep.dist is not None else "?"
                rows.append((name, f"Commands of {dist} ({CLI_GROUP} entry point)."))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (DRefError, DemoFailure) as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            code = exc.code if isinstance(exc, CliFailure) else exit_code_of(exc)
            kind = "" if isinstance(exc, CliFailure) else f"{type(exc).__name__}: "
            Console(stderr=True, soft_wrap=True, highlight=False).print(
                f"[bold red]error:[/] [red]{escape(kind)}{escape(message)}[/]"
            )
            if ctx.meta.get(JSON_META):
                error = {"error": type(exc).__name__, "message": message, "exit": code}
                click.echo(json.dumps(error, ensure_ascii=False))
            raise click.exceptions.Exit(code) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dref-core", prog_name="dref", message="%(prog)s %(version)s")
def main() -> None:
    """dref: distributed atomic references, locks and change streams."""


@main.command()
@click.argument(
    "use_cases",
    nargs=-1,
    metavar=f"[{'|'.join(c.key for c in USE_CASES)}]...",
    type=click.Choice([c.key for c in USE_CASES]),
)
@click.option(
    "--backend",
    default="auto",
    show_default=True,
    metavar="auto|inmemory|raft|…",
    help="auto: a local 3-process Raft cluster if dref-raft is installed, else in-memory.",
)
@click.pass_context
def demo(ctx: click.Context, use_cases: tuple[str, ...], backend: str) -> None:
    """Run upstream's use cases: leader election, feature flags, a throttled job with a lock and a
    live counter (all four unless some are named).

    On Raft (`dref raft demo`), a local 3-process cluster; its leader is then killed (SIGKILL) and
    the failover shown. In memory, every node or worker is a separate client of one store.
    """
    if backend == "auto":
        backend = "raft" if "raft" in _cli_entry_points() else "inmemory"
    if backend != "inmemory":
        group = main.get_command(ctx, backend) if backend in _cli_entry_points() else None
        sub = group.get_command(ctx, "demo") if isinstance(group, click.Group) else None
        if sub is None:
            raise click.BadParameter(
                f"no demo for backend {backend!r} is installed (a {CLI_GROUP} entry point "
                f"{backend!r} with a 'demo' subcommand); try --backend inmemory",
                param_hint="--backend",
            )
        ctx.invoke(sub, use_cases=use_cases)
        return
    namespace = f"dref-demo-{secrets.token_hex(4)}"

    def connector() -> Connector:
        return connect("inmemory", namespace=namespace)

    connector()  # fail now, before any output, if the backend is missing or misconfigured
    out = Console(highlight=False)
    out.print("[bold]dref demo[/] — in-memory backend; every node and worker is its own client")
    asyncio.run(run_demo(connector, out, use_cases))
    out.print()
    out.print("[bold green]All use cases passed.[/]")


@main.command()
def backends() -> None:
    """List installed backends and plugins.

    Read from the packages' metadata: nothing is imported.
    """
    out = Console()
    for group, title in ((BACKENDS_GROUP, "Backends"), (PLUGINS_GROUP, "Plugins")):
        table = Table(title=f"{title} ({group})", title_justify="left")
        for column in ("name", "distribution", "version", "entry point"):
            table.add_column(column, overflow="fold")
        found = installed(group)
        for plugin in found:
            table.add_row(
                plugin.name, plugin.distribution or "?", plugin.version or "?", plugin.target
            )
        if not found:
            table.add_row("[dim]none installed[/]", "", "", "")
        out.print(table)


for _command in COMMANDS:
    main.add_command(_command)


if __name__ == "__main__":
    main()
