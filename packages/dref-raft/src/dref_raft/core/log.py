"""The core's in-memory log: a snapshot base followed by entries, with persistence marks."""

from __future__ import annotations

from collections.abc import Sequence

from dref_raft.core.types import Entry, Snapshot

__all__ = ["RaftLog"]


class RaftLog:
    """Entries `base+1..last` over the snapshot, plus what the driver must persist.

    `base_seq` is the seq before the first entry held: the snapshot's, or older when a
    compaction kept some entries the snapshot covers (`compact(..., keep=)`, so that a
    follower a little behind catches up from the log rather than a snapshot).
    `unstable_from` is the first seq not yet handed to the driver; `truncate_from` the seq from
    which the driver must delete stored entries before appending (None: nothing to delete).
    """

    def __init__(self, snapshot: Snapshot, entries: Sequence[Entry]) -> None:
        self.snapshot = snapshot
        #: The seq before `entries[0]`, and its term.
        self._base = snapshot.seq
        self._base_term = snapshot.term
        self.entries: list[Entry] = []
        expected = snapshot.seq + 1
        for entry in entries:
            if entry.seq <= snapshot.seq:
                continue
            if entry.seq != expected:
                raise ValueError(
                    f"log entries must be contiguous: expected {expected}, got {entry.seq}"
                )
            self.entries.append(entry)
            expected += 1
        self.unstable_from = self.last_seq + 1
        self.truncate_from: int | None = None

    @property
    def base_seq(self) -> int:
        """The seq before the first entry held (a peer behind it needs the snapshot)."""
        return self._base

    @property
    def last_seq(self) -> int:
        """The highest seq held."""
        return self.entries[-1].seq if self.entries else self._base

    @property
    def last_term(self) -> int:
        """The term of the highest seq held."""
        return self.entries[-1].term if self.entries else self._base_term

    def term_at(self, seq: int) -> int | None:
        """The term of `seq`, or None when it is compacted away (below the base) or absent."""
        base = self._base
        if seq == base:
            return self._base_term
        if seq < base or seq > self.last_seq:
            return None
        return self.entries[seq - base - 1].term

    def entry(self, seq: int) -> Entry:
        """The entry at `seq` (must be held)."""
        return self.entries[seq - self._base - 1]

    def slice(self, first: int, last: int) -> list[Entry]:
        """Entries `first..last` inclusive (all must be held)."""
        base = self._base
        return self.entries[first - base - 1 : last - base]

    def first_seq_of_term_at(self, seq: int) -> int:
        """The first held seq whose term equals the term at `seq` (for reject hints)."""
        term = self.term_at(seq)
        first = seq
        while first - 1 > self._base and self.term_at(first - 1) == term:
            first -= 1
        return first

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries that directly follow the last one."""
        if entries and entries[0].seq != self.last_seq + 1:
            raise ValueError(f"append at {entries[0].seq} after {self.last_seq}")
        self.entries.extend(entries)

    def truncate_after(self, seq: int) -> None:
        """Drop every entry above `seq` (uncommitted suffix) and mark it for deletion."""
        if seq >= self.last_seq:
            return
        del self.entries[seq - self._base :]
        self._mark_truncated(seq + 1)

    def _mark_truncated(self, first: int) -> None:
        if self.truncate_from is None or first < self.truncate_from:
            self.truncate_from = first
        self.unstable_from = min(self.unstable_from, first)

    def restore(self, snapshot: Snapshot, *, keep_suffix: bool) -> None:
        """Rebase on `snapshot`; keep the entries after it only if `keep_suffix` and they match."""
        if keep_suffix and self.term_at(snapshot.seq) == snapshot.term:
            self.entries = self.entries[snapshot.seq - self._base :]
        else:
            if self.entries or self.last_seq > snapshot.seq:
                self._mark_truncated(snapshot.seq + 1)
            self.entries = []
        self.snapshot = snapshot
        self._base, self._base_term = snapshot.seq, snapshot.term
        self.unstable_from = max(self.unstable_from, snapshot.seq + 1)
        if self.truncate_from is not None and self.truncate_from <= snapshot.seq:
            self.truncate_from = snapshot.seq + 1

    def compact(self, snapshot: Snapshot, *, keep: int = 0) -> None:
        """Take `snapshot` (which covers the entries through its seq) and drop those entries
        but the last `keep` of them."""
        if snapshot.seq <= self.snapshot.seq:
            return
        base = max(self._base, snapshot.seq - max(0, keep))
        if base > self._base:
            term = self.term_at(base)
            assert term is not None, "a snapshot covers held entries"
            del self.entries[: base - self._base]
            self._base, self._base_term = base, term
        self.snapshot = snapshot

    def unstable(self) -> list[Entry]:
        """Entries not yet handed to the driver for persistence."""
        if self.unstable_from > self.last_seq:
            return []
        return self.slice(max(self.unstable_from, self._base + 1), self.last_seq)
