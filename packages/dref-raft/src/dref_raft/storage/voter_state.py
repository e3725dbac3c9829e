"""`voter-state` (magic DRFT): the current term and the vote cast in it
(docs/protocol.md#storage-voter-state).

Layout: "DRFT" · version 01 · term (8, BE) · voted-for length (4, BE signed; -1 = no vote)
· that many UTF-8 bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dref_raft.errors import CorruptStateError
from dref_raft.storage._binary import (
    I32,
    U64,
    check_length,
    check_preamble,
    check_u63,
    preamble,
    read_i32,
    read_u63,
    require,
)
from dref_raft.storage.layout import PREAMBLE_SIZE, VOTER_STATE_FILE, VOTER_STATE_MAGIC
from dref_raft.storage.media import FileMedium, InMemoryFile, Medium, MemoryMedium

__all__ = [
    "InMemoryVoterStateStore",
    "VoterState",
    "VoterStateStorage",
    "VoterStateStore",
    "decode_voter_state",
    "encode_voter_state",
]

_NO_VOTE = -1
_TERM_OFFSET = PREAMBLE_SIZE
_LENGTH_OFFSET = _TERM_OFFSET + 8
_BODY_OFFSET = _LENGTH_OFFSET + 4


@dataclass(frozen=True, slots=True)
class VoterState:
    """The persisted (term, voted_for); a missing file is `VoterState()`."""

    term: int = 0
    voted_for: str | None = None


def encode_voter_state(state: VoterState) -> bytes:
    """The exact bytes of a `voter-state` file."""
    check_u63("term", state.term)
    if state.voted_for is None:
        return preamble(VOTER_STATE_MAGIC) + U64.pack(state.term) + I32.pack(_NO_VOTE)
    vote = state.voted_for.encode("utf-8")
    check_length("voted_for", len(vote))
    return preamble(VOTER_STATE_MAGIC) + U64.pack(state.term) + I32.pack(len(vote)) + vote


def decode_voter_state(data: bytes, path: str) -> VoterState:
    """Parse a `voter-state` file; anything unexpected raises `CorruptStateError`."""
    check_preamble(data, VOTER_STATE_MAGIC, path)
    require(data, _TERM_OFFSET, 8, "the term", path)
    term = read_u63(data, _TERM_OFFSET, "term", path)
    require(data, _LENGTH_OFFSET, 4, "the voted-for length", path)
    length = read_i32(data, _LENGTH_OFFSET)
    end = _BODY_OFFSET
    voted_for: str | None = None
    if length == _NO_VOTE:
        pass
    elif length < 0:
        raise CorruptStateError(path, _LENGTH_OFFSET, f"negative voted-for length {length}")
    else:
        require(data, _BODY_OFFSET, length, "the voted-for node id", path)
        end = _BODY_OFFSET + length
        try:
            voted_for = data[_BODY_OFFSET:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptStateError(
                path, _BODY_OFFSET + exc.start, "the voted-for node id is not UTF-8"
            ) from exc
    if len(data) != end:
        raise CorruptStateError(path, end, f"{len(data) - end} unexpected bytes after the record")
    return VoterState(term, voted_for)


class VoterStateStorage(Protocol):
    """What the node needs from a voter-state store."""

    def load(self) -> VoterState:
        """The saved state, or `VoterState()` when nothing was saved."""
        ...

    def save(self, state: VoterState) -> None:
        """Persist `state` durably before returning."""
        ...


class _VoterStateStoreBase:
    def __init__(self, medium: Medium) -> None:
        self._medium = medium

    def load(self) -> VoterState:
        """The saved state, or `VoterState()` when nothing was saved."""
        data = self._medium.read()
        return VoterState() if data is None else decode_voter_state(data, self._medium.name)

    def save(self, state: VoterState) -> None:
        """Persist `state` durably (atomic whole-file replace) before returning."""
        self._medium.replace(encode_voter_state(state))


class VoterStateStore(_VoterStateStoreBase):
    """`<directory>/voter-state` on disk."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / VOTER_STATE_FILE
        super().__init__(FileMedium(self.path))


class InMemoryVoterStateStore(InMemoryFile, _VoterStateStoreBase):
    """The same store over bytes in memory; `contents` is what the file would hold."""

    def __init__(self, contents: bytes | None = None) -> None:
        self._memory = MemoryMedium(f"<memory>/{VOTER_STATE_FILE}", contents)
        super().__init__(self._memory)
