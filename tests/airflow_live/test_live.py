"""Scenarios under a real scheduler and triggerer (see conftest.py for the deployment)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ._deployment import TERMINAL, Deployment

SENSOR_PREFIX = "dbt."
PRODUCER = "dbt.dbt_producer"


def _run_id(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def _gate(tmp_path: Path) -> str:
    gate = tmp_path / "gate.csv"
    gate.write_text("ok\n1\n")
    return str(gate)


def _sensors(tasks: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in tasks.items() if k.startswith(SENSOR_PREFIX) and k not in (PRODUCER, "dbt.dbtbus_carrier")}


def test_clean_run_redis(airflow: Deployment, tmp_path: Path) -> None:
    run_id = _run_id("clean")
    airflow.trigger("live_redis", run_id, {"gate": _gate(tmp_path)})
    state = airflow.wait_run("live_redis", run_id)
    tasks = airflow.tasks("live_redis", run_id)
    assert state == "success", {k: v.state for k, v in tasks.items()}
    sensors = _sensors(tasks)
    assert len(sensors) == 14  # 1 seed, 12 models, 1 slow model
    assert {t.state for t in sensors.values()} == {"success"}
    ran_on_worker = sorted(k for k, t in sensors.items() if t.queued or airflow.worker_logs("live_redis", run_id, k))
    assert ran_on_worker == []
