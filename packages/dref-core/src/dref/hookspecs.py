"""The whole plugin surface of dref: every hook, when it is called and what it must return.

Plugins implement these with `@dref.hookimpl` in a module that is either the target of a
`dref.backends` entry point (name = backend id, loaded only when that backend is configured) or of a
`dref.plugins` entry point (autoloaded; `DREF_DISABLE_PLUGIN_AUTOLOAD=1` turns that off and
`DREF_BLOCK_PLUGINS=a,b` skips names). Hooks are synchronous; async work lives in the objects they
register. Signatures may only grow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from dref.registries import BackendRegistry, CodecRegistry

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "dref"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def dref_register_backends(registry: BackendRegistry) -> None:
    """Add backends with `registry.add(BackendSpec(...))`; called once when plugins load."""


@hookspec
def dref_register_codecs(registry: CodecRegistry) -> None:
    """Add value codecs with `registry.add(name, factory)`; `factory(settings)` returns a codec."""


@hookspec
def dref_lock_acquired(name: str, token: int, fence: int | None) -> None:
    """Called after a lock was acquired. Exceptions are logged, never propagated."""


@hookspec
def dref_lock_released(name: str, token: int) -> None:
    """Called after a held lock was released by its owner. Exceptions are logged."""


@hookspec
def dref_lock_lost(name: str, token: int, reason: str) -> None:
    """Called when a held lock was lost (stolen, expired, unrenewable). Exceptions are logged."""
