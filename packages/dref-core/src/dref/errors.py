"""Every error dref raises, in one tree.

```
DRefError
├── ConfigurationError          invalid settings or options (names field, value, reason)
├── PluginError
│   ├── BackendNotFoundError    no installed backend has that name (lists the installed ones)
│   └── PluginLoadError         a plugin failed to import (names plugin and distribution)
├── ElementNotFoundError        get/modify on a missing element: "Element <name> not found"
├── CodecError                  a value could not be encoded or decoded (names the element)
├── LockError
│   ├── LockStolenError         the lock was lost while held; the body was cancelled
│   ├── LockTimeoutError        the lock was not acquired in time (also a builtin TimeoutError)
│   └── StaleFenceError         a fenced write was refused: its lock was acquired again since
├── UnsupportedOperationError   the backend does not offer this operation (names the capability)
├── ChangeStreamLaggedError     a subscriber fell behind its bounded buffer: resynchronise
├── ClosedError                 the context or stream was closed
└── BackendError                the backend failed; the library's exception is chained
    ├── BackendUnavailableError the backend could not be reached in time
    ├── BackendTimeoutError     an operation did not finish in time (also a builtin TimeoutError)
    └── ConsensusError
        ├── NotLeaderError      this node is not the leader (carries the leader id if known)
        ├── NoLeaderError       no leader is elected right now
        └── QuorumLostError     a majority could not be reached
```

Backends map their library's errors at their boundary and chain them (`raise ... from exc`).
Each backend extends this tree from one module of its own, whose docstring draws its part of the
tree: `dref_redis.errors` (`RedisUnreachableError`), `dref_raft.errors` (`CorruptStateError`,
`WireError`, `TransportError`, `WatchUnsupportedError`, `CompareUnsupportedError`,
`WatchLaggedError`, `AccessDeniedError`, `LimitExceededError`). A third-party backend does the
same: its exceptions subclass the classes above, so that `except DRefError` catches everything
dref and its backends raise.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendError",
    "BackendNotFoundError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "ChangeStreamLaggedError",
    "ClosedError",
    "CodecError",
    "ConfigurationError",
    "ConsensusError",
    "DRefError",
    "ElementNotFoundError",
    "LockError",
    "LockStolenError",
    "LockTimeoutError",
    "NoLeaderError",
    "NotLeaderError",
    "PluginError",
    "PluginLoadError",
    "QuorumLostError",
    "StaleFenceError",
    "UnsupportedOperationError",
]


class DRefError(Exception):
    """Base class of every error raised by dref."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take other __init__ arguments than their message: rebuild without __init__,
        # so that errors cross process boundaries (multiprocessing, pickled results) intact.
        return (_restore, (type(self), self.args, self.__dict__))


def _restore(cls: type[DRefError], args: tuple[Any, ...], state: dict[str, Any]) -> DRefError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class ConfigurationError(DRefError, ValueError):
    """Settings or options are invalid; raised before anything starts."""


class PluginError(DRefError):
    """A plugin or backend could not be found or loaded."""


class BackendNotFoundError(PluginError, LookupError):
    """No installed backend is registered under the requested name."""

    def __init__(self, name: str, installed: list[str]) -> None:
        self.name = name
        self.installed = sorted(installed)
        names = ", ".join(self.installed) or "none"
        super().__init__(
            f"no dref backend named {name!r} is installed (installed backends: {names}); "
            f"install the distribution that provides it, e.g. `pip install dref-{name}`"
        )


class PluginLoadError(PluginError, ImportError):
    """A plugin's module failed to import or register; the cause is chained."""

    def __init__(self, plugin: str, distribution: str | None, reason: str) -> None:
        self.plugin = plugin
        self.distribution = distribution
        where = f" from distribution {distribution!r}" if distribution else ""
        super().__init__(f"dref plugin {plugin!r}{where} failed to load: {reason}")


