"""The linearizability checker and the history recorder."""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dref_compat import CheckResult, HistoryRecorder, Operation, OpKind, check_linearizable

NEVER = "never-written"


def op(
    client: int,
    kind: OpKind,
    call: float,
    ret: float | None,
    *,
    value: Any = None,
    expected: Any = None,
    output: Any = None,
    key: str = "x",
) -> Operation:
    return Operation(client, key, kind, value, expected, output, call, ret)


def check(ops: Sequence[Operation], **kwargs: Any) -> CheckResult:
    result = check_linearizable(ops, **kwargs)
    if result.ok is False:
        assert result.key is not None
        assert f"key {result.key!r}: not linearizable" in result.explanation
    return result


# -- classic cases ---------------------------------------------------------------------------------
def test_empty_history_is_linearizable() -> None:
    assert check([]).ok is True


def test_stale_read_after_completed_write() -> None:
    history = [
        op(1, "set", 0, 1, value=1),
        op(1, "set", 2, 3, value=2),
        op(2, "get", 4, 5, output=1),
    ]
    result = check(history)
    assert result.ok is False
    assert result.key == "x"
    assert "reads 1, but the register holds 2" in result.explanation
    assert "#2" in result.explanation


def test_read_of_missing_after_write_and_initial_value() -> None:
    assert not check([op(1, "set", 0, 1, value=1), op(2, "get", 2, 3, output=None)])
    assert check([op(2, "get", 0, 1, output=None)])
    assert not check([op(2, "get", 0, 1, output=None)], initial={"x": 7})
    assert check([op(2, "get", 0, 1, output=7)], initial={"x": 7})


def test_concurrent_writes_reads_may_see_either_order() -> None:
    writes = [op(1, "set", 0, 10, value="a"), op(2, "set", 0, 10, value="b")]
    # Both reads after both writes must agree; during them they may see either, once each.
    assert check([*writes, op(3, "get", 11, 12, output="a"), op(4, "get", 13, 14, output="a")])
    assert check([*writes, op(3, "get", 11, 12, output="b")])
    assert check([*writes, op(3, "get", 1, 2, output="a"), op(4, "get", 3, 4, output="b")])
    assert check([*writes, op(3, "get", 1, 2, output="b"), op(4, "get", 3, 4, output="a")])
    # a, b, a would need a written twice.
    flip_flop = [
        op(3, "get", 1, 2, output="a"),
        op(3, "get", 3, 4, output="b"),
        op(3, "get", 5, 6, output="a"),
    ]
    assert not check([*writes, *flip_flop])
    # Two readers disagreeing on the order while both reads overlap both writes is fine...
    assert check([*writes, op(3, "get", 11, 12, output="b"), op(4, "get", 1, 2, output="a")])
    # ...but not once both writes are over.
    assert not check([*writes, op(3, "get", 11, 12, output="a"), op(4, "get", 13, 14, output="b")])


def test_touching_intervals_count_as_concurrent() -> None:
    # The read's call equals the write's return: either order is allowed.
    assert check([op(1, "set", 0, 5, value=1), op(2, "get", 5, 6, output=None)])
    assert not check([op(1, "set", 0, 5, value=1), op(2, "get", 5.5, 6, output=None)])


def test_set_if_not_exist_has_one_winner() -> None:
    both = [
        op(1, "set_if_not_exist", 0, 10, value=1, output=True),
        op(2, "set_if_not_exist", 0, 10, value=2, output=True),
    ]
    result = check(both)
    assert result.ok is False
    assert "impossible when the register holds" in result.explanation
    one = [
        op(1, "set_if_not_exist", 0, 10, value=1, output=True),
        op(2, "set_if_not_exist", 0, 10, value=2, output=False),
        op(3, "get", 11, 12, output=1),
    ]
    assert check(one)
    assert not check([*one[:2], op(3, "get", 11, 12, output=2)])
    # The loser saw the key present, so it cannot have run first on a missing key...
    assert not check([op(2, "set_if_not_exist", 0, 1, value=2, output=False)])
    # ...unless something was there already.
    assert check([op(2, "set_if_not_exist", 0, 1, value=2, output=False)], initial={"x": 0})


