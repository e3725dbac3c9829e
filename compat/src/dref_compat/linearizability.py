"""Linearizability checker for histories of register operations (Wing-Gong with Lowe/Porcupine).

Keys are independent registers, so the history is split by key and each key is checked alone.
Per key: call and return entries sorted by time (calls first on ties: touching intervals count
as concurrent) in a doubly linked list; a depth-first search linearizes, "just in time", any
pending call before the first remaining return whose output the sequential register accepts,
memoizes (linearized set, register value) pairs and backtracks at a return it cannot pass.

Operations of unknown outcome (`ret=None`) get no return entry: they may be linearized at any
point after their call, with any output, or never. They are tried only where known ones are stuck,
in "blocks" that must make a stuck known candidate succeed (any linearization can be rearranged
into that form: a block followed by an overwrite, or by an op that succeeds either way, can be
dropped or moved later); identical ones are interchangeable; and a state is pruned when it was
reached before with one unknown op fewer. A key with unknown ops is first searched with them
reusable (polynomial, and its rejections are sound), which finds most violations fast.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from dref_compat.history import OP_KINDS, CheckResult, Operation

__all__ = ["check_linearizable"]

_GET, _SET, _SET_IF_NOT_EXIST, _DEL, _COMPARE_AND_SET = range(5)
_KIND_CODE = {
    "get": _GET,
    "set": _SET,
    "set_if_not_exist": _SET_IF_NOT_EXIST,
    "delete": _DEL,
    "compare_and_set": _COMPARE_AND_SET,
}
_MISSING = 0
_FREE = -1  # not inside a block of unknown-outcome ops
_UNCHECKED = -1  # output of an unknown-outcome operation
_SHOW_PREFIX = 8
_SHOW_WINDOW = 16
_CLOCK_EVERY = 0x3FF  # look at the wall clock every 1024 search steps
_SUBSUME_MAX = 32  # subsumption check only while at most this many unknown ops are linearized


def check_linearizable(
    ops: Iterable[Operation],
    *,
    initial: Mapping[str, Any] | None = None,
    timeout: float | None = None,
) -> CheckResult:
    """Whether the history is linearizable for independent per-key registers.

    `initial` gives keys' values before the history (default: missing). `timeout` bounds the
    wall time in seconds; when it runs out the result has `ok=None`. On a violation the result
    names the key and explains the longest linearizable prefix and the operations that could not
    be placed after it. Raises `ValueError` on a malformed operation.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    by_key: dict[str, list[tuple[int, Operation]]] = {}
    for index, op in enumerate(ops):
        _validate(index, op)
        by_key.setdefault(op.key, []).append((index, op))
    start = initial or {}
    explored = 0
    timed_out: list[str] = []
    for key in sorted(by_key, key=lambda k: (len(by_key[k]), k)):
        check = _KeyCheck(key, by_key[key], start.get(key))
        result = check.run(deadline, relaxed=True) if check.n_unknown else None
        if result is None or result.ok is not False:
            explored += 0 if result is None else result.explored
            result = check.run(deadline)
        explored += result.explored
        if result.ok is False:
            return CheckResult(False, key, result.explanation, explored)
        if result.ok is None:
            timed_out.append(key)
    count = sum(len(v) for v in by_key.values())
    if timed_out:
        return CheckResult(
            None,
            timed_out[0],
            f"timed out after {timeout}s: {len(timed_out)} of {len(by_key)} keys undecided "
            f"({', '.join(map(repr, timed_out[:5]))}{', ...' if len(timed_out) > 5 else ''}); "
            "no violation found in the others",
            explored,
        )
    return CheckResult(
        True, None, f"{count} operations on {len(by_key)} keys are linearizable", explored
    )


def _validate(index: int, op: Operation) -> None:
    if op.kind not in OP_KINDS:
        raise ValueError(f"operation #{index}: unknown kind {op.kind!r}")
    if not math.isfinite(op.call):
        raise ValueError(f"operation #{index}: call time {op.call!r} is not finite")
    if op.ret is not None:
        if math.isnan(op.ret) or op.ret < op.call:
            raise ValueError(
                f"operation #{index}: returns at {op.ret!r} before its call {op.call!r}"
            )
        if op.kind in ("set_if_not_exist", "compare_and_set") and not isinstance(op.output, bool):
            raise ValueError(f"operation #{index}: {op.kind} output must be a bool: {op.output!r}")


