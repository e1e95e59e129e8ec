"""Scenarios under a real scheduler and triggerer (see conftest.py for the deployment, live_dags.py for the DAGs).

Assertions are causal, not wall-clock: "the failure's descendants ended while the producer was still
running" proves the push without a bound a loaded 2-core machine could miss. The timings are recorded
(``DBTBUS_LIVE_FIGURES``, printed at the end) for docs/airflow.md, not asserted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbtbus._graph import descendants

from ._deployment import TERMINAL, Deployment, TaskState
from .conftest import GATED

PRODUCER = "dbt.dbt_producer"
NOT_SENSORS = {PRODUCER, "dbt.dbtbus_carrier"}
FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _write_figures() -> Iterator[None]:
    yield
    text = json.dumps(FIGURES, indent=2, sort_keys=True)
    print("\nlive-suite figures:\n" + text)
    path = os.environ.get("DBTBUS_LIVE_FIGURES")
    if path:
        Path(path).write_text(text + "\n")


def _run_id(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def _gate(tmp_path: Path, *, create: bool = True) -> Path:
    gate = tmp_path / "gate.csv"
    if create:
        gate.write_text("ok\n1\n")
    return gate


def _sensors(tasks: dict[str, TaskState]) -> dict[str, TaskState]:
    return {k: v for k, v in tasks.items() if k not in NOT_SENSORS}


def _descendants(project: Path, uid: str) -> set[str]:
    nodes = json.loads((project / "manifest.render.json").read_text())["nodes"]
    children: dict[str, list[str]] = {}
    for child, node in nodes.items():
        for parent in node.get("depends_on", {}).get("nodes", []):
            children.setdefault(parent, []).append(child)
    return {f"dbt.{c.rsplit('.', 1)[1]}" for c in descendants(children, uid) if c.startswith("model.")}


def _timings(af: Deployment, dag_id: str, run_id: str) -> dict[str, float]:
    start, end = af.dag_run_times(dag_id, run_id)
    producer = af.tasks(dag_id, run_id)[PRODUCER]
    assert start is not None and end is not None and producer.start is not None and producer.end is not None
    return {"dag_wall_s": round(end - start, 2), "producer_s": round(producer.end - producer.start, 2),
            "tail_s": round(end - producer.end, 2)}


def _clean_run(af: Deployment, dag_id: str, tmp_path: Path) -> tuple[str, dict[str, TaskState]]:
    run_id = _run_id("clean")
    af.trigger(dag_id, run_id, {"gate": str(_gate(tmp_path))})
    state = af.wait_run(dag_id, run_id)
    tasks = af.tasks(dag_id, run_id)
    assert state == "success", {k: v.state for k, v in tasks.items()}
    sensors = _sensors(tasks)
    assert len(sensors) == 14  # the seed, 12 models, the slow Python model
    assert {t.state for t in sensors.values()} == {"success"}
    ran_on_worker = sorted(k for k, t in sensors.items() if t.queued or af.worker_logs(dag_id, run_id, k))
    assert ran_on_worker == [], "these sensors ran on a worker"
    FIGURES[dag_id] = _timings(af, dag_id, run_id)
    return run_id, tasks


def test_clean_run_redis(airflow: Deployment, tmp_path: Path) -> None:
    run_id, _ = _clean_run(airflow, "live_redis", tmp_path)
    log = airflow.task_log("live_redis", run_id, "dbt.m003")
    assert "model.gen.m003" in log and "success" in log


def test_clean_run_xcom(airflow: Deployment, tmp_path: Path) -> None:
    before = airflow.triggerer_log().count("XCom not found")
    run_id, _ = _clean_run(airflow, "live_xcom", tmp_path)
    assert airflow.triggerer_log().count("XCom not found") == before, "a reader asked for a missing XCom"
    producer_log = airflow.task_log("live_xcom", run_id, PRODUCER)
    assert "XCom not found" not in producer_log
    assert "stopped heartbeating" not in "".join(
        airflow.task_log("live_xcom", run_id, t) for t in _sensors(airflow.tasks("live_xcom", run_id)))


@contextlib.contextmanager
def _slow(project: Path) -> Iterator[Path]:
    """dbt's ``slow`` model sleeps while this flag exists (at most 90 s)."""
    flag = project / "slow.flag"
    flag.touch()
    try:
        yield flag
    finally:
        flag.unlink(missing_ok=True)