def test_lost_update_via_cas_is_detected() -> None:
    # Two increments from 0 both succeed: the second one's expected value is stale.
    history = [
        op(1, "compare_and_set", 0, 10, expected=0, value=1, output=True),
        op(2, "compare_and_set", 0, 10, expected=0, value=1, output=True),
    ]
    assert not check(history, initial={"x": 0})
    fine = [
        op(1, "compare_and_set", 0, 10, expected=0, value=1, output=True),
        op(2, "compare_and_set", 0, 10, expected=0, value=1, output=False),
        op(2, "compare_and_set", 11, 12, expected=1, value=2, output=True),
        op(3, "get", 13, 14, output=2),
    ]
    assert check(fine, initial={"x": 0})
    # A failed compare_and_set must have seen another value.
    assert not check(
        [op(1, "compare_and_set", 0, 1, expected=0, value=1, output=False)], initial={"x": 0}
    )


def test_delete_makes_the_key_missing() -> None:
    history = [
        op(1, "set", 0, 1, value=1),
        op(1, "delete", 2, 3),
        op(2, "set_if_not_exist", 4, 5, value=2, output=True),
        op(2, "get", 6, 7, output=2),
    ]
    assert check(history)
    assert not check([*history[:2], op(2, "get", 4, 5, output=1)])


def test_unknown_outcome_write_may_show_up_later() -> None:
    timed_out = op(1, "set", 0, None, value=1)
    assert check([timed_out, op(2, "get", 5, 6, output=None), op(2, "get", 7, 8, output=1)])
    # ...or never.
    assert check([timed_out, op(2, "get", 5, 6, output=None)])
    # ...but only once: it cannot reappear after being overwritten.
    reappears = [
        timed_out,
        op(2, "get", 5, 6, output=1),
        op(3, "set", 7, 8, value=2),
        op(2, "get", 9, 10, output=1),
    ]
    assert not check(reappears)


def test_unknown_outcome_write_cannot_show_up_before_its_call() -> None:
    history = [op(2, "get", 0, 1, output=1), op(1, "set", 2, None, value=1)]
    result = check(history)
    assert result.ok is False
    assert "Stuck before the return of #0" in result.explanation


def test_unknown_outcome_output_is_ignored() -> None:
    # An unknown-outcome compare_and_set may have applied (whatever it "returned")...
    history = [
        op(1, "compare_and_set", 0, None, expected=0, value=1, output=False),
        op(2, "get", 5, 6, output=1),
    ]
    assert check(history, initial={"x": 0})
    # ...but only if its expected value matched.
    assert not check(history, initial={"x": 5})
    # Unknown reads constrain nothing.
    assert check([op(1, "get", 0, None, output=NEVER)])


def test_keys_are_independent_and_failure_names_the_key() -> None:
    history = [
        op(1, "set", 0, 1, value=1, key="a"),
        op(2, "get", 2, 3, output=1, key="b"),  # b was never written
        op(2, "get", 4, 5, output=1, key="a"),
    ]
    result = check(history)
    assert result.ok is False
    assert result.key == "b"
    assert check(history, initial={"b": 1})


def test_values_may_be_unhashable_and_of_any_type() -> None:
    history = [
        op(1, "set", 0, 1, value=[1, 2]),
        op(2, "get", 2, 3, output=[1, 2]),
        op(1, "set", 4, 5, value=b"\x00"),
        op(2, "compare_and_set", 6, 7, expected=b"\x00", value={"k": 1}, output=True),
        op(2, "get", 8, 9, output={"k": 1}),
    ]
    assert check(history)
    assert not check([*history, op(3, "get", 10, 11, output=[1, 2])])


