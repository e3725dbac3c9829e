"""The error tree: builtin bases users catch, upstream's texts, and errors that survive pickling."""

from __future__ import annotations

import pickle

import pytest

from dref import errors

SAMPLES = [
    errors.BackendNotFoundError("etcd", ["redis", "inmemory"]),
    errors.PluginLoadError("broken", "dref-broken", "ImportError: x"),
    errors.ElementNotFoundError("k"),
    errors.CodecError("bad", name="k"),
    errors.LockStolenError("job", -5, "deleted"),
    errors.LockTimeoutError("job", 1.5),
    errors.StaleFenceError("job", "counter", 3, 4),
    errors.UnsupportedOperationError("no", capability="fenced_writes"),
    errors.ChangeStreamLaggedError("k", 8),
    errors.NotLeaderError("node-2"),
    errors.NoLeaderError(),
    errors.QuorumLostError(),
    errors.BackendUnavailableError("down"),
]


@pytest.mark.parametrize("error", SAMPLES, ids=lambda e: type(e).__name__)
def test_pickle_round_trip(error: errors.DRefError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__


def test_upstream_texts_and_builtin_bases() -> None:
    assert str(errors.ElementNotFoundError("k")) == "Element k not found"
    assert str(errors.LockStolenError("job", -5)) == "Lock job with value -5 has been stolen"
    assert isinstance(errors.LockTimeoutError("job", 1), TimeoutError)
    assert isinstance(errors.BackendTimeoutError("slow"), TimeoutError)
    assert isinstance(errors.BackendUnavailableError("down"), ConnectionError)
    assert isinstance(errors.ElementNotFoundError("k"), KeyError)
    assert all(isinstance(e, errors.DRefError) for e in SAMPLES)
