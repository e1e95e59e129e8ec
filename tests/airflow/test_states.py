"""The Airflow state of every outcome."""

from __future__ import annotations

from dbtbus import Outcome, OutcomeKind
from dbtbus.airflow._states import AIRFLOW_STATE, airflow_state
from dbtbus.events import RunFinished


def test_every_outcome_kind_has_an_airflow_state() -> None:
    assert set(AIRFLOW_STATE) == set(OutcomeKind)
    ok_end = RunFinished(run_id="r", success=True)
    failed_end = RunFinished(run_id="r", success=False, exit_code=2, error="bad flag")
    not_run = Outcome(kind=OutcomeKind.NOT_RUN, run_id="r", unique_id="u", ending=ok_end)
    assert airflow_state(not_run) == "skipped"
    assert airflow_state(not_run, "fail") == "failed"
    doomed = Outcome(kind=OutcomeKind.NOT_RUN, run_id="r", unique_id="u", ending=failed_end)
    assert airflow_state(doomed) == "failed"  # dbt failed: a skip would be a false green


def test_a_run_gone_or_its_data_lost_fails_the_task_never_skips_it() -> None:
    # The node may well have run: its answer was lost (data_lost) or deleted with the run (run_not_found).
    for kind in (OutcomeKind.DATA_LOST, OutcomeKind.RUN_NOT_FOUND):
        assert airflow_state(Outcome(kind=kind, run_id="r", unique_id="u")) == "failed"
        assert airflow_state(Outcome(kind=kind, run_id="r", unique_id="u"), "fail") == "failed"
