"""dref-raft's errors: one module, every class in core's tree and drawn in its docstring."""

from __future__ import annotations

from dref_compat.error_tree import check_error_module


def test_every_raft_error_lives_in_dref_raft_errors() -> None:
    # The simulation is a checking tool, not the backend: an invariant it finds broken is an
    # AssertionError (a failed check), on purpose outside the dref error tree.
    problems = check_error_module("dref_raft")
    assert [p for p in problems if not p.startswith("dref_raft.simulation.invariants.")] == []
    assert len(problems) == 2  # InvariantViolation: defined outside, not a DRefError
