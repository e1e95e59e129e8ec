"""RunState on its own: the wait semantics without any I/O."""

from __future__ import annotations

from dbtbus import NodeFailed, NodeNotInRun, NodeNotRun, ProducerLost, UpstreamFailed
from dbtbus._state import RunState
from dbtbus.events import NodeResult, RunFinished

from ._records import RUN, result, started

MODEL_WITH_TESTS = {
    "model.a": [],
    "model.b": [],
    "test.a_unique": ["model.a"],
    "test.rel_a_b": ["model.a", "model.b"],
}


def fold(*records: object) -> RunState:
    state = RunState(RUN)
    for record in records:
        state.apply(record)  # type: ignore[arg-type]
    return state


def test_include_tests_ignores_a_test_doomed_by_another_parent() -> None:
    state = fold(
        started(MODEL_WITH_TESTS), result("model.b", "error"), result("model.a"), result("test.a_unique", "pass")
    )
    assert isinstance(state.outcome("test.rel_a_b"), UpstreamFailed)
    assert isinstance(state.outcome("model.a", include_tests=True), NodeResult)


def test_include_tests_does_not_hand_out_a_success_whose_tests_never_ran() -> None:
    state = fold(started(MODEL_WITH_TESTS), result("model.a"), result("model.b"), result("test.rel_a_b", "pass"))
    assert state.outcome("model.a", include_tests=True) is None  # test.a_unique pending
    state.apply(RunFinished(run_id=RUN, success=False))
    outcome = state.outcome("model.a", include_tests=True)
    assert isinstance(outcome, NodeNotRun) and outcome.unique_id == "model.a"
    assert isinstance(state.outcome("model.a"), NodeResult)  # without the gate the model itself is fine


def test_include_tests_reports_a_lost_producer() -> None:
    state = fold(started(MODEL_WITH_TESTS), result("model.a"))
    assert state.mark_lost()
    outcome = state.outcome("model.a", include_tests=True)
    assert isinstance(outcome, ProducerLost) and "test." in str(outcome)


def test_a_retry_that_leaves_a_failed_test_out_keeps_its_failure() -> None:
    """Attempt 2 reruns only model.b; model.a's failed test from attempt 1 still gates model.a."""
    state = fold(
        started(MODEL_WITH_TESTS),
        result("model.a"),
        result("test.a_unique", "fail", failures=2),
        result("model.b", "error"),
        RunFinished(run_id=RUN, success=False),
        started({"model.b": [], "test.rel_a_b": ["model.b"]}, attempt=2),
    )
    outcome = state.outcome("model.a", include_tests=True)
    assert isinstance(outcome, NodeFailed) and outcome.record.unique_id == "test.a_unique"
    assert state.outcome("model.b") is None  # rerun: its attempt-1 error is forgotten
    assert isinstance(state.outcome("model.a"), NodeResult)


def test_a_retry_forgets_failures_of_the_nodes_it_reruns() -> None:
    state = fold(started(MODEL_WITH_TESTS), result("model.a", "error"), started(MODEL_WITH_TESTS, attempt=2))
    assert state.outcome("model.a") is None
    assert state.outcome("test.a_unique") is None  # no longer doomed by the old failure
    state.apply(result("model.a", attempt=2))
    assert isinstance(state.outcome("model.a"), NodeResult)


def test_nodes_outside_every_graph_are_not_in_the_run() -> None:
    state = fold(started(MODEL_WITH_TESTS))
    assert isinstance(state.outcome("model.zzz"), NodeNotInRun)
