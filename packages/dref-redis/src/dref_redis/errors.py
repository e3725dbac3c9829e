"""Every error dref-redis raises, in `dref.errors`' tree; redis-py's exceptions are mapped here.

This module is the only one of dref-redis that defines exception classes. What dref-redis
raises; an error that comes from redis-py is mapped by `map_error` and chains it as `__cause__`:

```
dref.errors.DRefError
├── ConfigurationError              invalid DREF_REDIS_* settings or options (in dref.connect());
│                                   authentication failed, an ACL forbids a command dref needs,
│                                   or the database index does not exist
├── ClosedError                     an operation or subscription on a closed backend
├── ChangeStreamLaggedError         a change subscriber fell behind its bounded buffer
└── BackendError                    any other failure: a key of another Redis type (WRONGTYPE),
    │                               an unexpected reply or error
    ├── BackendUnavailableError     connection refused or lost, a read-only replica, LOADING,
    │   │                           MASTERDOWN, CLUSTERDOWN, TRYAGAIN, another cluster error;
    │   │                           change notifications not connected in time (`subscribe`)
    │   └── RedisUnreachableError   no reply within the timeout (also a BackendTimeoutError)
    └── BackendTimeoutError         (also the builtin TimeoutError)
        └── RedisUnreachableError
```

An invalid argument (a TTL that is not a positive number of seconds) raises `ValueError`, as in
core.
"""

from __future__ import annotations

from redis import exceptions as rx

from dref.errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
    DRefError,
)

__all__ = ["RedisUnreachableError", "map_error"]


class RedisUnreachableError(BackendUnavailableError, BackendTimeoutError):
    """Redis did not answer within the configured time: it is unavailable and the call timed out.

    Both `except BackendUnavailableError` and `except BackendTimeoutError` (and the builtin
    `TimeoutError`) catch it.
    """


def map_error(exc: BaseException, *, where: str, what: str, name: str | None = None) -> DRefError:
    """The dref error for redis-py's `exc`; the caller raises it `from exc`.

    `where` describes the server (no secrets), `what` the operation, `name` the element.
    """
    subject = f"{what} of {name!r}" if name is not None else what
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, rx.AuthenticationError | rx.AuthenticationWrongNumberOfArgsError):
        return ConfigurationError(
            f"redis at {where}: authentication failed ({detail}); check the username and "
            "password (DREF_REDIS_USERNAME / DREF_REDIS_PASSWORD or the URL)"
        )
    if isinstance(exc, rx.AuthorizationError | rx.NoPermissionError):
        return ConfigurationError(
            f"redis at {where}: the ACL user may not run {subject} ({detail}); dref needs "
            "GET, SET, DEL, PEXPIRE, EVALSHA, SCRIPT LOAD, PUBLISH and SUBSCRIBE on its keys"
        )
    if isinstance(exc, rx.TimeoutError | TimeoutError):
        return RedisUnreachableError(f"redis at {where}: no reply within the timeout ({subject})")
    if isinstance(exc, rx.ConnectionError | ConnectionError | OSError):
        return BackendUnavailableError(f"redis at {where} is unavailable ({subject}): {detail}")
    if isinstance(exc, rx.ResponseError):
        text = detail.upper()
        if "DB INDEX IS OUT OF RANGE" in text:
            return ConfigurationError(
                f"redis at {where}: database does not exist ({detail}); check DREF_REDIS_DB "
                "or the URL's /<db>"
            )
        if text.startswith("WRONGTYPE"):
            return BackendError(
                f"redis at {where}: {subject} failed: the key holds a Redis type other than a "
                "string, so it is not a dref element (it was written by something else)"
            )
        if isinstance(exc, rx.ReadOnlyError | rx.ClusterDownError | rx.TryAgainError) or (
            text.startswith(("LOADING", "MASTERDOWN", "CLUSTERDOWN", "READONLY"))
        ):
            return BackendUnavailableError(
                f"redis at {where} cannot serve writes right now ({subject}): {detail}"
            )
        return BackendError(f"redis at {where}: {subject} failed: {detail}")
    if isinstance(exc, rx.RedisClusterException):
        return BackendUnavailableError(f"redis cluster at {where}: {subject} failed: {detail}")
    return BackendError(f"redis at {where}: {subject} failed: {type(exc).__name__}: {detail}")
