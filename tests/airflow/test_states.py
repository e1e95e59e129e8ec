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