def test_malformed_operations_are_rejected() -> None:
    with pytest.raises(ValueError, match="before its call"):
        check_linearizable([op(1, "set", 5, 4, value=1)])
    with pytest.raises(ValueError, match="must be a bool"):
        check_linearizable([op(1, "compare_and_set", 0, 1, expected=1, value=2, output=None)])
    with pytest.raises(ValueError, match="unknown kind"):
        check_linearizable([Operation(1, "x", "incr", call=0, ret=1)])  # type: ignore[arg-type]


def test_explanation_shows_prefix_state_and_window() -> None:
    history = [op(c, "set", 2 * c, 2 * c + 1, value=c) for c in range(20)]
    history.append(op(99, "get", 100, 101, output=3))
    result = check(history)
    assert result.ok is False
    text = result.explanation
    assert "Longest linearizable prefix: 20 operations" in text
    assert "the last 8" in text
    assert "Then the register holds 19" in text
    assert "Failing window [100, 101]" in text
    assert "client 99" in text
    assert str(result).startswith("VIOLATION: key 'x'")
    assert not result


def test_timeout_gives_unknown() -> None:
    # 24 fully concurrent writes and an impossible read: exponentially many states to refute.
    history = [op(c, "set", 0, 100, value=c) for c in range(24)]
    history.append(op(99, "get", 101, 102, output=NEVER))
    result = check_linearizable(history, timeout=0.2)
    assert result.ok is None
    assert result.key == "x"
    assert "timed out" in result.explanation
    assert not result


# -- generated histories ---------------------------------------------------------------------------
def simulate(
    rng: random.Random,
    *,
    clients: int,
    per_client: int,
    keys: int = 1,
    unknown_rate: float = 0.0,
    distinct_values: bool = True,
    integer_times: bool = False,
    overlap: float = 1.0,
) -> list[Operation]:
    """Clients running ops against a real sequential register, each taking effect at a random
    point inside its [call, ret]; an unknown-outcome op takes effect or not."""
    drafts: list[tuple[float, int, dict[str, Any]]] = []
    for client in range(clients):
        now = rng.uniform(0, 3) if not integer_times else float(rng.randint(0, 3))
        for _ in range(per_client):
            if integer_times:
                call = now + rng.randint(0, 2)
                point = call + rng.randint(0, 2)
                ret = point + rng.randint(0, 2)
            else:
                call = now + rng.expovariate(1.0) * overlap
                point = call + rng.expovariate(1.0) * overlap
                ret = point + rng.expovariate(1.0) * overlap
            kind = rng.choice(
                [
                    "get",
                    "get",
                    "set",
                    "set_if_not_exist",
                    "delete",
                    "compare_and_set",
                    "compare_and_set",
                ]
            )
            unknown = rng.random() < unknown_rate
            draft: dict[str, Any] = {
                "client": client,
                "key": f"k{rng.randrange(keys)}",
                "kind": kind,
            }
            draft.update(call=call, ret=None if unknown else ret)
            applied = not unknown or rng.random() < 0.5
            drafts.append((point if applied else -1.0, len(drafts), draft))
            now = ret
    counter = itertools.count(1)
    register: dict[str, Any] = {}
    ops: list[Operation] = []
    for point, _, draft in sorted(drafts, key=lambda d: (d[0], d[1])):
        key, kind = draft["key"], draft["kind"]
        current = register.get(key)
        value: Any = next(counter) if distinct_values else rng.randint(1, 3)
        expected: Any = None
        output: Any = None
        if kind == "get":
            value, output = None, current
        elif kind == "set":
            register[key] = value
        elif kind == "set_if_not_exist":
            output = current is None
            if output:
                register[key] = value
        elif kind == "delete":
            value = None
            register.pop(key, None)
        else:
            expected = current if rng.random() < 0.6 else rng.choice([None, 1, 2])
            output = current == expected
            if output:
                register[key] = value
        if point < 0:  # unknown outcome, never applied: undo
            register[key] = current
            if current is None:
                del register[key]
        ops.append(Operation(value=value, expected=expected, output=output, **draft))
    ops.sort(key=lambda o: o.call)
    return ops


