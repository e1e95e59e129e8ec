"""RunState on its own: every rule about a run, decided without any I/O, as data."""

from __future__ import annotations

import pytest

from dbtbus import NodeFailed, NodeNotInRun, NodeNotRun, OutcomeKind, ProducerLost, RunStatus, UpstreamFailed
from dbtbus._state import RunState
from dbtbus.events import Heartbeat, NodeStarted, RunCrashed, RunFinished

from ._records import DIAMOND, RUN, result, started

K = OutcomeKind

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


def kinds(state: RunState, *uids: str, include_tests: bool = False) -> list[OutcomeKind]:
    return [state.outcome(uid, include_tests=include_tests).kind for uid in uids]


# ---------------------------------------------------------------------------------------------- outcomes


def test_before_the_run_starts_everything_is_pending() -> None:
    state = fold()
    assert state.status is RunStatus.PENDING and state.attempt == 0
    assert state.outcome("model.a").kind is K.PENDING
    assert not state.outcome("model.a").terminal


def test_each_kind_from_the_records() -> None:
    state = fold(started(DIAMOND), result("seed.s"), result("model.a"), result("test.a_ok", "pass"))
    assert kinds(state, "seed.s", "model.a", "test.a_ok") == [K.SUCCESS] * 3
    assert state.outcome("model.zzz").kind is K.NOT_IN_RUN
    assert state.outcome("model.b").kind is K.PENDING
    state.apply(result("model.b", "error", message="boom"))
    failed = state.outcome("model.b")
    assert failed.kind is K.FAILED and failed.record is not None and failed.record.message == "boom"
    state.apply(RunFinished(run_id=RUN, success=False))
    assert state.outcome("model.x").kind is K.NOT_RUN
    assert state.status is RunStatus.FINISHED


@pytest.mark.parametrize("status", ["warn", "pass", "no-op", "reused", "success"])
def test_success_like_statuses_are_successes(status: str) -> None:
    assert fold(started(DIAMOND), result("model.a", status)).outcome("model.a").ok


@pytest.mark.parametrize("status", ["error", "fail", "runtime error", "partial success"])
def test_failing_statuses_fail(status: str) -> None:
    assert fold(started(DIAMOND), result("model.a", status)).outcome("model.a").kind is K.FAILED


# ---------------------------------------------------------------------------------------------- propagation


def test_build_propagates_errors_fails_and_skips_but_not_warnings() -> None:
    state = fold(started(DIAMOND), result("seed.s"), result("model.a"), result("test.a_ok", "warn"))
    assert state.outcome("model.b").kind is K.PENDING
    state.apply(result("model.b"))
    state.apply(result("test.b_fails", "fail", failures=3))
    outcome = state.outcome("model.c")
    assert outcome.kind is K.UPSTREAM_FAILED and outcome.cause == "test.b_fails"
    assert outcome.cause_record is not None and outcome.cause_record.failures == 3
    assert state.outcome("model.x").kind is K.PENDING  # unrelated


def test_run_does_not_propagate_test_failures() -> None:
    # `dbt run` skips children of errors only; a failing test there cannot happen, but a fail status must
    # not doom anything under `run`'s rule.
    state = fold(started(DIAMOND, command="run"), result("model.a", "fail"))
    assert state.outcome("model.b").kind is K.PENDING
    state.apply(result("model.a", "error"))
    assert state.outcome("model.b").kind is K.UPSTREAM_FAILED


def test_test_command_does_not_skip_anything() -> None:
    state = fold(started(DIAMOND, command="test"), result("test.a_ok", "fail"))
    assert state.outcome("model.b").kind is K.PENDING


def test_on_error_continue_does_not_doom_children() -> None:
    state = fold(started(DIAMOND, continue_on_error=frozenset({"model.a"})), result("model.a", "error"))
    assert state.outcome("model.b").kind is K.PENDING
    assert state.outcome("model.a").kind is K.FAILED


def test_the_cause_is_the_root_of_a_skip_cascade() -> None:
    state = fold(
        started(DIAMOND),
        result("seed.s", "error"),
        result("model.a", "skipped", skip_cause="seed.s"),
        result("model.b", "skipped", skip_cause="model.a"),
    )
    for uid in ("model.a", "model.b", "model.c", "test.a_ok"):
        outcome = state.outcome(uid)
        assert outcome.kind is K.UPSTREAM_FAILED and outcome.cause == "seed.s", uid


