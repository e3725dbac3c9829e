"""dref-compat: golden vectors, backend conformance suite, history checker.

The history and lock checkers are exported lazily (importing the package stays cheap)::

    from dref_compat import HistoryRecorder, check_linearizable, check_mutual_exclusion
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dref_compat.fencing import Hold, HoldRecorder, check_mutual_exclusion, check_within_grants
    from dref_compat.history import CheckResult, HistoryRecorder, Operation, OpKind, PendingOp
    from dref_compat.linearizability import check_linearizable

__all__ = [
    "CheckResult",
    "HistoryRecorder",
    "Hold",
    "HoldRecorder",
    "OpKind",
    "Operation",
    "PendingOp",
    "check_linearizable",
    "check_mutual_exclusion",
    "check_within_grants",
]

_HOME = {
    "CheckResult": "history",
    "HistoryRecorder": "history",
    "OpKind": "history",
    "Operation": "history",
    "PendingOp": "history",
    "check_linearizable": "linearizability",
    "Hold": "fencing",
    "HoldRecorder": "fencing",
    "check_mutual_exclusion": "fencing",
    "check_within_grants": "fencing",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'dref_compat' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"dref_compat.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
