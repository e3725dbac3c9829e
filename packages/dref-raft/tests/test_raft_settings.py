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


# -- discovery (node_addresses / node_services) ---------------------------------------------------
ADDRESSES = "10.0.0.1, 10.0.0.2,10.0.0.3"


def test_discovery_needs_expected_size_naming_field_and_env() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(RaftSettings, {"node_addresses": ADDRESSES})
    text = str(caught.value)
    assert "node_addresses (DREF_NODE_ADDRESSES) needs expected_size (DREF_RAFT_EXPECTED_SIZE)" in (
        text
    )


def test_upstream_discovery_env_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREF_NODE_ADDRESSES", ADDRESSES)
    monkeypatch.setenv("DREF_PORT", "7100")
    monkeypatch.setenv("DREF_RAFT_EXPECTED_SIZE", "3")
    settings = load_settings(RaftSettings, {})
    assert settings.node_addresses == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert settings.port == 7100
    assert settings.discovers
    assert settings.own_address is None  # host not set: found among the addresses at bootstrap
    monkeypatch.delenv("DREF_NODE_ADDRESSES")
    monkeypatch.setenv("DREF_NODE_SERVICES", "dref.svc.cluster.local")
    assert load_settings(RaftSettings, {}).node_services == ["dref.svc.cluster.local"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"endpoints": ENDPOINTS, "node_addresses": ADDRESSES, "expected_size": 3},
            "endpoints (DREF_RAFT_ENDPOINTS) and node_addresses (DREF_NODE_ADDRESSES) are both",
        ),
        (
            {"node_addresses": ADDRESSES, "node_services": "dref", "expected_size": 3},
            "are both set: choose one discovery",
        ),
        (
            {"node_addresses": ADDRESSES, "expected_size": 2},
            "expected_size (DREF_RAFT_EXPECTED_SIZE) is 2 but node_addresses "
            "(DREF_NODE_ADDRESSES) lists 3",
        ),
        (
            {"node_addresses": "10.0.0.1:7001,10.0.0.2:7001", "expected_size": 2},
            "list addresses without a port",
        ),
        ({"node_addresses": "10.0.0.1,10.0.0.1", "expected_size": 2}, "listed more than once"),
        ({"node_services": "not a name", "expected_size": 1}, "neither an IP address nor a host"),
        (
            {"host": "10.0.0.9", "node_addresses": ADDRESSES, "expected_size": 3},
            "host (DREF_RAFT_HOST) 10.0.0.9 is not among node_addresses",
        ),
        (
            {"host": "node-1.example", "node_services": "dref", "expected_size": 3},
            "host (DREF_RAFT_HOST) node-1.example is not an IP address",
        ),
        (
            {"mode": "client", "node_services": "dref", "expected_size": 3},
            "mode = 'client' needs endpoints",
        ),
        (
            {"transport": "memory", "node_services": "dref", "expected_size": 3},
            "needs transport = 'grpc'",
        ),
    ],
)
def test_inconsistent_discovery_settings_are_refused(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        load_settings(RaftSettings, options)


def test_discovery_addresses_are_normalised_and_host_names_allowed() -> None:
    settings = RaftSettings(
        host="::1", node_addresses="[::1], fd00::2 ,node-3.example", expected_size=3
    )
    assert settings.node_addresses == ["::1", "fd00::2", "node-3.example"]
    assert settings.own_address == "::1"