class _Interner:
    """Maps values to small ints by equality (0 = missing); unhashable values are compared."""

    def __init__(self) -> None:
        self.ids: dict[Any, int] = {}
        self.unhashable: list[tuple[Any, int]] = []
        self.values: list[Any] = [None]

    def __call__(self, value: Any) -> int:
        if value is None:
            return _MISSING
        try:
            found = self.ids.get(value)
        except TypeError:
            for other, ident in self.unhashable:
                if other == value:
                    return ident
            ident = len(self.values)
            self.unhashable.append((value, ident))
        else:
            if found is not None:
                return found
            ident = len(self.values)
            self.ids[value] = ident
        self.values.append(value)
        return ident


class _KeyCheck:
    """The search over the history of one key."""

    def __init__(self, key: str, indexed: list[tuple[int, Operation]], initial: Any) -> None:
        self.key = key
        self.total = len(indexed)
        intern = _Interner()
        self.intern = intern
        self.initial = intern(initial)
        # Unknown-outcome reads and value-preserving compare-and-sets can never matter.
        kept = [
            (index, op)
            for index, op in indexed
            if op.ret is not None
            or not (op.kind == "get" or (op.kind == "compare_and_set" and op.expected == op.value))
        ]
        kept.sort(key=lambda item: (item[1].call, item[0]))
        self.index = [index for index, _ in kept]
        self.ops = [op for _, op in kept]
        n = len(kept)
        self.kind = [_KIND_CODE[op.kind] for op in self.ops]
        self.val = [intern(op.value) for op in self.ops]
        self.exp = [intern(op.expected) for op in self.ops]
        self.out = [self._output(op, intern) for op in self.ops]
        self.known = [op.ret is not None for op in self.ops]
        # Known ops are numbered in call order in one bitmask, unknown ones in another.
        self.bit = [0] * n
        n_known = n_unknown = 0
        for o in range(n):
            if self.known[o]:
                self.bit[o] = 1 << n_known
                n_known += 1
            else:
                self.bit[o] = 1 << n_unknown
                n_unknown += 1
        self.n_known = n_known
        self.n_unknown = n_unknown
        # Register values that a further unknown op can change (for blocks of unknown ops).
        self.chain_states = {
            self.exp[o] for o in range(n) if not self.known[o] and self.kind[o] == _COMPARE_AND_SET
        }
        self.unknown_set_if_not_exist = any(
            not self.known[o] and self.kind[o] == _SET_IF_NOT_EXIST for o in range(n)
        )
        # Identical unknown ops are interchangeable: only the earliest unused one is tried.
        self.twin = [0] * n  # bit of the previous identical unknown op (0: none)
        last_twin: dict[tuple[int, int, int], int] = {}
        for o in range(n):
            if not self.known[o]:
                sig = (self.kind[o], self.val[o], self.exp[o])
                self.twin[o] = last_twin.get(sig, 0)
                last_twin[sig] = self.bit[o]
        # Entries 1..E sorted by (time, call before return, op); 0 heads the list of known ops'
        # entries, E+1 the list of unknown ops' calls; E+2 and E+3 end them.
        raw: list[tuple[float, int, int]] = []
        for o, op in enumerate(self.ops):
            raw.append((op.call, 0, o))
            if op.ret is not None:
                raw.append((op.ret, 1, o))
        raw.sort()
        size = len(raw)
        self.head, self.uhead, self.tail, self.utail = 0, size + 1, size + 2, size + 3
        self.is_ret = [False] * (size + 4)
        self.op_of = [-1] * (size + 4)
        self.ret_of = [-1] * n  # return entry of a known op
        self.nxt = [0] * (size + 4)
        self.prv = [0] * (size + 4)
        self.is_ret[self.tail] = True  # never reached while known ops remain
        last, ulast = self.head, self.uhead
        for pos, (_, is_ret, o) in enumerate(raw, start=1):
            self.op_of[pos] = o
            self.is_ret[pos] = bool(is_ret)
            if is_ret:
                self.ret_of[o] = pos
            if self.known[o]:
                self.nxt[last], self.prv[pos], last = pos, last, pos
            else:
                self.nxt[ulast], self.prv[pos], ulast = pos, ulast, pos
        self.nxt[last], self.prv[self.tail] = self.tail, last
        self.nxt[ulast], self.prv[self.utail] = self.utail, ulast
        self.nxt[self.tail] = self.tail
        self.nxt[self.utail] = self.utail

    @staticmethod
    def _output(op: Operation, intern: _Interner) -> int:
        if op.ret is None:
            return _UNCHECKED
        if op.kind == "get":
            return intern(op.output)
        if op.kind in ("set_if_not_exist", "compare_and_set"):
            return int(op.output)
        return _UNCHECKED

    def step(self, o: int, state: int) -> tuple[bool, int]:
        """The sequential register: (output matches, new state) for op `o` from `state`."""
        k = self.kind[o]
        if k == _GET:
            return self.out[o] == state, state
        if k == _SET:
            return True, self.val[o]
        if k == _DEL:
            return True, _MISSING
        applies = state == _MISSING if k == _SET_IF_NOT_EXIST else state == self.exp[o]
        if applies:
            return self.out[o] != 0, self.val[o]
        return self.out[o] != 1, state

    def run(self, deadline: float | None, *, relaxed: bool = False) -> CheckResult:
        """Search for a linearization; see the module docstring.

        `relaxed`: unknown-outcome ops may take effect any number of times. That search is
        polynomial, and a history it rejects is not linearizable either.
        """
        nxt, prv, is_ret, op_of, ret_of = self.nxt, self.prv, self.is_ret, self.op_of, self.ret_of
        kind, val, exp, out, bit = self.kind, self.val, self.exp, self.out, self.bit
        head, uhead, step, chains = self.head, self.uhead, self.step, self.chain_states
        twin = self.twin
        seen: set[tuple[int, int, int, int, int]] = set()
        # Frames: (entry, state, limit or -1 for a known op, chain, block, needy) before the step.
        stack: list[tuple[int, int, int, Any, int, list[int]]] = []
        chain: Any = None  # (op, state after, parent chain): the linearization so far
        state = self.initial
        lin = ulin = 0
        remaining = self.n_known
        best = -1
        failure: tuple[int, int, Any, list[int]] = (-1, state, None, [])
        e = nxt[head]
        limit = -1  # the first remaining return entry, while trying unknown ops
        unknown_phase = False
        block = _FREE  # the state before the current block of unknown ops, or _FREE
        needy: list[int] = []  # known candidates that fail from the state before the block
        steps = 0
        while remaining:
            steps += 1
            if not steps & _CLOCK_EVERY and deadline is not None and time.monotonic() > deadline:
                self._unwind(stack, relaxed)
                return CheckResult(None, self.key, "timed out", len(seen))
            if not unknown_phase:
                if not is_ret[e]:
                    o = op_of[e]
                    k = kind[o]
                    if k == _GET:
                        ok = out[o] == state
                        new = state
                    elif k == _SET:
                        ok, new = True, val[o]
                    elif k == _DEL:
                        ok, new = True, _MISSING
                    elif (state == _MISSING) if k == _SET_IF_NOT_EXIST else (state == exp[o]):
                        ok, new = out[o] != 0, val[o]
                    else:
                        ok, new = out[o] != 1, state
                    if ok:
                        nlin = lin | bit[o]
                        if _fresh(seen, nlin, ulin, new, _FREE):
                            stack.append((e, state, -1, chain, _FREE, needy))
                            chain = (o, new, chain)
                            state, lin = new, nlin
                            remaining -= 1
                            _lift(nxt, prv, e)
                            _lift(nxt, prv, ret_of[o])
                            e = nxt[head]
                            continue
                    e = nxt[e]
                    continue
                # Every known candidate is tried. A block of unknown ops can only help if it
                # makes one of those that fail now succeed (module docstring).
                limit = e
                if self.n_unknown:
                    needy = [o for o in self._candidates() if not step(o, state)[0]]
                if needy and self.n_unknown:
                    unknown_phase = True
                    e = nxt[uhead]
                    continue
            elif e < limit:  # an unknown op called before the first remaining return
                cur, e = e, nxt[e]
                o = op_of[cur]
                if block != _FREE and kind[o] in (_SET, _DEL):
                    continue  # it would make the block's earlier ops pointless
                if twin[o] and not ulin & twin[o]:
                    continue  # an identical op called earlier is still unused
                new = step(o, state)[1]
                start = state if block == _FREE else block
                if new in (state, start):
                    continue  # no change: leaving the op (or the block) out is as good
                if any(step(n, new)[0] for n in needy):
                    child = _FREE  # the block may end here
                elif new in chains or (new == _MISSING and self.unknown_set_if_not_exist):
                    child = start  # only more unknown ops can continue the block
                else:
                    continue
                nulin = ulin if relaxed else ulin | bit[o]
                if _fresh(seen, lin, nulin, new, child):
                    stack.append((cur, state, limit, chain, block, needy))
                    chain = (o, new, chain)
                    state, ulin, block = new, nulin, child
                    if not relaxed:
                        _lift(nxt, prv, cur)
                    if child == _FREE:
                        unknown_phase = False
                        e = nxt[head]
                    else:
                        e = nxt[uhead]
                continue
            # Dead end: nothing can be linearized before the return entry `limit`.
            depth = self.n_known - remaining
            if depth > best:
                best = depth
                failure = (limit, state, chain, self._candidates() + self._unknown(limit))
            if not stack:
                return self._explain(failure, best, len(seen), relaxed)
            e, state, frame_limit, chain, block, needy = stack.pop()
            o = op_of[e]
            if frame_limit < 0:
                lin ^= bit[o]
                remaining += 1
                _unlift(nxt, prv, ret_of[o])
                _unlift(nxt, prv, e)
                unknown_phase = False
            else:
                if not relaxed:
                    ulin ^= bit[o]
                    _unlift(nxt, prv, e)
                limit = frame_limit
                unknown_phase = True
            e = nxt[e]
        self._unwind(stack, relaxed)
        return CheckResult(True, None, "", len(seen))

    def _unwind(
        self, stack: list[tuple[int, int, int, Any, int, list[int]]], relaxed: bool
    ) -> None:
        """Relink every entry the search lifted, so that the list can be searched again."""
        while stack:
            e, _, frame_limit, _, _, _ = stack.pop()
            if frame_limit < 0:
                _unlift(self.nxt, self.prv, self.ret_of[self.op_of[e]])
                _unlift(self.nxt, self.prv, e)
            elif not relaxed:
                _unlift(self.nxt, self.prv, e)

    def _candidates(self) -> list[int]:
        """Known ops that could be linearized now (called before the first remaining return)."""
        found: list[int] = []
        e = self.nxt[self.head]
        while not self.is_ret[e]:
            found.append(self.op_of[e])
            e = self.nxt[e]
        return found

    def _unknown(self, limit: int) -> list[int]:
        """Unlinearized unknown-outcome ops called before the return entry `limit`."""
        found: list[int] = []
        e = self.nxt[self.uhead]
        while e < limit:
            found.append(self.op_of[e])
            e = self.nxt[e]
        return found

    # -- explanation -------------------------------------------------------------------------------
    def _explain(
        self, failure: tuple[int, int, Any, list[int]], best: int, explored: int, relaxed: bool
    ) -> CheckResult:
        limit, state, chain, candidates = failure
        stuck = self.op_of[limit]
        prefix: list[tuple[int, int]] = []
        length = 0
        node = chain
        while node is not None:
            if len(prefix) < _SHOW_PREFIX:
                prefix.append((node[0], node[1]))
            length += 1
            node = node[2]
        prefix.reverse()
        unknown = self.total - self.n_known
        lines = [
            f"key {self.key!r}: not linearizable. {self.total} operations on this key"
            + (f" ({unknown} of unknown outcome or irrelevant)" if unknown else "")
            + f"; explored {explored} states.",
            f"Longest linearizable prefix: {length} operations ({best} of known outcome)"
            + (f", the last {len(prefix)}" if length > len(prefix) else "")
            + " (register value after each):",
        ]
        if relaxed:
            lines.insert(
                1,
                "(Not linearizable even if unknown-outcome operations could take effect any "
                "number of times; the prefix may repeat them.)",
            )
        if not prefix:
            lines.append(f"    (none; initial value {self._value(self.initial)})")
        lines.extend(f"    {self._line(o)}  => {self._value(s)}" for o, s in prefix)
        lines.append(f"Then the register holds {self._value(state)}, and no operation can follow.")
        lines.append(
            f"Stuck before the return of {self._name(stuck)} at {_time(self.ops[stuck].ret)}: "
            "every operation pending then fails:"
        )
        for o in sorted(candidates, key=lambda o: (o != stuck, o)):
            lines.append(f"    {self._line(o)}  {self._why(o, state)}")
        start = min(self.ops[o].call for o in candidates) if candidates else self.ops[stuck].call
        end = self.ops[stuck].ret
        assert end is not None
        window = [
            o
            for o, op in enumerate(self.ops)
            if op.call <= end and (op.ret is None or op.ret >= start)
        ]
        overlap = (
            "1 operation overlaps" if len(window) == 1 else f"{len(window)} operations overlap"
        )
        lines.append(
            f"Failing window [{_time(start)}, {_time(end)}]: {overlap} it"
            + (f", the first {_SHOW_WINDOW}" if len(window) > _SHOW_WINDOW else "")
            + ":"
        )
        lines.extend(f"    {self._line(o)}" for o in window[:_SHOW_WINDOW])
        return CheckResult(False, self.key, "\n".join(lines), explored)

    def _why(self, o: int, state: int) -> str:
        ok, new = self.step(o, state)
        op = self.ops[o]
        if not ok:
            if op.kind == "get":
                return (
                    f"reads {self._value(self.out[o])}, but the register holds {self._value(state)}"
                )
            return f"returned {op.output}, impossible when the register holds {self._value(state)}"
        if not self.known[o] and new == state:
            return "changes nothing"
        return f"fits (=> {self._value(new)}), but every continuation fails"

    def _name(self, o: int) -> str:
        return f"#{self.index[o]} (client {self.ops[o].client!r}, {self.ops[o].describe()})"

    def _line(self, o: int) -> str:
        op = self.ops[o]
        ret = "?" if op.ret is None else _time(op.ret)
        return (
            f"#{self.index[o]:<5} client {op.client!r:<6} {op.describe():<28} "
            f"[{_time(op.call)}, {ret}]"
        )

    def _value(self, ident: int) -> str:
        return "missing" if ident == _MISSING else repr(self.intern.values[ident])