def test_a_live_and_a_late_waiter_agree_under_fail_fast() -> None:
    """--fail-fast: dbt stops after the failure and publishes not_run for the rest; doomed stays doomed."""
    log = [
        started(DIAMOND),
        result("seed.s"),
        result("model.a", "error"),
        result("model.x", "not_run", message="not run: fail-fast"),
        result("test.a_ok", "not_run"),
        result("model.b", "not_run"),
        result("test.b_fails", "not_run"),
        result("model.c", "not_run"),
        RunFinished(run_id=RUN, success=False, exit_code=1),
    ]
    live = RunState(RUN)
    seen: dict[str, OutcomeKind] = {}
    for record in log:
        live.apply(record)
        for uid in DIAMOND:
            outcome = live.outcome(uid)
            if outcome.terminal and uid not in seen:
                seen[uid] = outcome.kind  # what a waiter registered before the run was answered
    late = fold(*log)
    assert seen == {uid: late.outcome(uid).kind for uid in DIAMOND}
    assert seen["model.c"] is K.UPSTREAM_FAILED and seen["model.x"] is K.NOT_RUN


# ---------------------------------------------------------------------------------------------- tests gate


def test_include_tests_ignores_a_test_doomed_by_another_parent() -> None:
    state = fold(
        started(MODEL_WITH_TESTS), result("model.b", "error"), result("model.a"), result("test.a_unique", "pass")
    )
    assert isinstance(state.outcome("test.rel_a_b").error(), UpstreamFailed)
    assert state.outcome("model.a", include_tests=True).ok


def test_include_tests_does_not_hand_out_a_success_whose_tests_never_ran() -> None:
    state = fold(started(MODEL_WITH_TESTS), result("model.a"), result("model.b"), result("test.rel_a_b", "pass"))
    assert state.outcome("model.a", include_tests=True).kind is K.PENDING  # test.a_unique pending
    state.apply(RunFinished(run_id=RUN, success=False))
    outcome = state.outcome("model.a", include_tests=True)
    assert isinstance(outcome.error(), NodeNotRun) and outcome.unique_id == "model.a"
    assert state.outcome("model.a").ok  # without the gate the model itself is fine


def test_include_tests_fails_with_the_failing_test() -> None:
    state = fold(started(MODEL_WITH_TESTS), result("model.a"), result("test.a_unique", "fail", failures=1))
    outcome = state.outcome("model.a", include_tests=True)
    assert outcome.kind is K.FAILED and outcome.record is not None and outcome.record.unique_id == "test.a_unique"
    error = outcome.error()
    assert isinstance(error, NodeFailed) and "a test of model.a" in str(error)


def test_include_tests_reports_a_lost_producer() -> None:
    state = fold(started(MODEL_WITH_TESTS), result("model.a"))
    assert state.mark_lost()
    outcome = state.outcome("model.a", include_tests=True)
    assert isinstance(outcome.error(), ProducerLost) and "test." in outcome.message


# ---------------------------------------------------------------------------------------------- attempts


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
    assert isinstance(outcome.error(), NodeFailed) and outcome.record is not None
    assert outcome.record.unique_id == "test.a_unique"
    assert state.outcome("model.b").kind is K.PENDING  # rerun: its attempt-1 error is forgotten
    assert state.outcome("model.a").ok


def test_a_retry_forgets_failures_of_the_nodes_it_reruns() -> None:
    state = fold(started(MODEL_WITH_TESTS), result("model.a", "error"), started(MODEL_WITH_TESTS, attempt=2))
    assert state.outcome("model.a").kind is K.PENDING
    assert state.outcome("test.a_unique").kind is K.PENDING  # no longer doomed by the old failure
    state.apply(result("model.a", attempt=2))
    assert state.outcome("model.a").ok


def test_an_announced_attempt_without_a_graph_then_its_graph() -> None:
    """The producer announces attempt 2 before dbt planned it; the graph follows in a second RunStarted."""
    state = fold(
        started(MODEL_WITH_TESTS),
        result("model.a"),
        result("test.a_unique", "fail"),
        result("model.b", "error"),
        RunFinished(run_id=RUN, success=False),
        started(None, attempt=2),
    )
    assert state.status is RunStatus.RUNNING and state.attempt == 2 and state.ending is None
    assert state.outcome("model.a").ok  # successes stand
    assert state.outcome("model.b").kind is K.PENDING  # it may well be rerun
    assert state.outcome("test.a_unique").kind is K.PENDING
    state.apply(started({"model.b": [], "test.rel_a_b": ["model.a", "model.b"]}, attempt=2))
    assert state.outcome("test.a_unique").kind is K.FAILED  # not rerun: its failure stands again
    assert state.outcome("model.b").kind is K.PENDING


def test_records_of_an_older_attempt_are_stale() -> None:
    state = fold(started(MODEL_WITH_TESTS), result("model.a", "error"), started(MODEL_WITH_TESTS, attempt=2))
    state.apply(result("model.a", "error", attempt=1))  # a zombie of attempt 1
    state.apply(RunCrashed(run_id=RUN, error="old", attempt=1))
    state.apply(started(MODEL_WITH_TESTS, attempt=1))
    assert state.attempt == 2 and state.ending is None
    assert state.outcome("model.a").kind is K.PENDING


