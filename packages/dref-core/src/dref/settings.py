"""Configuration: `DRefSettings` (env prefix `DREF_`) and the loader every backend's settings share.

Sources, highest priority first: options passed to `dref.connect(...)`, environment variables,
the TOML file named by `DREF_CONFIG` (top-level keys for core, a table named after the backend for
the backend's settings, e.g. `[redis]`), then defaults. Invalid configuration raises
`ConfigurationError` naming the field, its environment variable, the value and the reason.
"""

from __future__ import annotations

import functools
import os
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from dref.errors import ConfigurationError

__all__ = ["CONFIG_ENV", "DRefSettings", "RawEnvSource", "load_settings", "split_options"]

CONFIG_ENV = "DREF_CONFIG"
_SECRET_WORDS = ("password", "secret", "token", "key")

S = TypeVar("S", bound=BaseSettings)


class DRefSettings(BaseSettings):
    """Core settings; each field reads `DREF_<FIELD>` from the environment."""

    model_config = SettingsConfigDict(env_prefix="DREF_", extra="forbid", validate_default=True)

    backend: str = Field("inmemory", min_length=1, description="Backend id (entry point name).")
    codec: str = Field("msgpack", min_length=1, description="Default value codec.")
    msgpack_flavor: Literal["scala", "rust"] = Field(
        "scala", description="MsgPack form for byte arrays and Option (see docs/codecs.md)."
    )
    lock_ttl: float | None = Field(
        None, gt=0, description="Lock TTL in seconds; unset: the backend's default."
    )
    lock_refresh_fraction: float = Field(
        1 / 3, gt=0, le=0.5, description="Lock refresh period as a fraction of the lock TTL."
    )
    change_buffer: int = Field(
        1024, ge=1, description="Events buffered per change subscriber before it is lagged."
    )
    disable_plugin_autoload: bool = Field(
        False, description="Do not load `dref.plugins` entry points."
    )
    block_plugins: list[str] = Field(
        default_factory=list, description="Plugin names never to load (comma-separated in env)."
    )

    @field_validator("block_plugins", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Env values are passed raw so that lists can be written "a,b" rather than as JSON.
        return (init_settings, RawEnvSource(settings_cls), file_secret_settings)


class RawEnvSource(PydanticBaseSettingsSource):
    """`<PREFIX><FIELD>` environment variables as raw strings; pydantic validates them.

    Backend settings models may use it too (comma-separated lists rather than JSON).
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        prefix = str(self.config.get("env_prefix", ""))
        out: dict[str, Any] = {}
        for name in self.settings_cls.model_fields:
            raw = os.environ.get(f"{prefix}{name}".upper())
            if raw is not None:
                out[name] = raw
        return out


class _TomlTable(PydanticBaseSettingsSource):
    """Values from one table of the `DREF_CONFIG` TOML file (lowest priority above defaults)."""

    def __init__(self, settings_cls: type[BaseSettings], table: str | None) -> None:
        super().__init__(settings_cls)
        self._table = table

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data = read_config_file()
        if self._table is None:
            return {k: v for k, v in data.items() if not isinstance(v, dict)}
        table = data.get(self._table, {})
        if not isinstance(table, dict):
            raise ConfigurationError(
                f"{os.environ[CONFIG_ENV]}: [{self._table}] must be a table, got {table!r}"
            )
        return table


def read_config_file() -> dict[str, Any]:
    """The parsed TOML file named by `DREF_CONFIG`, or {} when the variable is unset."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return {}
    try:
        with Path(path).open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigurationError(f"{CONFIG_ENV}={path}: no such file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{CONFIG_ENV}={path}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigurationError(f"{CONFIG_ENV}={path}: cannot read: {exc}") from exc


@functools.cache
def _with_file_source(model: type[S], table: str | None) -> type[S]:
    """A subclass of `model` that also reads `table` of the config file, below env."""
    parent = model.settings_customise_sources

    def customise(
        cls: type[BaseSettings],
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = parent(
            settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
        )
        return (*sources, _TomlTable(settings_cls, table))

    namespace = {
        "settings_customise_sources": classmethod(customise),
        "__module__": model.__module__,
        "__qualname__": model.__qualname__,
        "__doc__": model.__doc__,
    }
    return type(model.__name__, (model,), namespace)


def load_settings(model: type[S], options: dict[str, Any], *, table: str | None = None) -> S:
    """Build `model` from options, env and the config file; `ConfigurationError` if invalid."""
    try:
        settings: S = _with_file_source(model, table)(**options)
    except ValidationError as exc:
        raise ConfigurationError(_describe(model, exc)) from exc
    return settings


def split_options(
    models: dict[str, type[BaseSettings]], options: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Route each option to the first model (in order) that has a field of that name."""
    routed: dict[str, dict[str, Any]] = {key: {} for key in models}
    for option, value in options.items():
        for key, model in models.items():
            if option in model.model_fields:
                routed[key][option] = value
                break
        else:
            known = sorted({f for m in models.values() for f in m.model_fields})
            raise ConfigurationError(
                f"unknown option {option!r} (known options: {', '.join(known)})"
            )
    return routed


def _describe(model: type[BaseSettings], exc: ValidationError) -> str:
    prefix = str(model.model_config.get("env_prefix", ""))
    problems = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err["loc"]) or "(settings)"
        top = str(err["loc"][0]) if err["loc"] else ""
        env = f" ({prefix}{top.upper()})" if prefix and top else ""
        value = err.get("input")
        shown = "***" if any(w in top.lower() for w in _SECRET_WORDS) else repr(value)
        if err["type"] == "extra_forbidden":
            problems.append(f"{field}{env}: unknown setting (value {shown})")
        elif err["type"] == "missing":
            problems.append(f"{field}{env}: required but not set")
        else:
            problems.append(f"{field}{env} = {shown}: {err['msg']}")
    return f"invalid {model.__name__} configuration: " + "; ".join(problems)