def _wait_terminal(af: Deployment, dag_id: str, run_id: str, task_ids: set[str], timeout: float = 85) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = af.tasks(dag_id, run_id)
        if all(tasks.get(t) is not None and tasks[t].state in TERMINAL for t in task_ids):
            return
        time.sleep(0.3)


def test_failing_model_ends_its_descendants_while_dbt_runs(airflow: Deployment, live_project: Path,
                                                           tmp_path: Path) -> None:
    dag_id, run_id = "live_redis", _run_id("failing")
    doomed = _descendants(live_project, f"model.gen.{GATED}")
    assert doomed, "the gated model has descendants"
    # No gate: m005 fails; the slow model keeps dbt (and so the producer task) running until the failure's
    # tasks are all terminal (or 90 s pass, which would fail the assertions below).
    with _slow(live_project):
        airflow.trigger(dag_id, run_id, {"gate": str(_gate(tmp_path, create=False))})
        _wait_terminal(airflow, dag_id, run_id, {f"dbt.{GATED}"} | doomed)
    assert airflow.wait_run(dag_id, run_id) == "failed"
    tasks = airflow.tasks(dag_id, run_id)
    failed = {k for k, t in _sensors(tasks).items() if t.state == "failed"}
    assert failed == {f"dbt.{GATED}"} | doomed, {k: t.state for k, t in tasks.items()}
    unrelated = set(_sensors(tasks)) - failed
    assert {tasks[k].state for k in unrelated} == {"success"}
    producer = tasks[PRODUCER]
    assert producer.state == "failed" and producer.end is not None
    gated = tasks[f"dbt.{GATED}"]
    assert gated.end is not None
    for task_id in {f"dbt.{GATED}"} | doomed:
        task = tasks[task_id]
        assert task.end is not None and task.end < producer.end, f"{task_id} ended only after the producer"
        assert not task.queued and not airflow.worker_logs(dag_id, run_id, task_id), f"{task_id} ran on a worker"
    for task_id in doomed:
        log = airflow.task_log(dag_id, run_id, task_id)
        assert f"model.gen.{GATED}" in log and "[upstream_failed]" in log, log[-2000:]
        assert "gate.csv" in log, "the root cause's message is in the descendant's log"
    assert "gate.csv" in airflow.task_log(dag_id, run_id, f"dbt.{GATED}")
    FIGURES["failure_to_descendants_terminal_s"] = round(max(tasks[t].end for t in doomed) - gated.end, 2)
    FIGURES["failure_descendants_before_producer_end_s"] = round(producer.end - max(tasks[t].end for t in doomed), 2)


def _heal_when_producer_retries(af: Deployment, dag_id: str, run_id: str, gate: Path) -> None:
    af.wait_task(dag_id, run_id, PRODUCER, {"up_for_retry"}, timeout=180)
    gate.write_text("ok\n1\n")  # the transient failure is gone by the producer's next try


def _reran_dbt(af: Deployment, dag_id: str, run_id: str) -> list[str]:
    return sorted(t for t in _sensors(af.tasks(dag_id, run_id))
                  if "re-running dbt" in af.task_log(dag_id, run_id, t))


def test_producer_retry_never_collides(airflow: Deployment, tmp_path: Path) -> None:
    dag_id, run_id = "live_producer_retry", _run_id("retry")
    gate = _gate(tmp_path, create=False)
    airflow.trigger(dag_id, run_id, {"gate": str(gate)})
    _heal_when_producer_retries(airflow, dag_id, run_id, gate)
    state = airflow.wait_run(dag_id, run_id)
    tasks = airflow.tasks(dag_id, run_id)
    assert state == "success", {k: (v.state, v.try_number) for k, v in tasks.items()}
    assert tasks[PRODUCER].try_number == 2
    assert _reran_dbt(airflow, dag_id, run_id) == [], "a sensor ran dbt while the producer was retrying"
    retried = {h.task_id for h in airflow.history(dag_id, run_id) if h.task_id != PRODUCER}
    assert f"dbt.{GATED}" in retried  # its first try failed with attempt 1; its retry waited for attempt 2
    logs = "".join(airflow.task_log(dag_id, run_id, t) for t in tasks)
    assert "Could not set lock" not in logs