def _fresh(
    seen: set[tuple[int, int, int, int, int]], lin: int, ulin: int, state: int, block: int
) -> bool:
    """Record a search state unless it, or one that subsumes it, was reached before.

    A state subsumes another with the same known ops, register value and block if it has fewer
    unknown ops linearized (checked one op less); a free state subsumes a block state.
    """
    low = ((lin + 1) & ~lin).bit_length() - 1  # ops below `low` are all linearized
    rest = lin >> low
    if (low, rest, ulin, state, block) in seen:
        return False
    if block != _FREE and (low, rest, ulin, state, _FREE) in seen:
        return False
    if ulin and ulin.bit_count() <= _SUBSUME_MAX:
        bits = ulin
        while bits:
            one = bits & -bits
            bits ^= one
            if (low, rest, ulin ^ one, state, block) in seen:
                return False
            if block != _FREE and (low, rest, ulin ^ one, state, _FREE) in seen:
                return False
    seen.add((low, rest, ulin, state, block))
    return True


def _lift(nxt: list[int], prv: list[int], e: int) -> None:
    """Unlink entry `e` (keeping its own links for `_unlift`)."""
    nxt[prv[e]] = nxt[e]
    prv[nxt[e]] = prv[e]


def _unlift(nxt: list[int], prv: list[int], e: int) -> None:
    nxt[prv[e]] = e
    prv[nxt[e]] = e


def _time(t: float | None) -> str:
    if t is None:
        return "?"
    return str(int(t)) if float(t).is_integer() and abs(t) < 1e15 else f"{t:.6f}"
