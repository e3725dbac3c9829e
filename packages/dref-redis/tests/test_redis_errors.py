"""dref-redis defines its exceptions in `dref_redis.errors` only, all in `dref.errors`' tree."""

from __future__ import annotations

import dref_redis.errors
from dref.errors import BackendTimeoutError, BackendUnavailableError, DRefError
from dref_compat.error_tree import check_error_module, exception_classes


def test_every_exception_class_extends_dref_errors_from_the_errors_module() -> None:
    classes = exception_classes("dref_redis")  # walks every module of the package
    assert classes == [dref_redis.errors.RedisUnreachableError]
    for cls in classes:
        assert issubclass(cls, DRefError)
        assert cls.__module__ == "dref_redis.errors"
    assert check_error_module("dref_redis") == []


def test_unreachable_is_both_unavailable_and_a_timeout() -> None:
    error = dref_redis.errors.RedisUnreachableError("no reply")
    assert isinstance(error, BackendUnavailableError)
    assert isinstance(error, BackendTimeoutError)
    assert isinstance(error, TimeoutError)
    assert isinstance(error, ConnectionError)
