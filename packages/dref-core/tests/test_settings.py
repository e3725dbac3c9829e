"""Configuration: sources, priority, and errors that name field, variable, value and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

import dref
from dref.errors import ConfigurationError
from dref.settings import DRefSettings, load_settings


def test_defaults() -> None:
    settings = load_settings(DRefSettings, {})
    assert settings.backend == "inmemory"
    assert settings.codec == "msgpack"
    assert settings.lock_ttl is None


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREF_LOCK_TTL", "7.5")
    monkeypatch.setenv("DREF_BLOCK_PLUGINS", "a, b")
    settings = load_settings(DRefSettings, {})
    assert settings.lock_ttl == 7.5
    assert settings.block_plugins == ["a", "b"]


def test_options_beat_env_which_beats_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "dref.toml"
    config.write_text(
        'codec = "json"\nlock_ttl = 3\nchange_buffer = 9\n[inmemory]\nnamespace = "f"\n'
    )
    monkeypatch.setenv("DREF_CONFIG", str(config))
    monkeypatch.setenv("DREF_LOCK_TTL", "4")
    settings = load_settings(DRefSettings, {"change_buffer": 10})
    assert (settings.codec, settings.lock_ttl, settings.change_buffer) == ("json", 4, 10)


async def test_backend_table_of_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "dref.toml"
    config.write_text('backend = "inmemory"\n[inmemory]\nnamespace = "from-file"\n')
    monkeypatch.setenv("DREF_CONFIG", str(config))
    connector = dref.connect()
    assert connector.backend_settings.namespace == "from-file"
    monkeypatch.setenv("DREF_INMEMORY_NAMESPACE", "from-env")
    assert dref.connect().backend_settings.namespace == "from-env"
    assert dref.connect(namespace="from-option").backend_settings.namespace == "from-option"


def test_invalid_value_names_field_variable_value_and_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DREF_LOCK_TTL", "soon")
    with pytest.raises(ConfigurationError) as info:
        dref.connect("inmemory")
    message = str(info.value)
    assert "lock_ttl" in message
    assert "DREF_LOCK_TTL" in message
    assert "'soon'" in message
    assert "valid number" in message


def test_out_of_range_value() -> None:
    with pytest.raises(ConfigurationError, match=r"lock_ttl \(DREF_LOCK_TTL\) = -1"):
        dref.connect("inmemory", lock_ttl=-1)


def test_unknown_option_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown option 'nmespace'.*namespace"):
        dref.connect("inmemory", nmespace="x")


def test_unknown_key_in_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "dref.toml"
    config.write_text("lock_tll = 3\n")
    monkeypatch.setenv("DREF_CONFIG", str(config))
    with pytest.raises(ConfigurationError, match=r"lock_tll.*unknown setting"):
        dref.connect()


def test_broken_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "dref.toml"
    config.write_text("backend = \n")
    monkeypatch.setenv("DREF_CONFIG", str(config))
    with pytest.raises(ConfigurationError, match="invalid TOML"):
        dref.connect()
    monkeypatch.setenv("DREF_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigurationError, match="no such file"):
        dref.connect()


def test_unknown_codec_fails_at_connect() -> None:
    with pytest.raises(ConfigurationError, match=r"'yaml'.*registered codecs: json, msgpack"):
        dref.connect("inmemory", codec="yaml")


def test_backend_setting_is_validated_by_the_backend_model() -> None:
    with pytest.raises(ConfigurationError, match=r"default_ttl \(DREF_INMEMORY_DEFAULT_TTL\) = 0"):
        dref.connect("inmemory", default_ttl=0)
