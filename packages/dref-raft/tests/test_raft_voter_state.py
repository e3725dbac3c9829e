"""`voter-state` (DRFT): golden bytes, round trips and corruption
(docs/protocol.md#golden-voter-state, #storage-voter-state)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from raft_helpers import U63, NodeStorage, load_vectors

from dref_raft.storage import CorruptStateError, VoterState
from dref_raft.storage.layout import VOTER_STATE_FILE
from dref_raft.storage.voter_state import decode_voter_state, encode_voter_state

VECTORS = load_vectors("voter_state_vectors")["vectors"]


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_golden_vectors_encode_and_decode(vector: dict[str, object]) -> None:
    state = VoterState(int(str(vector["term"])), vector["voted_for"])  # type: ignore[arg-type]
    data = bytes.fromhex(str(vector["hex"]))
    assert encode_voter_state(state) == data
    assert decode_voter_state(data, "voter-state") == state


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_a_store_writes_and_reads_the_golden_bytes(
    node: NodeStorage, vector: dict[str, str]
) -> None:
    state = VoterState(int(vector["term"]), vector["voted_for"])
    node.voter_state().save(state)
    assert node.read(VOTER_STATE_FILE) == bytes.fromhex(vector["hex"])
    assert node.voter_state().load() == state


def test_a_missing_file_is_term_0_without_vote(node: NodeStorage) -> None:
    assert node.voter_state().load() == VoterState(0, None)
    assert node.read(VOTER_STATE_FILE) is None  # loading created nothing


def test_the_latest_save_wins_across_restarts(node: NodeStorage) -> None:
    node.voter_state().save(VoterState(3, "a"))
    node.voter_state().save(VoterState(4, None))
    assert node.voter_state().load() == VoterState(4, None)


def test_an_empty_vote_is_kept_apart_from_no_vote() -> None:
    data = encode_voter_state(VoterState(1, ""))
    assert data.hex().endswith("00000000")
    assert decode_voter_state(data, "voter-state") == VoterState(1, "")


@given(st.builds(VoterState, U63, st.none() | st.text(max_size=20)))
def test_every_voter_state_round_trips(state: VoterState) -> None:
    assert decode_voter_state(encode_voter_state(state), "voter-state") == state


@pytest.mark.parametrize("term", [-1, 2**63])
def test_terms_upstream_cannot_store_are_refused(node: NodeStorage, term: int) -> None:
    with pytest.raises(ValueError, match="term"):
        node.voter_state().save(VoterState(term, None))
    assert node.read(VOTER_STATE_FILE) is None


GOOD = bytes.fromhex("4452465401000000000000002a000000066e6f64652d37")  # term 42, "node-7"


@pytest.mark.parametrize(
    ("data", "offset", "reason"),
    [
        (b"DRFX" + GOOD[4:], 0, "bad magic"),
        (b"", 0, "bad magic"),
        (GOOD[:4] + b"\x02" + GOOD[5:], 4, "unknown format version 2"),
        (GOOD[:6], 6, "truncated"),  # upstream's own truncation test
        (GOOD[:15], 15, "truncated"),  # inside the length
        (GOOD[:20], 20, "truncated"),  # inside the node id
        (GOOD[:13] + bytes.fromhex("fffffffe"), 13, "negative voted-for length -2"),
        (GOOD[:13] + bytes.fromhex("00000002c328"), 17, "not UTF-8"),
        (GOOD + b"\x00", len(GOOD), "1 unexpected bytes"),
        (GOOD[:5] + bytes.fromhex("8000000000000000") + GOOD[13:], 5, "term"),
    ],
    ids=[
        "bad-magic",
        "empty-file",
        "unknown-version",
        "truncated-term",
        "truncated-length",
        "truncated-vote",
        "negative-length",
        "bad-utf8",
        "trailing-bytes",
        "term-too-large",
    ],
)
def test_a_corrupt_file_raises_and_is_left_untouched(
    node: NodeStorage, data: bytes, offset: int, reason: str
) -> None:
    node.write(VOTER_STATE_FILE, data)
    with pytest.raises(CorruptStateError, match=reason) as caught:
        node.voter_state().load()
    assert caught.value.path.endswith(VOTER_STATE_FILE)
    assert caught.value.offset == offset
    assert f"offset {offset}" in str(caught.value)
    assert node.read(VOTER_STATE_FILE) == data
