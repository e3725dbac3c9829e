"""The `dref` console script: `dref demo`, `dref backends`, `dref --version`.

A `DRefError` (or a failed demo check) is printed as one red line on stderr and exits with 1.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dref.context import Connector, connect
from dref.demo import USE_CASES, DemoFailure, run_demo
from dref.errors import DRefError
from dref.plugins import BACKENDS_GROUP, PLUGINS_GROUP, installed

__all__ = ["main"]


class _Group(click.Group):
    """A click group that turns dref's errors into a one-line message and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (DRefError, DemoFailure) as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            Console(stderr=True, soft_wrap=True, highlight=False).print(
                f"[bold red]error:[/] [red]{escape(type(exc).__name__)}: {escape(message)}[/]"
            )
            raise click.exceptions.Exit(1) from None


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
def demo(use_cases: tuple[str, ...]) -> None:
    """Run upstream's use cases on the in-memory backend.

    Leader election, feature flags, a throttled job with a lock and a live counter (all four unless
    some are named); every node or worker is a separate client of one in-memory store.
    """
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


if __name__ == "__main__":
    main()
