"""Snapshots streamed in chunks between dref members (docs/raft-wire.md#snapshot-streaming).

`SnapshotTransfer` is both sides for one `RaftNode`:

* leader: `ship` takes over an `InstallSnapshot` the core sends to a dref peer: the snapshot's
  DRFS file — the member's saved `state-snapshot` when it holds that snapshot (hard-linked, not
  encoded again), else one written once in a worker thread — is streamed with
  `DRefSnapshot/Install` from the offset the follower already holds, one transfer per follower
  at a time; the follower's answer is stepped into the core like an `InstallSnapshotResponse`.
  Upstream peers (and transports without streaming) keep getting the single `InstallSnapshot`
  message;
* follower: `held` / `install` receive the chunks into `IncomingSnapshot` in the storage
  directory, verify them (CRC-32 per chunk, SHA-256 of the file), decode the file and prepare
  the state machine's swap in worker threads, then step the `InstallSnapshot` into the core;
* any member: `save` streams a consistent snapshot of its state machine (for backups);
  `hold_in_file` keeps a snapshot the core holds in memory in its saved file instead, before
  the member takes the next one or installs one; a member with a storage directory holds
  every other snapshot in its file from the start (`holds_in_files`, `held_path`;
  docs/raft.md#large-state).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Protocol, runtime_checkable

from dref_raft.bulk import paused_gc
from dref_raft.core import InstallSnapshot, InstallSnapshotResponse, PeerKind
from dref_raft.errors import ChunkRefusedError
from dref_raft.fsm import ClusterSnapshot, PackedEntries, PreparedInstall, StateChanges
from dref_raft.install_difference import SnapshotDifference, prepare_difference, removed_names
from dref_raft.log_throttle import LogThrottle
from dref_raft.storage.layout import SNAPSHOT_FILE
from dref_raft.storage.snapshot import FileEntries, StateFiller
from dref_raft.storage.snapshot_files import (
    CHUNK_SIZE,
    TAKING_SUFFIX,
    IncomingSnapshot,
    SpooledSnapshot,
    read_chunk,
    relink,
    spool_snapshot,
    spool_state,
    spooled_file,
)
from dref_raft.transport.snapshot_stream import ChunkHook
from dref_raft.wire.snapshot_messages import InstallResult, SnapshotChunk, SnapshotHeader

if TYPE_CHECKING:
    from dref_raft.member.node import RaftNode

__all__ = ["BOOT_HELD_FILE", "SnapshotTransfer", "StreamingTransport", "remove_held"]

logger = logging.getLogger("dref_raft.member.snapshots")

#: A failed transfer to one follower is logged at WARNING at most once per this many seconds.
_FAILURE_LOG_INTERVAL: Final = 10.0
#: The slowest transfer (and install) rate a stream's deadline allows for, in bytes per
#: second, and a minimum: the answer comes once the follower installed the snapshot.
_MIN_RATE: Final = 1024 * 1024
_MIN_TIMEOUT: Final = 60.0
OUTGOING_FILE: Final = "state-snapshot.outgoing"
#: A file holding the core's snapshot at seq N (`FileEntries`): `<HELD_PREFIX>N-<n>`.
HELD_PREFIX: Final = "state-snapshot.held-"
#: The snapshot a member booted from, held in its file.
BOOT_HELD_FILE: Final = f"{HELD_PREFIX}boot"
#: Times a received snapshot is decoded into its file (`_decode_into_file`) before it is
#: decoded whole, when the member applied entries while it was decoded.
_FILE_DECODE_TRIES: Final = 3
_STALE: Final = "stale"


@runtime_checkable
class StreamingTransport(Protocol):
    """A peer transport that can stream snapshots (`grpc_client.PeerClients`)."""

    async def send_snapshot(
        self,
        address: str,
        header: SnapshotHeader,
        path: Path,
        timeout: float,
        *,
        on_chunk: ChunkHook | None = None,
    ) -> InstallResult: ...


class SnapshotTransfer:
    """Streams snapshots to and from the peers of `node`; files live in `directory` (the
    storage directory; None: a temporary directory, removed on `aclose`)."""

    def __init__(self, node: RaftNode, directory: Path | None) -> None:
        self._node = node
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix=f"dref-raft-{node.id}-")
            directory = Path(self._tempdir.name)
        self.directory = directory
        self.incoming = IncomingSnapshot(directory)
        self._receiving = asyncio.Lock()
        self._sending: dict[str, asyncio.Task[None]] = {}
        self._spooled: SpooledSnapshot | None = None
        self._spooling: asyncio.Lock = asyncio.Lock()
        self._held_ids = itertools.count(1)
        self._failures = LogThrottle(_FAILURE_LOG_INTERVAL)
        self.on_chunk: ChunkHook | None = None
        """Called before each chunk is sent (tests inject faults with it)."""
        self.transfers_done = 0
        """Snapshots this node streamed to followers that installed them."""
        self.encoded_for_sending = 0
        """Snapshots this node encoded into a file to stream them (not its saved file: it
        had none at that seq, or no storage directory)."""

    def aclose(self) -> None:
        """Remove the outgoing and held files, or the temporary directory (the node cancelled
        the transfers)."""
        if self._tempdir is not None:
            self._tempdir.cleanup()
        else:
            (self.directory / OUTGOING_FILE).unlink(missing_ok=True)
            remove_held(self.directory)

    # ------------------------------------------------------------------ held snapshot

    @property
    def holds_in_files(self) -> bool:
        """Whether this member keeps its snapshots in their files, not in memory: it has a
        storage directory and streams snapshots to its dref peers (upstream peers are sent
        the state at `applied`, never the core's snapshot)."""
        return self._tempdir is None and isinstance(self._node.transport, StreamingTransport)

    def held_path(self, seq: int) -> Path:
        """A new name for a file that holds the snapshot at `seq` (`FileEntries`): removed
        when that snapshot is replaced, or when the member starts."""
        return self.directory / f"{HELD_PREFIX}{seq}-{next(self._held_ids)}"

    async def hold_in_file(self) -> None:
        """Keep the core's snapshot in its saved file instead of memory, if the member saved
        it and streams snapshots to its dref peers (upstream peers are sent the state at
        `applied`, never this snapshot): its file is hard-linked to a `held_path` (a newer
        save does not change it), the core holds it as `FileEntries`, and the tuples of names
        and values go (0.14x of the data for 100-byte values). A member that keeps its
        snapshots in their files holds in memory only one it booted from or built without a
        file; the others never had tuples."""
        node = self._node
        core = node.core
        held = core.log.snapshot
        entries = held.data.entries
        if not isinstance(entries, PackedEntries) or not self.holds_in_files:
            return
        path = self.held_path(held.seq)
        linked = await asyncio.to_thread(self._link_held, path, held.seq, held.term)
        if not linked:
            return
        data = dataclasses.replace(held.data, entries=FileEntries(path, len(entries)))
        if core.log.snapshot is not held or not core.hold_snapshot_as(data):
            node.track(asyncio.create_task(asyncio.to_thread(path.unlink, missing_ok=True)))
            return
        box = [held.data]
        del held, entries  # `release_snapshot` frees the tuples only if nothing else holds them
        node.release_replaced(box)

    def _link_held(self, path: Path, seq: int, term: int) -> bool:
        try:
            return self._node.link_saved_snapshot(path, seq, term)
        except OSError as exc:  # the snapshot stays in memory
            logger.warning(
                "node %s: cannot keep snapshot seq %d in %s (it stays in memory): %s",
                self._node.id,
                seq,
                path,
                exc,
                extra=self._node.log_fields(),
            )
            return False

    # ------------------------------------------------------------------ leader side

    def ship(self, peer: str, address: str, msg: InstallSnapshot) -> bool:
        """Stream `msg`'s snapshot to `peer` if it is a dref peer and the transport streams;
        False: send `msg` itself."""
        node = self._node
        transport = node.transport
        if not isinstance(transport, StreamingTransport):
            return False
        if node.core.peer_kinds.get(peer) is not PeerKind.DREF:
            return False
        if peer not in self._sending:  # else one is under way; the core asks again later
            task = asyncio.create_task(self._ship(transport, peer, address, msg))
            self._sending[peer] = task
            node.track(task)
            task.add_done_callback(lambda _: self._sending.pop(peer, None))
        return True

    async def _spool(self, msg: InstallSnapshot) -> SpooledSnapshot:
        async with self._spooling:
            spooled = self._spooled
            if spooled is None or (spooled.last_seq, spooled.last_term) != (
                msg.last_seq,
                msg.last_term,
            ):
                path = self.directory / OUTGOING_FILE
                seq, term = msg.last_seq, msg.last_term
                entries = msg.snapshot.entries
                if await asyncio.to_thread(self._node.link_saved_snapshot, path, seq, term):
                    # The file this member saved: streamed as it is, not encoded again.
                    spooled = await asyncio.to_thread(spooled_file, path, seq, term)
                elif isinstance(entries, FileEntries):  # held in its file: streamed as it is
                    await asyncio.to_thread(relink, entries.path, path)
                    spooled = await asyncio.to_thread(spooled_file, path, seq, term)
                else:
                    data = dataclasses.replace(msg.snapshot, last_seq=seq, last_term=term)
                    spooled = await asyncio.to_thread(spool_snapshot, data, path)
                    self.encoded_for_sending += 1
                self._spooled = spooled
            return spooled

    async def _ship(
        self, transport: StreamingTransport, peer: str, address: str, msg: InstallSnapshot
    ) -> None:
        node = self._node
        started = time.perf_counter()
        term, last_seq, last_term = msg.term, msg.last_seq, msg.last_term
        try:
            spooled = await self._spool(msg)
            # The file is all the transfer needs: the snapshot's tuples may go meanwhile
            # (`hold_in_file`).
            del msg
            spooled_at = time.perf_counter()
            header = SnapshotHeader(
                node.id, term, last_seq, last_term, spooled.size, spooled.sha256
            )
            timeout = max(_MIN_TIMEOUT, spooled.size / _MIN_RATE)
            result = await transport.send_snapshot(
                address, header, spooled.path, timeout, on_chunk=self.on_chunk
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken stream, a full disk...: the core asks again
            self._log_failure(peer, f"{type(exc).__name__}: {exc}")
            return
        if not result.complete:
            self._log_failure(peer, f"refused at offset {result.held}: {result.error}")
            return
        self.transfers_done += 1
        done = time.perf_counter()
        logger.info(
            "node %s: snapshot seq %d (%d bytes) streamed to %s and installed there in %.2f s "
            "(written for sending in %.2f s)",
            node.id,
            last_seq,
            spooled.size,
            peer,
            done - spooled_at,
            spooled_at - started,
            extra=node.log_fields(),
        )
        response = InstallSnapshotResponse(
            peer, node.id, result.term, result.success, result.match_seq, True
        )
        node.deliver(response)

    def _log_failure(self, peer: str, reason: str) -> None:
        logger.log(
            logging.WARNING if self._failures.due(peer) else logging.DEBUG,
            "node %s: streaming a snapshot to %s failed (retried, resuming from what it holds): %s",
            self._node.id,
            peer,
            reason,
            extra=self._node.log_fields(),
        )

    # ------------------------------------------------------------------ follower side

    async def held(self, header: SnapshotHeader) -> int:
        """`DRefSnapshot/Held`: bytes of `header`'s snapshot held here (all of them when none
        are needed: this member's log is committed through its seq, or the sender's term is
        over)."""
        core = self._node.core
        if header.last_seq <= core.commit or header.term < core.term:
            return header.size
        return await asyncio.to_thread(self.incoming.held, header)

    async def install(self, chunks: AsyncIterator[SnapshotChunk]) -> InstallResult:
        """`DRefSnapshot/Install`: receive, verify, install (one transfer at a time)."""
        node = self._node
        if self._receiving.locked():
            return InstallResult(False, node.term, 0, False, 0, "another transfer is under way")
        async with self._receiving:
            first = await anext(aiter(chunks), None)
            if first is None or first.header is None:
                return InstallResult(False, node.term, 0, False, 0, "no header in the stream")
            header = first.header
            if header.last_seq <= node.core.commit or header.term < node.core.term:
                # Installed already (commit never shrinks), or from a deposed leader: the core
                # answers without the state (success, or a refusal with the newer term).
                async for _ in chunks:
                    pass
                return await self._step(header, ClusterSnapshot(), header.size)
            incoming = self.incoming
            started = time.perf_counter()
            try:
                await asyncio.to_thread(incoming.begin, header, first.offset)
                held = first.offset
                chunk: SnapshotChunk | None = first
                while chunk is not None:
                    held = await asyncio.to_thread(incoming.write, header, held, chunk)
                    chunk = await anext(aiter(chunks), None)
                if held < header.size:
                    raise ChunkRefusedError(f"the stream ended at {held} of {header.size} bytes")
                received = time.perf_counter()
                await asyncio.to_thread(incoming.seal, header)
                snapshot, prepared, decoded = await self._decode(header)
            except ChunkRefusedError as exc:
                held = await asyncio.to_thread(incoming.held, header)
                logger.warning(
                    "node %s: snapshot seq %d from %s refused (resumes from %d): %s",
                    node.id,
                    header.last_seq,
                    header.leader_id,
                    held,
                    exc,
                    extra=node.log_fields(),
                )
                return InstallResult(False, node.term, 0, False, held, str(exc))
            node.machine.offer_prepared(prepared)
            del prepared
            node.adopt_snapshot_file(incoming.part, snapshot)
            prepared_at = time.perf_counter()
            result = await self._step(header, snapshot, header.size)
            entries = snapshot.entries
            if (
                isinstance(entries, FileEntries)
                and node.core.log.snapshot.data.entries is not entries
            ):
                # Not installed (a newer term, or a snapshot installed meanwhile): its link goes.
                await asyncio.to_thread(entries.path.unlink, missing_ok=True)
            del entries
            await asyncio.to_thread(incoming.discard)
            logger.info(
                "node %s: snapshot seq %d (%d elements, %d bytes) from %s: received in %.2f s, "
                "verified and decoded in %.2f s, prepared in %.2f s, installed in %.2f s",
                node.id,
                header.last_seq,
                len(snapshot.entries),
                header.size,
                header.leader_id,
                received - started,
                decoded - received,
                prepared_at - decoded,
                time.perf_counter() - prepared_at,
                extra=node.log_fields(),
            )
            return result

    async def _decode(
        self, header: SnapshotHeader
    ) -> tuple[ClusterSnapshot, PreparedInstall, float]:
        """The received snapshot (sealed), its install prepared, and when it was decoded: held
        in its file by a member that keeps its snapshots there (`_decode_into_file`), else
        decoded whole."""
        node = self._node
        if self.holds_in_files:
            decoded = await self._decode_into_file(header)
            if decoded is not None:
                return decoded
        # What this member holds is shared, not duplicated: its values, and its snapshot's
        # names, while the rest of that snapshot is held in its file. A member without a
        # state fills the new one as it decodes.
        values = node.machine.values()
        base = node.core.log.snapshot.data.entries
        names = base.names if isinstance(base, PackedEntries) else None
        del base
        await node.hold_snapshot_in_file()
        state: dict[str, bytes] | None = None if values else {}
        snapshot = await asyncio.to_thread(self.incoming.load, header, values, names, state)
        del names
        decoded_at = time.perf_counter()
        prepared = await asyncio.to_thread(node.machine.prepare_install, snapshot, state)
        return snapshot, prepared, decoded_at

    async def _decode_into_file(
        self, header: SnapshotHeader
    ) -> tuple[ClusterSnapshot, PreparedInstall, float] | None:
        """Decode the received snapshot without keeping its entries in memory
        (docs/raft.md#large-state): against the member's values (only the differences kept),
        or straight into the new state by a member without one; its file is hard-linked to a
        `held_path` and the snapshot holds its entries there (`FileEntries`). Decoded again
        when the member applied entries meanwhile (at most `_FILE_DECODE_TRIES` times); None
        when it cannot be (no hard links, names not strictly ascending, still changing)."""
        node = self._node
        await node.hold_snapshot_in_file()  # the previous snapshot's tuples go first
        machine = node.machine
        path = self.held_path(header.last_seq)
        decoded = None
        try:
            for _ in range(_FILE_DECODE_TRIES):
                version, held = machine.version, machine.values()
                got = await asyncio.to_thread(self._decode_in_worker, header, held, version, path)
                if got == _STALE:
                    continue
                decoded = got
                if decoded is None or decoded[1].version == machine.version:
                    break
                decoded = None  # applied meanwhile: decoded again
        finally:
            if decoded is None:
                await asyncio.to_thread(path.unlink, missing_ok=True)
        return decoded

    def _decode_in_worker(
        self, header: SnapshotHeader, held: Mapping[str, bytes], version: int, path: Path
    ) -> tuple[ClusterSnapshot, PreparedInstall, float] | Literal["stale"] | None:
        """`_decode_into_file`'s work, in a worker thread; `_STALE` when `held` changed while
        it was read."""
        incoming = self.incoming
        try:
            relink(incoming.part, path)
        except OSError:
            return None
        try:
            with paused_gc():
                # A new member fills its state as the entries come; one with a state keeps
                # only the differences.
                sink = StateFiller({}) if not held else SnapshotDifference(held)
                snapshot = incoming.load(header, sink=sink)
                if not sink.ascending:
                    return None
                removed: list[str] = []
                if isinstance(sink, SnapshotDifference) and sink.present != len(held):
                    removed = removed_names(held, lambda absent: incoming.load(header, sink=absent))
                decoded = time.perf_counter()
                snapshot = dataclasses.replace(
                    snapshot, entries=FileEntries(path, len(snapshot.entries))
                )
                if isinstance(sink, SnapshotDifference):
                    prepared = prepare_difference(held, snapshot, sink, removed, version)
                else:
                    changes = StateChanges(sink.values)
                    prepared = PreparedInstall(
                        snapshot, sink.values, sink.expiries, changes, version
                    )
        except RuntimeError:  # `held` changed while it was read (dict iteration)
            return _STALE
        return snapshot, prepared, decoded

    async def _step(
        self, header: SnapshotHeader, snapshot: ClusterSnapshot, held: int
    ) -> InstallResult:
        """Hand the core the `InstallSnapshot` the stream carried; its answer."""
        node = self._node
        request = InstallSnapshot(
            header.leader_id,
            node.id,
            header.term,
            snapshot,
            header.last_seq,
            True,
            header.last_term,
        )
        response = await node.handle(request)
        assert isinstance(response, InstallSnapshotResponse)
        return InstallResult(response.success, response.term, response.match_seq, True, held)

    # ------------------------------------------------------------------ backups

    async def save(self) -> AsyncIterator[SnapshotChunk]:
        """`DRefSnapshot/Save`: this member's state machine at its applied seq, in chunks."""
        node = self._node
        state, applied, term = await node.copy_state_at_applied()
        fd, name = tempfile.mkstemp(prefix="save-", suffix=".drfs", dir=self.directory)
        os.close(fd)
        path = Path(name)
        try:
            spooled = await asyncio.to_thread(spool_state, state, applied, term, path)
            header = SnapshotHeader(node.id, node.term, applied, term, spooled.size, spooled.sha256)
            offset = 0
            while offset < spooled.size:
                block = await asyncio.to_thread(read_chunk, path, offset, CHUNK_SIZE)
                if not block:
                    raise OSError(f"{path} ended at {offset} of {spooled.size} bytes")
                yield SnapshotChunk.of(offset, block, header if offset == 0 else None)
                offset += len(block)
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)


def remove_held(directory: Path) -> None:
    """Remove the held snapshot files in `directory` (and a taken one not yet in place):
    when the member starts (`RaftNode.open`, those a crash left) and stops."""
    for path in directory.glob(f"{HELD_PREFIX}*"):
        path.unlink(missing_ok=True)
    (directory / (SNAPSHOT_FILE + TAKING_SUFFIX)).unlink(missing_ok=True)