SIM_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@SIM_SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    clients=st.integers(1, 5),
    per_client=st.integers(1, 30),
    keys=st.integers(1, 3),
    unknown_rate=st.sampled_from([0.0, 0.0, 0.1, 0.3]),
    distinct_values=st.booleans(),
    integer_times=st.booleans(),
)
def test_histories_of_a_real_register_are_linearizable(
    seed: int,
    clients: int,
    per_client: int,
    keys: int,
    unknown_rate: float,
    distinct_values: bool,
    integer_times: bool,
) -> None:
    history = simulate(
        random.Random(seed),
        clients=clients,
        per_client=per_client,
        keys=keys,
        unknown_rate=unknown_rate,
        distinct_values=distinct_values,
        integer_times=integer_times,
    )
    result = check_linearizable(history, timeout=10)
    assert result.ok is True, result.explanation


@SIM_SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    clients=st.integers(1, 5),
    per_client=st.integers(2, 30),
    unknown_rate=st.sampled_from([0.0, 0.1, 0.3]),
    which=st.integers(0, 10**6),
)
def test_a_read_of_a_never_written_value_is_rejected(
    seed: int, clients: int, per_client: int, unknown_rate: float, which: int
) -> None:
    history = simulate(
        random.Random(seed),
        clients=clients,
        per_client=per_client,
        keys=2,
        unknown_rate=unknown_rate,
    )
    reads = [i for i, o in enumerate(history) if o.kind == "get" and o.ret is not None]
    assume(reads)
    victim = reads[which % len(reads)]
    mutated = list(history)
    mutated[victim] = Operation(**{**_fields(history[victim]), "output": NEVER})
    result = check_linearizable(mutated, timeout=10)
    assert result.ok is False
    assert result.key == history[victim].key
    assert f"#{victim}" in result.explanation


def _fields(o: Operation) -> dict[str, Any]:
    return {name: getattr(o, name) for name in Operation.__slots__}


# -- against brute force ---------------------------------------------------------------------------
def brute_force(ops: Sequence[Operation]) -> bool:
    """Every order and every subset of unknown-outcome ops, for tiny single-key histories."""
    known = frozenset(i for i, o in enumerate(ops) if o.ret is not None)
    rets = [math.inf if o.ret is None else o.ret for o in ops]

    @functools.cache
    def search(done: frozenset[int], state: Any) -> bool:
        if known <= done:
            return True
        for i, o in enumerate(ops):
            if i in done:
                continue
            if any(rets[j] < o.call for j in known - done if j != i):
                continue
            ok, new = register_step(o, state)
            if (ok or o.ret is None) and search(done | {i}, new):
                return True
        return False

    return search(frozenset(), None)


def register_step(o: Operation, state: Any) -> tuple[bool, Any]:
    if o.kind == "get":
        return o.output == state, state
    if o.kind == "set":
        return True, o.value
    if o.kind == "delete":
        return True, None
    applies = state is None if o.kind == "set_if_not_exist" else state == o.expected
    return (o.output is applies), (o.value if applies else state)


@st.composite
def tiny_histories(draw: st.DrawFn) -> list[Operation]:
    n = draw(st.integers(1, 7))
    ops = []
    for client in range(n):
        kind: OpKind = draw(
            st.sampled_from(["get", "set", "set_if_not_exist", "delete", "compare_and_set"])
        )
        call = draw(st.integers(0, 8))
        ret = None if draw(st.integers(0, 4)) == 0 else call + draw(st.integers(0, 5))
        value = draw(st.sampled_from([1, 2])) if kind != "delete" and kind != "get" else None
        expected = draw(st.sampled_from([None, 1, 2])) if kind == "compare_and_set" else None
        if kind == "get":
            output: Any = draw(st.sampled_from([None, 1, 2]))
        elif kind in ("set_if_not_exist", "compare_and_set"):
            output = draw(st.booleans())
        else:
            output = None
        ops.append(Operation(client, "x", kind, value, expected, output, float(call), ret))
    return ops


