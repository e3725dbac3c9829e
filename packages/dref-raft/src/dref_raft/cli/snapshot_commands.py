"""`dref raft snapshot save FILE` / `dref raft snapshot restore FILE --storage-dir DIR`
(docs/operations.md#backup-and-restore)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from dref.errors import DRefError
from dref_raft.errors import CorruptStateError

__all__ = ["snapshot"]


@click.group()
def snapshot() -> None:
    """Back up a running cluster's state, and seed new members' storage from a backup."""


@snapshot.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--address",
    default="127.0.0.1:8082",
    show_default=True,
    help="host:port of the member to save from (any member: its state at its applied seq).",
)
@click.option("--timeout", default=600.0, show_default=True, type=float, help="Seconds.")
def save(file: Path, address: str, timeout: float) -> None:
    """Save a consistent snapshot of a running cluster to FILE (written atomically)."""
    from dref.settings import load_settings
    from dref_raft.client.snapshot_backup import save_snapshot
    from dref_raft.settings import RaftSettings

    try:
        # TLS material from DREF_RAFT_* / [raft], as a client-mode context reads it.
        settings = load_settings(RaftSettings, {"mode": "client"}, table="raft")
        header = asyncio.run(
            save_snapshot(address, file, timeout=timeout, security=settings.security)
        )
    except DRefError as exc:
        raise click.ClickException(f"snapshot save failed: {exc}") from None
    click.echo(
        f"saved {file}: {header.size} bytes, seq {header.last_seq} (term {header.last_term}), "
        f"sha256 {header.sha256.hex()}"
    )


@snapshot.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--storage-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The new member's storage directory (must be empty or missing).",
)
@click.option("--force", is_flag=True, help="Replace the node state in a non-empty directory.")
def restore(file: Path, storage_dir: Path, force: bool) -> None:
    """Verify the backup FILE and seed STORAGE_DIR with it (do this for every new member)."""
    from dref_raft.errors import StorageNotEmptyError
    from dref_raft.storage.snapshot_files import restore_backup

    try:
        restored = restore_backup(file, storage_dir, force=force)
    except CorruptStateError as exc:
        raise click.ClickException(
            f"{exc.path} is not a valid backup: at byte offset {exc.offset}: {exc.reason}"
        ) from None
    except StorageNotEmptyError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"restored {len(restored.entries)} elements at seq {restored.last_seq} "
        f"(term {restored.last_term}) into {storage_dir}"
    )