def test_min_attempt_waits_for_that_attempt() -> None:
    state = fold(started(MODEL_WITH_TESTS), result("model.a", "error"), RunFinished(run_id=RUN, success=False))
    assert state.outcome("model.a").kind is K.FAILED
    assert state.outcome("model.a", min_attempt=2).kind is K.PENDING
    state.apply(started(MODEL_WITH_TESTS, attempt=2))
    state.apply(result("model.a", attempt=2))
    outcome = state.outcome("model.a", min_attempt=2)
    assert outcome.ok and outcome.attempt == 2


def test_resume_excludes_successes_whose_tests_did_not_fail() -> None:
    state = fold(
        started(MODEL_WITH_TESTS),
        result("model.a"),
        result("model.b"),
        result("test.a_unique", "fail"),
        result("test.rel_a_b", "pass"),
    )
    assert state.resume_excludes() == ["model.b", "test.rel_a_b"]


def test_needs_rerun_only_once_the_run_is_over() -> None:
    state = fold(started(DIAMOND), result("seed.s"), result("model.a", "error"))
    assert not state.needs_rerun("model.a")  # the run is still going
    state.apply(RunFinished(run_id=RUN, success=False))
    assert state.needs_rerun("model.a") and state.needs_rerun("model.b")
    assert not state.needs_rerun("seed.s")
    lost = fold(started(DIAMOND), result("seed.s"))
    assert lost.mark_lost() and lost.needs_rerun("model.a") and lost.status is RunStatus.LOST


# ---------------------------------------------------------------------------------------------- liveness


def test_a_heartbeat_after_a_loss_means_alive_again_and_is_kept() -> None:
    state = fold(started(DIAMOND))
    assert state.mark_lost() and not state.mark_lost()
    assert state.outcome("model.a").kind is K.PRODUCER_LOST
    state.apply(Heartbeat(run_id=RUN, running=1, peak_rss=10))
    assert not state.lost and state.outcome("model.a").kind is K.PENDING
    assert [h.peak_rss for h in state.heartbeats] == [10]


def test_running_nodes_are_tracked_until_their_result() -> None:
    state = fold(started(DIAMOND), NodeStarted(run_id=RUN, unique_id="seed.s", thread="Thread-1"))
    assert list(state.running) == ["seed.s"]
    state.apply(result("seed.s"))
    assert not state.running and state.counts() == {"success": 1}
    assert "model.a" in set(state.pending())


def test_a_crash_ends_the_run_as_crashed_and_says_so() -> None:
    state = fold(started(DIAMOND), RunCrashed(run_id=RUN, error="KeyboardInterrupt"))
    assert state.status is RunStatus.CRASHED
    assert "crashed: KeyboardInterrupt" in str(state.outcome("model.a").error())


def test_a_finished_run_with_an_error_is_not_called_crashed() -> None:
    state = fold(started(DIAMOND), RunFinished(run_id=RUN, success=False, exit_code=2, error="Compilation Error"))
    message = str(state.outcome("model.a").error())
    assert "crashed" not in message and "Compilation Error" in message


def test_nodes_outside_every_graph_are_not_in_the_run() -> None:
    state = fold(started(MODEL_WITH_TESTS))
    assert isinstance(state.outcome("model.zzz").error(), NodeNotInRun)


def test_a_skip_without_a_named_cause_is_still_an_upstream_failure() -> None:
    """An info-level log replayed without a graph: dbt said skipped, not which ancestor failed."""
    state = fold(started(None), result("model.a", "error"), result("model.b", "skipped"))
    outcome = state.outcome("model.b")
    assert outcome.kind is K.UPSTREAM_FAILED and outcome.cause is None
    assert "an upstream node failed" in str(outcome.error())
    fail_fast = fold(started(None), result("model.b", "skipped", message="Skipping due to fail_fast"))
    assert fail_fast.outcome("model.b").kind is K.NOT_RUN


def test_the_total_holds_what_earlier_attempts_keep() -> None:
    """A resumed attempt selects fewer nodes than the run has: no counter may say "44 of 18 done"."""
    state = fold(
        started(MODEL_WITH_TESTS), result("model.a"), result("model.b"), result("test.a_unique", "fail"),
        result("test.rel_a_b", "pass"),
    )
    assert state.total == 4
    state.apply(started({"model.a": [], "test.a_unique": ["model.a"]}, attempt=2))
    assert len(state.results) == 3 and state.total == 4  # successes stand; model.b and test.rel_a_b are not rerun
    state.apply(result("model.a", attempt=2))
    state.apply(result("test.a_unique", "pass", attempt=2))
    assert len(state.results) == 4 and state.total == 4
    assert fold().total is None