class ElementNotFoundError(DRefError, KeyError):
    """The element does not exist (never set, deleted or expired)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"Element {name} not found")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CodecError(DRefError, ValueError):
    """A value could not be encoded or decoded."""

    def __init__(self, message: str, *, name: str | None = None) -> None:
        self.name = name
        prefix = f"element {name!r}: " if name is not None else ""
        super().__init__(prefix + message)


class LockError(DRefError):
    """Base class of lock failures."""


class LockStolenError(LockError):
    """The lock was lost while held (expired, deleted or overwritten); the body was cancelled.

    `token` is the lock value as a signed 64-bit integer, as upstream prints it.
    """

    def __init__(self, name: str, token: int, reason: str | None = None) -> None:
        self.name = name
        self.token = token
        self.reason = reason
        text = f"Lock {name} with value {token} has been stolen"
        super().__init__(f"{text} ({reason})" if reason else text)


class LockTimeoutError(LockError, TimeoutError):
    """The lock could not be acquired within the timeout; the body did not run."""

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        super().__init__(f"Lock {name} not acquired within {timeout:g} s")


class StaleFenceError(LockError):
    """A write with `fence=guard` was refused by the store, which changed nothing.

    The guard's lock has been acquired again since the guard was handed out (or, on backends
    that check the lock's token instead of a counter, the guard no longer holds it). `newer` is
    the lock's current fence when the store knows it (None otherwise).
    """

    def __init__(self, lock: str, element: str, fence: int, newer: int | None = None) -> None:
        self.lock = lock
        self.element = element
        self.fence = fence
        self.newer = newer
        now = f"fence {newer}" if newer is not None else "no longer held by this guard"
        super().__init__(
            f"write to {element} refused: lock {lock} fence {fence} is stale (the lock is now "
            f"{now})"
        )


class UnsupportedOperationError(DRefError, NotImplementedError):
    """The backend (or the server it talks to) does not offer the requested operation, e.g.
    `names()` without the `names` capability or `fence=` without `fenced_writes`; the message
    names the backend and the operation, `capability` what is missing (when known)."""

    def __init__(self, message: str, *, capability: str | None = None) -> None:
        self.capability = capability
        super().__init__(message)


class ChangeStreamLaggedError(DRefError):
    """A change subscriber fell behind its bounded buffer and missed changes, or a stream
    asked to resume (`changes(since=...)`, a reconnect) from a revision older than the
    backend's history.

    Nothing is skipped silently: re-read the current value and subscribe again.
    """

    def __init__(self, name: str, capacity: int, *, since: int | None = None) -> None:
        self.name = name
        self.capacity = capacity
        self.since = since
        """For `changes(since=...)`: the revision the backend's history no longer reaches."""
        if since is None:
            message = (
                f"change stream of {name!r} fell more than {capacity} events behind; "
                "re-read the value and subscribe again"
            )
        else:
            message = (
                f"the change history of {name!r} no longer holds the changes after revision "
                f"{since}; re-read the value (get_with_revision) and subscribe again"
            )
        super().__init__(message)


class ClosedError(DRefError, RuntimeError):
    """The context, backend or stream has been closed."""


class BackendError(DRefError):
    """The backend failed; the underlying exception is chained as `__cause__`."""


class BackendUnavailableError(BackendError, ConnectionError):
    """The backend could not be reached within the configured time."""


class BackendTimeoutError(BackendError, TimeoutError):
    """A backend operation did not complete within the configured time."""


class ConsensusError(BackendError):
    """The consensus layer could not serve the operation."""


class NotLeaderError(ConsensusError):
    """This node is not the leader; `leader_id` names the leader when known."""

    def __init__(self, leader_id: str | None = None) -> None:
        self.leader_id = leader_id
        super().__init__(f"not the leader (leader: {leader_id or 'unknown'})")


class NoLeaderError(ConsensusError):
    """No leader is currently elected."""

    def __init__(self, message: str = "no leader elected") -> None:
        super().__init__(message)


class QuorumLostError(ConsensusError):
    """A majority of the cluster could not be reached."""

    def __init__(self, message: str = "quorum lost") -> None:
        super().__init__(message)