@settings(max_examples=2000, deadline=None)
@given(tiny_histories())
def test_agrees_with_brute_force(history: list[Operation]) -> None:
    expected = brute_force(history)
    result = check_linearizable(history)
    assert result.ok is expected, result.explanation


# -- scale -----------------------------------------------------------------------------------------
def test_large_sequential_ish_history_explores_few_states() -> None:
    """Not timed: the search must stay near-linear (see docs/linearizability.md for timings)."""
    history = simulate(random.Random(7), clients=5, per_client=1000, overlap=0.3)
    assert len(history) == 5000
    result = check_linearizable(history)
    assert result.ok is True, result.explanation
    assert result.explored <= 2 * len(history)
    stale = stale_read(history, random.Random(1))
    assert stale is not None
    result = check_linearizable(stale[0])
    assert result.ok is False
    assert result.explored <= 10 * len(history)
    # With 2% unknown outcomes, accepted and a stale read rejected.
    history = simulate(random.Random(8), clients=5, per_client=400, unknown_rate=0.02, overlap=0.3)
    assert check_linearizable(history).explored <= 20 * len(history)
    stale = stale_read(history, random.Random(1))
    assert stale is not None
    result = check_linearizable(stale[0])
    assert result.ok is False
    assert result.explored <= 40 * len(history)


def stale_read(history: list[Operation], rng: random.Random) -> tuple[list[Operation], int] | None:
    """The history with a read changed to return a value overwritten before it was called.

    Writer W (a known set of a unique value), overwriter O (known set/delete called after W
    returned), reader R (known get called after O returned): R cannot see W's value.
    """
    writes = [o for o in history if o.kind == "set" and o.ret is not None]
    for _ in range(100):
        if not writes:
            return None
        w = rng.choice(writes)
        assert w.ret is not None
        if sum(o.value == w.value for o in history) != 1:
            continue
        over = [
            o
            for o in history
            if o.kind in ("set", "delete") and o.ret is not None and o.call > w.ret
        ]
        if not over:
            continue
        first = min(over, key=lambda o: o.ret or 0.0)
        assert first.ret is not None
        reads = [
            i
            for i, o in enumerate(history)
            if o.kind == "get" and o.ret is not None and o.call > first.ret
        ]
        if reads:
            victim = rng.choice(reads)
            mutated = list(history)
            mutated[victim] = Operation(**{**_fields(history[victim]), "output": w.value})
            return mutated, victim
    return None


@SIM_SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    clients=st.integers(1, 5),
    per_client=st.integers(4, 30),
    unknown_rate=st.sampled_from([0.0, 0.1, 0.3]),
)
def test_a_stale_read_is_rejected(
    seed: int, clients: int, per_client: int, unknown_rate: float
) -> None:
    rng = random.Random(seed)
    history = simulate(rng, clients=clients, per_client=per_client, unknown_rate=unknown_rate)
    stale = stale_read(history, rng)
    assume(stale is not None)
    assert stale is not None
    result = check_linearizable(stale[0], timeout=10)
    assert result.ok is False


