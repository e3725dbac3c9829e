"""Backups of a running cluster (docs/operations.md#backup-and-restore).

`save_snapshot` downloads a consistent snapshot from a member (`DRefSnapshot/Save`: the
member's state machine at its applied seq, a prefix of the committed log) into a backup file
— the DRFS bytes and a trailer with their SHA-256 — written atomically. `restore_backup`
(from `dref_raft.storage.snapshot_files`) seeds a new member's storage directory from one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Final

from dref_raft.errors import TransportError
from dref_raft.storage.layout import TMP_SUFFIX
from dref_raft.storage.media import _fsync_directory
from dref_raft.storage.snapshot_files import restore_backup, write_backup_trailer
from dref_raft.transport.grpc_client import SnapshotClient
from dref_raft.transport.security import PLAINTEXT, TransportSecurity
from dref_raft.wire.snapshot_messages import SnapshotHeader

__all__ = ["DEFAULT_SAVE_TIMEOUT", "restore_backup", "save_snapshot"]

DEFAULT_SAVE_TIMEOUT: Final = 600.0
"""Seconds a whole download may take."""


async def save_snapshot(
    address: str,
    path: str | os.PathLike[str],
    *,
    timeout: float = DEFAULT_SAVE_TIMEOUT,
    security: TransportSecurity = PLAINTEXT,
) -> SnapshotHeader:
    """Save the snapshot of the member at `address` (`host:port`) to the backup file `path`.

    The file appears only once complete and verified (written as `<path>.tmp`, fsynced,
    renamed). `security`: TLS material, as a member's (`DRefSnapshot` is a member-only
    service: with TLS it needs a certificate signed by the cluster CA). `TransportError` when
    the member cannot be reached, the stream breaks or the bytes do not match their SHA-256
    (nothing is left at `path` then).
    """
    target = Path(path)
    tmp = target.with_name(target.name + TMP_SUFFIX)
    digest = hashlib.sha256()
    f = await asyncio.to_thread(open, tmp, "wb")
    try:
        try:

            async def write(data: bytes) -> None:
                digest.update(data)
                await asyncio.to_thread(f.write, data)

            async with SnapshotClient(address, security=security) as client:
                header = await client.save(write, timeout=timeout)
        finally:
            await asyncio.to_thread(f.close)
        if digest.digest() != header.sha256:
            raise TransportError(
                f"{address}: the downloaded snapshot's SHA-256 {digest.hexdigest()} does not "
                f"match the member's {header.sha256.hex()}"
            )
        await asyncio.to_thread(write_backup_trailer, tmp, header.sha256)
        await asyncio.to_thread(os.replace, tmp, target)
        await asyncio.to_thread(_fsync_directory, target.parent)
    except BaseException:
        await asyncio.to_thread(tmp.unlink, missing_ok=True)
        raise
    return header
