"""MkDocs hooks (`mkdocs.yml`: `hooks:`): pages generated at build time, never committed.

- `reference/configuration.md`: every settings model — core's `DRefSettings` and the model of
  each installed backend (read through `dref.plugins`, so a third-party backend shows up too) —
  with each field's environment variable, type, default and description;
- `reference/cli.md`: the `dref` command and every subcommand, walked through click (contributed
  `dref.cli` groups such as `dref raft` included);
- copies of READMEs outside `docs/` (`benchmarks/README.md`, `examples/README.md`, the example
  plugin's), with their relative links rewritten: a link into `docs/` stays a link, any other
  becomes the repository path as code text;
- `on_page_markdown`: a blank line before a list that directly follows a paragraph line (the
  repository's Markdown writes lists that way; Python-Markdown needs the blank line).
"""

from __future__ import annotations

import inspect
import posixpath
import re
from pathlib import Path
from typing import Any

import click
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent

#: Repository file → page path inside the site.
COPIED = {
    "benchmarks/README.md": "benchmarks-method.md",
    "examples/README.md": "examples.md",
    "examples/dref-example-plugin/README.md": "example-plugin.md",
}
#: Every page this module adds to the site (docs link to them; the repository's link test
#: `packages/dref-core/tests/test_doc_references.py` reads this list).
GENERATED_PAGES = ("reference/configuration.md", "reference/cli.md", *COPIED.values())


# -- configuration reference -----------------------------------------------------------------------
def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation).replace("typing.", "")
    return re.sub(r"\b(?:pathlib|dref\w*)\.(?:\w+\.)*", "", text)


def _default(field: FieldInfo) -> str:
    factory = field.default_factory
    if factory is not None:
        if "random" in getattr(factory, "__name__", ""):
            return "random"
        try:
            return repr(factory())  # type: ignore[call-arg]
        except TypeError:
            return "computed"
    if field.default is PydanticUndefined:
        return "required"
    return repr(field.default)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def settings_table(model: type[Any], table: str | None) -> str:
    """One settings model as a Markdown table."""
    prefix = str(model.model_config.get("env_prefix", ""))
    doc = " ".join((model.__doc__ or "").split())
    where = f"TOML table `[{table}]`" if table else "top-level keys of the TOML file"
    lines = [
        f"`{model.__module__}.{model.__qualname__}` — environment prefix `{prefix}`, {where}.",
        "",
        doc,
        "",
        "| setting | environment variable | type | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for name, field in model.model_fields.items():
        lines.append(
            f"| `{name}` | `{prefix}{name.upper()}` | `{_cell(_type_name(field.annotation))}` "
            f"| `{_cell(_default(field))}` | {_cell(field.description or '')} |"
        )
    return "\n".join(lines) + "\n"


def configuration_page() -> str:
    from dref.plugins import BACKENDS_GROUP, PluginManager, installed
    from dref.settings import DRefSettings

    parts = [
        "# Configuration reference\n",
        "Generated at build time from the settings models of the installed distributions "
        "(`tools/docs_hooks.py`); how the sources combine is in "
        "[Configuration](../configuration.md).\n",
        "## Core (`dref-core`)\n",
        settings_table(DRefSettings, None),
    ]
    manager = PluginManager(DRefSettings(disable_plugin_autoload=True))
    for plugin in installed(BACKENDS_GROUP):
        spec = manager.backend(plugin.name)
        parts.append(f"## `{plugin.name}` (`{plugin.distribution}`)\n")
        if spec.description:
            parts.append(f"{spec.description[0].upper()}{spec.description[1:]}.\n")
        parts.append(settings_table(spec.settings, plugin.name))
    return "\n".join(parts)


# -- CLI reference ---------------------------------------------------------------------------------
def _command_section(command: click.Command, path: list[str], parent: click.Context | None) -> str:
    name = " ".join(path)
    ctx = click.Context(command, info_name=path[-1], parent=parent)
    level = "#" * min(len(path) + 1, 6)
    usage = command.get_usage(ctx).removeprefix("Usage: ")
    out = [f"{level} `{name}`\n", f"```text\n{usage}\n```\n"]
    help_text = inspect.cleandoc(command.help or "")
    if help_text:
        out.append(click.unstyle(help_text).replace("\b\n", "") + "\n")
    rows = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        rows.append(f"| `{_cell(record[0])}` | {_cell(record[1])} |")
    if rows:
        out.append("| option | meaning |\n|---|---|\n" + "\n".join(rows) + "\n")
    if isinstance(command, click.Group):
        for sub_name in command.list_commands(ctx):
            sub = command.get_command(ctx, sub_name)
            if sub is not None and not sub.hidden:
                out.append(_command_section(sub, [*path, sub_name], ctx))
    return "\n".join(out)


def cli_page() -> str:
    from dref.cli import main

    return (
        "# Command line reference\n\n"
        "Generated at build time from the click commands of the installed distributions "
        "(`tools/docs_hooks.py`): core's `dref` and the subcommands that distributions "
        "contribute through the `dref.cli` entry-point group.\n\n"
        + _command_section(main, ["dref"], None)
    )


# -- copied READMEs --------------------------------------------------------------------------------
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def rewrite_links(text: str, source: str, page: str) -> str:
    """Links of repository file `source`, shown as site page `page`, made valid in the site."""

    def fix(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            return match.group(0)
        file_part, _, anchor = target.partition("#")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(source), file_part))
        if resolved.startswith("docs/"):
            rel = posixpath.relpath(resolved[5:], posixpath.dirname(page) or ".")
            return f"[{label}]({rel}{'#' + anchor if anchor else ''})"
        for copied_from, copied_to in COPIED.items():
            if resolved in (copied_from, posixpath.dirname(copied_from)):
                rel = posixpath.relpath(copied_to, posixpath.dirname(page) or ".")
                return f"[{label}]({rel})"
        shown = label if label.strip("`") == resolved else f"{label} (`{resolved}`)"
        return shown if "`" in shown else f"`{resolved}`"

    return _LINK.sub(fix, text)


# -- hooks -----------------------------------------------------------------------------------------
def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    generated = {
        "reference/configuration.md": configuration_page(),
        "reference/cli.md": cli_page(),
    }
    for source, page in COPIED.items():
        text = (ROOT / source).read_text(encoding="utf-8")
        note = f"\n\n*This page is `{source}` of the repository.*\n"
        generated[page] = rewrite_links(text, source, page) + note
    for page, content in generated.items():
        files.append(File.generated(config, page, content=content))
    return files


_LIST_ITEM = re.compile(r"^(\s*)([-*+]|\d+\.) ")


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    out: list[str] = []
    fenced = False
    for line in markdown.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and _LIST_ITEM.match(line) and out:
            previous = out[-1]
            if (
                previous.strip()
                and not _LIST_ITEM.match(previous)
                and not previous.startswith((" ", "\t", "|", "#", ">"))
                and not _LIST_ITEM.match(line).group(1)  # type: ignore[union-attr]
            ):
                out.append("")
        out.append(line)
    return "\n".join(out)
