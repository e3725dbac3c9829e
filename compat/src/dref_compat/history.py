"""Client histories of register operations, a recorder for async clients, and check results.

A history is a list of `Operation`s, each with its invocation (`call`) and completion (`ret`)
time on one clock. `HistoryRecorder` stamps them for tests that drive real clients::

    rec = HistoryRecorder()
    async with rec.op(client, "k", "get") as op:
        op.output = await read_or_none(ref)
    check_linearizable(rec.history())
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, get_args

__all__ = ["CheckResult", "HistoryRecorder", "OpKind", "Operation", "PendingOp"]

OpKind = Literal["get", "set", "set_if_not_exist", "delete", "compare_and_set"]
OP_KINDS: frozenset[str] = frozenset(get_args(OpKind))


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation on one key as a client saw it.

    `value`: the value written (set / set_if_not_exist) or the new value (compare_and_set).
    `expected`: the value compare_and_set compared against. `output`: the value read (get; None =
    missing), whether it wrote (set_if_not_exist, compare_and_set), None (set, delete).
    `ret=None`: outcome unknown (timeout, crash); it may have taken effect once at any time after
    `call`, or never, and its output is ignored.
    """

    client: int | str
    key: str
    kind: OpKind
    value: Any = None
    expected: Any = None
    output: Any = None
    call: float = 0.0
    ret: float | None = None

    def describe(self) -> str:
        """`get() -> 3`, `compare_and_set(2, 3) -> True`, `set(3) -> ?` (unknown outcome)."""
        if self.kind in ("get", "delete"):
            args = ""
        elif self.kind == "compare_and_set":
            args = f"{_short(self.expected)}, {_short(self.value)}"
        else:
            args = _short(self.value)
        text = f"{self.kind}({args})"
        if self.ret is None:
            return text + " -> ?"
        if self.kind in ("get", "set_if_not_exist", "compare_and_set"):
            return f"{text} -> {_short(self.output)}"
        return text


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict of a checker: `ok` is True (holds), False (violated) or None (timed out).

    When not ok, `key` names the failing key (or lock name) and `explanation` says why.
    `explored` counts the search states visited (linearizability) or holds checked (fencing).
    Truthy only when `ok is True`, so `assert result, result.explanation` works.
    """

    ok: bool | None
    key: str | None = None
    explanation: str = ""
    explored: int = 0

    def __bool__(self) -> bool:
        return self.ok is True

    def __str__(self) -> str:
        verdict = {True: "ok", False: "VIOLATION", None: "UNKNOWN"}[self.ok]
        return f"{verdict}: {self.explanation}" if self.explanation else verdict


class PendingOp:
    """An invoked operation awaiting its outcome; fields stay writable until it finishes.

    Set `output` before completing; a CAS-style update may set `expected`/`value` (and even
    `kind`) as it learns them, e.g. from inside the update function on each attempt.
    """

    __slots__ = (
        "_recorder",
        "call",
        "client",
        "expected",
        "index",
        "key",
        "kind",
        "output",
        "value",
    )

    def __init__(
        self,
        recorder: HistoryRecorder,
        index: int,
        client: int | str,
        key: str,
        kind: OpKind,
        value: Any,
        expected: Any,
        call: float,
    ) -> None:
        self._recorder = recorder
        self.index = index
        self.client = client
        self.key = key
        self.kind: OpKind = kind
        self.value = value
        self.expected = expected
        self.output: Any = None
        self.call = call

    def finish(self, ret: float | None) -> Operation:
        """The `Operation` this handle describes, completed at `ret` (None = unknown)."""
        return Operation(
            self.client,
            self.key,
            self.kind,
            self.value,
            self.expected,
            self.output if ret is not None else None,
            self.call,
            ret,
        )

    def __repr__(self) -> str:
        return f"<PendingOp #{self.index} client={self.client!r} {self.finish(None).describe()}>"


class _OpScope:
    """`with`/`async with rec.op(...) as op`: complete on exit, classify exceptions."""

    __slots__ = ("_args", "_definite", "_handle", "_recorder")

    def __init__(
        self,
        recorder: HistoryRecorder,
        args: tuple[int | str, str, OpKind, Any, Any],
        definite: tuple[type[BaseException], ...],
    ) -> None:
        self._recorder = recorder
        self._args = args
        self._definite = definite
        self._handle: PendingOp | None = None

    def __enter__(self) -> PendingOp:
        client, key, kind, value, expected = self._args
        self._handle = self._recorder.invoke(client, key, kind, value, expected=expected)
        return self._handle

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        handle = self._handle
        assert handle is not None
        if exc is None:
            self._recorder.complete(handle, handle.output)
        elif isinstance(exc, self._definite):
            self._recorder.discard(handle)
        else:
            self._recorder.fail_unknown(handle)

    async def __aenter__(self) -> PendingOp:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class HistoryRecorder:
    """Records operations of concurrent clients in invocation order, stamped by `clock`.

    Either `invoke` and then exactly one of `complete`, `fail_unknown`, `discard`; or the
    `op(...)` scope, which completes on normal exit, discards on an exception listed in
    `definite` (known not applied, e.g. "not leader" before anything was proposed) and records
    an unknown outcome on any other exception, including cancellation and timeouts. Not
    thread-safe; one event loop (or one simulation) per recorder.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._slots: list[Operation | PendingOp | None] = []

    def invoke(
        self,
        client: int | str,
        key: str,
        kind: OpKind,
        value: Any = None,
        *,
        expected: Any = None,
    ) -> PendingOp:
        """Stamp the invocation of an operation now; returns the handle to finish it with."""
        if kind not in OP_KINDS:
            raise ValueError(f"unknown operation kind {kind!r}; known: {sorted(OP_KINDS)}")
        handle = PendingOp(self, len(self._slots), client, key, kind, value, expected, 0.0)
        self._slots.append(handle)
        handle.call = self._clock()
        return handle

    def complete(self, handle: PendingOp, output: Any = None) -> Operation:
        """The operation returned `output` now (get: value or None; else whether it wrote)."""
        self._pending(handle)
        ret = self._clock()
        handle.output = output
        return self._finish(handle, ret)

    def fail_unknown(self, handle: PendingOp) -> Operation:
        """The outcome is unknown (timeout, lost connection): it may or may not have applied."""
        return self._finish(handle, None)

    def discard(self, handle: PendingOp) -> None:
        """The operation definitely did not take effect: leave it out of the history."""
        self._pending(handle)
        self._slots[handle.index] = None

    def op(
        self,
        client: int | str,
        key: str,
        kind: OpKind,
        value: Any = None,
        *,
        expected: Any = None,
        definite: tuple[type[BaseException], ...] = (),
    ) -> _OpScope:
        """A (sync or async) context manager around one operation; see the class docstring."""
        return _OpScope(self, (client, key, kind, value, expected), definite)

    def history(self, *, include_pending: bool = True) -> list[Operation]:
        """Finished operations in invocation order; still pending ones as unknown outcome."""
        ops: list[Operation] = []
        for slot in self._slots:
            if isinstance(slot, Operation):
                ops.append(slot)
            elif slot is not None and include_pending:
                ops.append(slot.finish(None))
        return ops

    @property
    def pending(self) -> int:
        """How many invoked operations are not finished yet."""
        return sum(isinstance(slot, PendingOp) for slot in self._slots)

    def __len__(self) -> int:
        return sum(slot is not None for slot in self._slots)

    def _pending(self, handle: PendingOp) -> None:
        if handle._recorder is not self:
            raise ValueError(f"{handle!r} belongs to another recorder")
        if self._slots[handle.index] is not handle:
            raise ValueError(f"{handle!r} is already finished")

    def _finish(self, handle: PendingOp, ret: float | None) -> Operation:
        self._pending(handle)
        op = handle.finish(ret)
        self._slots[handle.index] = op
        return op
