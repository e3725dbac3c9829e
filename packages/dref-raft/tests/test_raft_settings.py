"""`RaftSettings` self-checks: the node's own endpoint must match where it binds."""

from __future__ import annotations

import re

import pytest

from dref.errors import ConfigurationError
from dref.settings import load_settings
from dref_raft.settings import RaftSettings

ENDPOINTS = ["n1=127.0.0.1:7001", "n2=127.0.0.1:7002", "n3=127.0.0.1:7003"]


def test_listing_this_node_at_another_address_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(RaftSettings, {"node_id": "n1", "port": 7009, "endpoints": ENDPOINTS})
    text = str(caught.value)
    assert "endpoints (DREF_RAFT_ENDPOINTS)" in text  # the field
    assert "n1=127.0.0.1:7001" in text  # the value
    assert "endpoints list this node (n1) at 127.0.0.1:7001" in text
    assert "binds 127.0.0.1:7009" in text  # the reason


def test_another_host_is_a_mismatch_too() -> None:
    with pytest.raises(ConfigurationError, match=re.escape("binds 10.0.0.9:7001")):
        load_settings(
            RaftSettings,
            {"node_id": "n1", "host": "10.0.0.9", "port": 7001, "endpoints": ENDPOINTS},
        )


def test_the_default_port_counts_as_where_it_binds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREF_PORT", "7002")
    settings = RaftSettings(node_id="n2", endpoints=ENDPOINTS)
    assert settings.address == "127.0.0.1:7002"
    monkeypatch.delenv("DREF_PORT")
    with pytest.raises(ValueError, match=re.escape("binds 127.0.0.1:8082")):
        RaftSettings(node_id="n2", endpoints=ENDPOINTS)


@pytest.mark.parametrize(
    "options",
    [
        {"node_id": "n1", "port": 7001},  # listed where it binds
        {"node_id": "n1", "host": "0.0.0.0", "port": 7001},  # a wildcard bind: the port matches
        {"node_id": "n4", "port": 7004},  # not listed: added at its bind address
        {"mode": "client", "node_id": "n1", "port": 7009},  # a client binds nothing
    ],
)
def test_consistent_settings_pass(options: dict[str, object]) -> None:
    settings = RaftSettings(**options, endpoints=ENDPOINTS)  # type: ignore[arg-type]
    assert settings.node_id in settings.members


def test_a_wildcard_bind_on_another_port_is_a_mismatch() -> None:
    with pytest.raises(ValueError, match=re.escape("binds 0.0.0.0:7009")):
        RaftSettings(node_id="n1", host="0.0.0.0", port=7009, endpoints=ENDPOINTS)
