"""The XCom backend's door to Airflow's Task SDK (``TaskSdkXComApi``), where it differs in the triggerer."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

from dbtbus.backends.xcom import Carrier, TaskSdkXComApi

CARRIER = Carrier("dag", "dbt.dbtbus_carrier", "manual__1")


def _started_in_the_triggerer(monkeypatch: pytest.MonkeyPatch, state: str | None) -> bool:
    asked: list[dict[str, Any]] = []

    def get_task_states(**where: Any) -> dict[str, dict[str, str | None]]:
        asked.append(where)
        return {CARRIER.run_id: {CARRIER.task_id: state}}

    monkeypatch.setattr(TaskSdkXComApi, "_in_triggerer", staticmethod(lambda: True))
    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(get_task_states))
    started = TaskSdkXComApi().carrier_started(CARRIER)
    assert asked == [{"dag_id": "dag", "task_ids": [CARRIER.task_id], "run_ids": [CARRIER.run_id], "map_index": None}]
    return started


@pytest.mark.parametrize("state", ["success", "failed", "up_for_retry"])
def test_a_carrier_that_ran_to_its_end_has_created_the_head(monkeypatch: pytest.MonkeyPatch, state: str) -> None:
    assert _started_in_the_triggerer(monkeypatch, state)


@pytest.mark.parametrize("state", [None, "scheduled", "queued", "running", "skipped", "upstream_failed"])
def test_a_carrier_still_running_or_never_run_may_not_have(monkeypatch: pytest.MonkeyPatch, state: str | None) -> None:
    """Sensors start beside the carrier: a running carrier may be before its ``ensure_run`` (the live suite's
    triggerer logged "XCom not found" for the head of a run whose carrier had just started)."""
    assert not _started_in_the_triggerer(monkeypatch, state)


def test_a_task_process_reads_quietly_and_never_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TaskSdkXComApi, "_in_triggerer", staticmethod(lambda: False))
    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(lambda **_: pytest.fail("asked")))
    assert TaskSdkXComApi().carrier_started(CARRIER)
