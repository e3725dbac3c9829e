"""The whole plugin surface of dref: every hook, when it is called, with what, and what then.

Where implementations live
    A module marks functions with `@dref.hookimpl` and is named by an entry point: in the group
    `dref.backends` (name = the backend id; imported only when that backend is configured) or
    `dref.plugins` (autoloaded; `DREF_DISABLE_PLUGIN_AUTOLOAD=1` turns that off and
    `DREF_BLOCK_PLUGINS=a,b` skips names). Every `dref.connect()` creates its own plugin manager
    (`ctx.plugins`, a `dref.plugins.PluginManager`) and registers, in this order: dref's built-in
    plugin, the `dref.plugins` entry points, then the configured backend's module.

Calling conventions
    - Hooks are called with keyword arguments. An implementation declares any subset of the
      parameters below, by name, in any order; signatures only grow, so declare what you use.
    - Hooks are synchronous and run on the event loop's thread: keep them short and never block.
      Async work lives in the objects they register, or in a task they start.
    - Implementations run one after another, in the order their plugins were registered (so a
      registry entry that is already taken fails the newcomer), except that `tryfirst=True`
      ones run before the others and `trylast=True` ones after. No hook collects results (none
      is `firstresult`): every hook returns None.
    - A module is rejected with `PluginLoadError` (naming the entry point and its distribution)
      when it fails to import, when an implementation has a parameter its hook does not have,
      when it implements a `dref_*` hook that is not defined here (a typo: mark it
      `optionalhook=True` if it is meant for a newer dref), or when it uses a hook wrapper
      (`hookwrapper=True` / `wrapper=True`: dref hooks take none).

Two kinds of hooks
    Registration hooks (`dref_register_backends`, `dref_register_codecs`) add to a registry
    inside `dref.connect()`, before anything is opened. An implementation that raises an
    `Exception`, or returns anything but None (e.g. an `async def` implementation's coroutine,
    or a spec returned instead of added), fails `dref.connect()` with `PluginLoadError` naming
    the plugin that implemented it and its distribution, the cause chained as `__cause__`; the
    implementations after it are not called.

    Observer hooks (`dref_lock_*`) report what already happened. An implementation that raises
    an `Exception` is logged (logger `dref.plugins`, level ERROR, with the traceback) and the
    others still run; the operation goes on as if there were no plugin. One that returns an
    awaitable (an `async def` implementation) is logged as an error, and a coroutine is closed
    unawaited.

    Exceptions that are not `Exception`s (`KeyboardInterrupt`, `SystemExit`) propagate from
    both kinds.

Core calls each hook only through its typed method of `dref.plugins.PluginManager`
(`register_backends`, `register_codecs`, `lock_acquired`, `lock_released`, `lock_lost`).
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


# -- registration hooks ---------------------------------------------------------------------------
@hookspec
def dref_register_backends(registry: BackendRegistry) -> None:
    """Add backends: `registry.add(BackendSpec(name, settings_model, open))`.

    Called: once per `dref.connect()`, after the configured backend's `dref.backends` module was
    imported and registered, on every registered plugin. The spec is then looked up under the
    configured backend id; a plugin may add several, but only ids that are also `dref.backends`
    entry point names can be configured.

    `registry`: a fresh `dref.registries.BackendRegistry` for this call. `registry.add` raises
    `PluginError` when a different spec is already registered under the same name (adding the
    same spec object again is a no-op).

    Returns None. When the configured id ends up without a spec, `dref.connect()` raises
    `PluginLoadError` ("registers no backend named ...") naming the backend's entry point.

    Raises: any exception (including the `PluginError` of a duplicate name) fails
    `dref.connect()` with `PluginLoadError` naming this plugin and its distribution, the
    exception chained; no backend is opened.
    """


@hookspec
def dref_register_codecs(registry: CodecRegistry) -> None:
    """Add value codecs: `registry.add(name, factory)`; `factory(settings)` returns a `Codec`.

    Called: once per `dref.connect()` on dref's built-in plugin (`msgpack`, `json`) and the
    autoloaded `dref.plugins` modules when the context's plugin manager is created, then on the
    configured backend's module right after it is imported, so a backend may ship its own codec.
    Afterwards `dref.connect()` resolves `codec` (`DREF_CODEC`): an unknown name raises
    `ConfigurationError` listing the registered codecs.

    `registry`: the context's `dref.registries.CodecRegistry` (`ctx.plugins.codecs`).
    `registry.add` raises `PluginError` when a different factory is registered under the same
    name (adding the same factory object again is a no-op). A factory is called with the core
    `DRefSettings` in `dref.connect()` and whenever a context or `ctx.make(..., codec=name)` /
    `ctx.ref(..., codec=name)` needs that codec; what it raises propagates from that call.

    Returns None.

    Raises: any exception (including the `PluginError` of a duplicate name) fails
    `dref.connect()` with `PluginLoadError` naming this plugin and its distribution, the
    exception chained.
    """


# -- observer hooks -------------------------------------------------------------------------------
@hookspec
def dref_lock_acquired(name: str, token: int, fence: int | None) -> None:
    """A lock was acquired: its body is about to run.

    Called: on entering `async with ctx.lock(...)`, once the backend granted the lock and before
    the body runs, in the task that entered; also for the `lock:<element>` locks that `modify`
    and friends take on a backend without native compare-and-set. Never called for an attempt
    that timed out or was cancelled.

    `name`: the lock's name (its backend key). `token`: this hold's lock value as a signed 64-bit
    integer (`guard.token_int`, as upstream prints it and `LockStolenError.token` carries it).
    `fence`: `guard.fence`, growing with every acquisition of the lock, or None when the backend
    has no fencing.

    Returns None; a returned value is ignored.

    Raises: logged, never propagated; the lock stays held and the body runs.
    """


@hookspec
def dref_lock_released(name: str, token: int) -> None:
    """A held lock was released by its owner.

    Called: on leaving `async with ctx.lock(...)` (normally or with an exception), after the
    owner-checked `release_lock` confirmed that the lock was still ours and deleted it. Not
    called when the lock was lost (`dref_lock_lost` instead: for each hold at most one of the
    two is called), when the release raised a `DRefError` (the key then expires by its TTL; a
    warning is logged), or when the release was cut short by cancellation (it is sent again in the
    background).

    `name`, `token`: as in `dref_lock_acquired`.

    Returns None; a returned value is ignored.

    Raises: logged, never propagated; the `async with` exits as it would without the plugin.
    """


@hookspec
def dref_lock_lost(name: str, token: int, reason: str) -> None:
    """A held lock was lost: someone else may hold it now.

    Called: once per hold, at the first sign of loss. While the body runs, from the lock's
    watchdog task, before it cancels the body, with `reason` one of "the lock key was
    deleted or overwritten", "the lock key was deleted or overwritten by another holder", "the
    lock is no longer held by this owner" (renewal refused) or "the lease ran out before it could
    be renewed" (renewals kept failing). On leaving the `async with`, from the task that held it,
    when the owner-checked release finds the lock no longer ours: "the lock was no longer held
    when it was released". Either way `LockStolenError` then leaves the `async with` (unless the
    task was cancelled from outside as well: that cancellation wins).

    `name`, `token`: as in `dref_lock_acquired`. `reason`: why, in words (also
    `LockStolenError.reason` and `guard.lost_reason`).

    Returns None; a returned value is ignored.

    Raises: logged, never propagated; the body is still cancelled and `LockStolenError` still
    raised.
    """