def test_resume_never_leaves_out_project_hooks() -> None:
    """dbt runs project hooks with every attempt, whatever its selection: excluding them means nothing."""
    hook = "operation.p.p-on-run-start-0"
    state = fold(started({**MODEL_WITH_TESTS, hook: []}), result(hook), result("model.a"))
    assert state.resume_excludes() == ["model.a"]
    assert state.total == 5


def test_a_run_gone_mid_run_answers_run_not_found_for_what_it_had_not_decided() -> None:
    state = RunState(RUN)
    assert not state.mark_gone()  # never seen: nothing to say (it may not have started yet)
    state.apply(started(DIAMOND))
    state.apply(result("seed.s"))
    assert state.mark_gone() and not state.mark_gone()
    assert state.status is RunStatus.GONE and state.over
    assert state.outcome("seed.s").kind is OutcomeKind.SUCCESS  # decided before: it stands
    assert state.outcome("model.a").kind is OutcomeKind.RUN_NOT_FOUND
    assert state.outcome("seed.s", include_tests=False).ok
    assert state.outcome("model.zz").kind is OutcomeKind.NOT_IN_RUN
    state.apply(started(DIAMOND, attempt=2))  # a later attempt brings the run back
    assert state.status is RunStatus.RUNNING and state.outcome("model.a").kind is OutcomeKind.PENDING


def test_a_tombstone_makes_a_run_never_read_gone_until_a_record_comes() -> None:
    """Issue #27 item 4: a run deleted or expired before this reader came is gone, not "not started yet";
    the first record read after it (the run id used again) takes that back."""
    state = RunState(RUN, from_start=True)
    assert state.status is RunStatus.PENDING and state.may_be_tombstoned
    assert state.mark_tombstoned() and not state.mark_tombstoned()
    assert state.status is RunStatus.GONE and state.tombstoned
    outcome = state.outcome("model.a")
    assert outcome.kind is OutcomeKind.RUN_NOT_FOUND and outcome.detail == "a tombstone says so"
    assert state.outcome("model.a", min_attempt=2).kind is OutcomeKind.PENDING  # a later attempt may come
    state.apply(started(DIAMOND))
    assert not state.gone and not state.tombstoned and state.status is RunStatus.RUNNING
    assert state.outcome("model.a").kind is OutcomeKind.PENDING
    assert not state.mark_tombstoned()  # a log with records in it is not a deleted run's


def test_a_finished_run_is_never_gone() -> None:
    state = RunState(RUN)
    state.apply(started(DIAMOND))
    state.apply(RunFinished(run_id=RUN, success=True))
    assert not state.mark_gone()
    assert state.outcome("model.a").kind is OutcomeKind.NOT_RUN


def test_the_producers_clock_skew_is_measured_against_the_backends_and_undone() -> None:
    """Issue #27: times are the producer's; the backend's store time of each record says how far off it is."""
    from datetime import datetime, timedelta, timezone

    from dbtbus.events import ProducerInfo
    from dbtbus.testing.records import run_started

    t0 = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
    server = t0.timestamp()
    state = RunState(RUN)
    assert state.clock_skew is None and state.backend_time(t0) == t0  # unknown: shown as stamped
    first = started({"model.a": []}, started_at=t0 + timedelta(seconds=90))
    state.note_stored_at(first, server + 0.002)  # stored 2 ms after it was stamped
    state.apply(first)
    late = Heartbeat(run_id=RUN, at=t0 + timedelta(seconds=95), attempt=1)
    state.note_stored_at(late, server + 30)  # buffered through an outage: a smaller sample, not the skew
    assert state.clock_skew == pytest.approx(89.998)
    assert state.backend_time(t0 + timedelta(seconds=90)) == t0 + timedelta(seconds=0.002)
    assert state.producer_time(t0) == t0 + timedelta(seconds=89.998)
    # A retry by another producer (another host, another clock) starts the estimate afresh...
    retry = run_started({"model.a": []}, run_id=RUN, attempt=2, started_at=t0 - timedelta(seconds=50),
                        producer=ProducerInfo(id="elsewhere"))  # fmt: skip
    state.note_stored_at(retry, server + 10)
    state.apply(retry)
    assert state.clock_skew == pytest.approx(-60)
    # ...and a straggler of the older attempt, on the old clock, does not move it.
    state.note_stored_at(result("model.a", attempt=1, finished_at=t0 + timedelta(seconds=200)), server + 11)
    assert state.clock_skew == pytest.approx(-60)