def test_the_old_retry_rule_races_the_producer(airflow: Deployment, tmp_path: Path) -> None:
    """Without asking Airflow about the producer (the rule before #14), a sensor's retry sees attempt 1's
    ending and runs dbt itself while the producer's retry is pending: a duplicate, concurrent build."""
    dag_id, run_id = "live_producer_retry_old_rule", _run_id("race")
    gate = _gate(tmp_path, create=False)
    airflow.trigger(dag_id, run_id, {"gate": str(gate)})
    _heal_when_producer_retries(airflow, dag_id, run_id, gate)
    airflow.wait_run(dag_id, run_id)
    assert _reran_dbt(airflow, dag_id, run_id), "the race did not show: no sensor re-ran dbt"


def test_sensor_retry_reruns_its_node_once_the_producer_is_done(airflow: Deployment, live_project: Path,
                                                                tmp_path: Path) -> None:
    dag_id, run_id = "live_sensor_retry", _run_id("sensor-retry")
    gate = _gate(tmp_path, create=False)
    airflow.trigger(dag_id, run_id, {"gate": str(gate)})
    airflow.wait_task(dag_id, run_id, PRODUCER, {"failed"}, timeout=180)
    gate.write_text("ok\n1\n")
    state = airflow.wait_run(dag_id, run_id)
    tasks = airflow.tasks(dag_id, run_id)
    rerun = {f"dbt.{GATED}"} | _descendants(live_project, f"model.gen.{GATED}")
    assert {tasks[t].state for t in rerun} == {"success"}, {t: tasks[t].state for t in rerun}
    assert state == "failed"  # the producer itself stays failed: it has no tries left
    assert set(_reran_dbt(airflow, dag_id, run_id)) == rerun
    logs = "".join(airflow.task_log(dag_id, run_id, t) for t in rerun)
    assert "Could not set lock" not in logs


def test_killed_producer_is_producer_lost(airflow: Deployment, live_project: Path, tmp_path: Path) -> None:
    dag_id, run_id = "live_killed", _run_id("killed")
    with _slow(live_project):
        airflow.trigger(dag_id, run_id, {"gate": str(_gate(tmp_path))})
        airflow.wait_task(dag_id, run_id, "dbt.m000", {"success"}, timeout=180)  # dbt is running
        pid = airflow.task_pid(dag_id, run_id, PRODUCER)
        assert pid is not None
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        assert airflow.wait_run(dag_id, run_id) == "failed"
    tasks = airflow.tasks(dag_id, run_id)
    slow = tasks["dbt.slow"]
    assert slow.state == "failed"
    assert "[producer_lost]" in airflow.task_log(dag_id, run_id, "dbt.slow")
    assert {tasks[t].state for t in ("dbt.m000", "dbt.raw_seed")} == {"success"}
    assert slow.end is not None
    FIGURES["kill_to_producer_lost_s"] = round(slow.end - killed_at, 2)


def test_producer_failing_before_dbt_starts(airflow: Deployment) -> None:
    dag_id, run_id = "live_bad_args", _run_id("bad-args")
    airflow.trigger(dag_id, run_id, {})
    assert airflow.wait_run(dag_id, run_id) == "failed"
    tasks = airflow.tasks(dag_id, run_id)
    producer = tasks[PRODUCER]
    assert producer.state == "failed" and producer.end is not None
    sensors = _sensors(tasks)
    assert {t.state for t in sensors.values()} == {"failed"}
    log = airflow.task_log(dag_id, run_id, "dbt.m000")
    assert "no-such-flag" in log or "producer task" in log, log[-2000:]
    FIGURES["producer_failed_to_sensors_terminal_s"] = round(
        max(t.end for t in sensors.values() if t.end is not None) - producer.end, 2)


def test_memray_profile_on_a_worker(airflow: Deployment, live_project: Path, tmp_path: Path) -> None:
    """The producer task, run by the scheduler's executor, profiles dbt into its own file; the run stays green."""
    import memray

    run_id, _ = _clean_run(airflow, "live_memray", tmp_path)
    profile = live_project / f"memray-{run_id}-1.bin"
    reader = memray.FileReader(profile)
    assert reader.metadata.total_allocations > 0
    assert reader.metadata.peak_memory > 2**20
    assert f"dbt's memory profile is in {profile}" in airflow.task_log("live_memray", run_id, PRODUCER)