# -- recorder --------------------------------------------------------------------------------------
class Ticks:
    """A logical clock: 1, 2, 3, ..."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


class DefinitelyNotApplied(Exception):
    pass


async def test_recorder_scopes_classify_outcomes() -> None:
    rec = HistoryRecorder(clock=Ticks())
    async with rec.op(1, "x", "set", 5) as h:
        pass
    async with rec.op(1, "x", "get") as h:
        h.output = 5
    with pytest.raises(DefinitelyNotApplied):
        async with rec.op(2, "x", "set", 6, definite=(DefinitelyNotApplied,)):
            raise DefinitelyNotApplied
    with pytest.raises(TimeoutError):
        async with rec.op(2, "x", "set", 7, definite=(DefinitelyNotApplied,)):
            raise TimeoutError
    with rec.op(3, "x", "compare_and_set", expected=5) as h:  # plain `with` works too
        h.value = 8  # learned inside, e.g. in an update function
        h.output = True
    pending = rec.invoke(4, "x", "delete")
    assert rec.pending == 1
    assert len(rec) == 5
    history = rec.history()
    assert history == [
        Operation(1, "x", "set", 5, None, None, 1, 2),
        Operation(1, "x", "get", None, None, 5, 3, 4),
        Operation(2, "x", "set", 7, None, None, 6, None),  # the discarded op took tick 5
        Operation(3, "x", "compare_and_set", 8, 5, True, 7, 8),
        Operation(4, "x", "delete", None, None, None, 9, None),
    ]
    assert rec.history(include_pending=False) == history[:4]
    rec.complete(pending)
    with pytest.raises(ValueError, match="already finished"):
        rec.fail_unknown(pending)
    with pytest.raises(ValueError, match="unknown operation kind"):
        rec.invoke(1, "x", "incr")  # type: ignore[arg-type]
    assert check_linearizable(rec.history())


async def test_recorder_marks_cancelled_ops_unknown() -> None:
    rec = HistoryRecorder(clock=Ticks())

    async def slow_write() -> None:
        async with rec.op(1, "x", "set", 1):
            await asyncio.sleep(10)

    task = asyncio.create_task(slow_write())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rec.history() == [Operation(1, "x", "set", 1, None, None, 1, None)]


class AsyncRegister:
    """A toy async key-value store; `stale_reads` serves reads from a per-client cache."""

    def __init__(self, rng: random.Random, *, stale_reads: bool = False) -> None:
        self.data: dict[str, Any] = {}
        self.cache: dict[tuple[int, str], Any] = {}
        self.rng = rng
        self.stale = stale_reads

    async def _hop(self) -> None:
        for _ in range(self.rng.randrange(4)):
            await asyncio.sleep(0)

    async def get(self, client: int, key: str, *, fresh: bool = False) -> Any:
        await self._hop()
        if self.stale and not fresh and (client, key) in self.cache:
            value = self.cache[client, key]
        else:
            value = self.cache[client, key] = self.data.get(key)
        await self._hop()
        return value

    async def compare_and_set(self, key: str, expected: Any, new: Any) -> bool:
        await self._hop()
        swapped: bool = self.data.get(key) == expected
        if swapped:
            self.data[key] = new
        await self._hop()
        return swapped


async def run_clients(register: AsyncRegister, rng: random.Random) -> HistoryRecorder:
    rec = HistoryRecorder(clock=Ticks())

    async def client(c: int) -> None:
        for _ in range(15):
            if rng.random() < 0.5:
                async with rec.op(c, "n", "get") as h:
                    h.output = await register.get(c, "n")
            else:  # an increment as a CAS loop, recorded as its last attempt
                async with rec.op(c, "n", "compare_and_set") as h:
                    while True:
                        h.expected = await register.get(c, "n", fresh=True)
                        h.value = (h.expected or 0) + 1
                        if await register.compare_and_set("n", h.expected, h.value):
                            h.output = True
                            break

    await asyncio.gather(*(client(c) for c in range(4)))
    return rec


async def test_real_async_clients() -> None:
    rec = await run_clients(AsyncRegister(random.Random(1)), random.Random(2))
    assert check_linearizable(rec.history())
    rec = await run_clients(AsyncRegister(random.Random(1), stale_reads=True), random.Random(2))
    result = check_linearizable(rec.history())
    assert result.ok is False
    assert "reads" in result.explanation
