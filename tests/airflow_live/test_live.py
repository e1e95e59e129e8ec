"""Scenarios under a real scheduler and triggerer (see conftest.py for the deployment, live_dags.py for the DAGs).

Assertions are causal, not wall-clock: "the failure's descendants ended while the producer was still
running" proves the push without a bound a loaded 2-core machine could miss. The timings are recorded
(``DBTBUS_LIVE_FIGURES``, printed at the end) for docs/airflow.md, not asserted.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from ._deployment import Deployment
from ._scenario import (
    FIGURES,
    PRODUCER,
    Scenario,
    clean_run,
    descendants,
    gate_file,
    heal_when_producer_retries,
    new_run_id,
    project_nodes,
    reran_dbt,
    slowed,
    start,
)
from .conftest import GATED

LAYOUTS = pytest.mark.parametrize("layout", ["one_dag", "split"])


@LAYOUTS
def test_clean_run_redis(airflow: Deployment, tmp_path: Path, layout: str) -> None:
    run = clean_run(airflow, "live_redis", layout, tmp_path)
    log = run.log("dbt.m003")
    assert "model.gen.m003" in log and "success" in log


@LAYOUTS
def test_clean_run_xcom(airflow: Deployment, tmp_path: Path, layout: str) -> None:
    before = airflow.triggerer_log().count("XCom not found")
    run = clean_run(airflow, "live_xcom", layout, tmp_path)
    assert airflow.triggerer_log().count("XCom not found") == before, "a reader asked for a missing XCom"
    assert "XCom not found" not in run.log(PRODUCER)
    assert "stopped heartbeating" not in "".join(run.log(t) for t in run.nodes())


@LAYOUTS
def test_failing_model_ends_its_descendants_while_dbt_runs(airflow: Deployment, live_project: Path,
                                                           tmp_path: Path, layout: str) -> None:
    doomed = descendants(live_project, f"model.gen.{GATED}")
    assert doomed, "the gated model has descendants"
    # No gate: m005 fails; the slow model keeps dbt (and so the producer task) running until the failure's
    # tasks are all terminal (or 90 s pass, which would fail the assertions below).
    with slowed(live_project):
        run = start(airflow, "live_redis", layout, {"gate": str(gate_file(tmp_path, create=False))})
        run.wait_terminal({f"dbt.{GATED}"} | doomed)
    assert run.wait() == "failed"
    nodes = run.nodes()
    failed = {k for k, t in nodes.items() if t.state == "failed"}
    assert failed == {f"dbt.{GATED}"} | doomed, {k: t.state for k, t in nodes.items()}
    assert {nodes[k].state for k in set(nodes) - failed} == {"success"}
    producer = run.producer()
    assert producer.state == "failed" and producer.end is not None
    gated = nodes[f"dbt.{GATED}"]
    assert gated.end is not None
    for label in {f"dbt.{GATED}"} | doomed:
        task = nodes[label]
        assert task.end is not None and task.end < producer.end, f"{label} ended only after the producer"
        assert not run.ran_on_a_worker(label), f"{label} ran on a worker"
    for label in doomed:
        log = run.log(label)
        assert f"model.gen.{GATED}" in log and "[upstream_failed]" in log, log[-2000:]
        assert "gate.csv" in log, "the root cause's message is in the descendant's log"
    assert "gate.csv" in run.log(f"dbt.{GATED}")
    if layout == "split":  # the group's task for the failing model's node DAG says which node failed and why
        failing_dag = run.where()[f"dbt.{GATED}"][0]
        task_id = f"dbt.nodes_{failing_dag.rsplit('.', 1)[1]}"
        assert run.group_tasks()[task_id].state == "failed"
        assert f"model.gen.{GATED}" in airflow.task_log(run.dag_id, run.run_id, task_id)
    FIGURES[f"failure_to_descendants_terminal_s[{layout}]"] = round(max(nodes[t].end for t in doomed) - gated.end, 2)
    FIGURES[f"failure_descendants_before_producer_end_s[{layout}]"] = round(
        producer.end - max(nodes[t].end for t in doomed), 2)


@LAYOUTS
def test_producer_retry_never_collides(airflow: Deployment, tmp_path: Path, layout: str) -> None:
    gate = gate_file(tmp_path, create=False)
    run = start(airflow, "live_producer_retry", layout, {"gate": str(gate)})
    heal_when_producer_retries(run, gate)
    state = run.wait()
    nodes = run.nodes()
    assert state == "success", {k: (v.state, v.try_number) for k, v in nodes.items()}
    assert run.producer().try_number == 2
    assert reran_dbt(run) == [], "a sensor ran dbt while the producer was retrying"
    retried = {label for label, _ in run.history()}
    assert f"dbt.{GATED}" in retried  # its first try failed with attempt 1; its retry waited for attempt 2
    logs = "".join(run.log(t) for t in nodes)
    assert "Could not set lock" not in logs


def test_the_old_retry_rule_races_the_producer(airflow: Deployment, tmp_path: Path) -> None:
    """Without asking Airflow about the producer (the rule before #14), a sensor's retry sees attempt 1's
    ending and runs dbt itself while the producer's retry is pending: a duplicate, concurrent build."""
    gate = gate_file(tmp_path, create=False)
    run = start(airflow, "live_producer_retry_old_rule", "one_dag", {"gate": str(gate)})
    heal_when_producer_retries(run, gate)
    run.wait()
    assert reran_dbt(run), "the race did not show: no sensor re-ran dbt"


@LAYOUTS
def test_sensor_retry_reruns_its_node_once_the_producer_is_done(airflow: Deployment, live_project: Path,
                                                                tmp_path: Path, layout: str) -> None:
    gate = gate_file(tmp_path, create=False)
    run = start(airflow, "live_sensor_retry", layout, {"gate": str(gate)})
    airflow.wait_task(run.dag_id, run.run_id, PRODUCER, {"failed"}, timeout=180)
    gate.write_text("ok\n1\n")
    state = run.wait()
    nodes = run.nodes()
    rerun = {f"dbt.{GATED}"} | descendants(live_project, f"model.gen.{GATED}")
    assert {nodes[t].state for t in rerun} == {"success"}, {t: nodes[t].state for t in rerun}
    assert state == "failed"  # the producer itself stays failed: it has no tries left
    assert set(reran_dbt(run)) == rerun
    logs = "".join(run.log(t) for t in rerun)
    assert "Could not set lock" not in logs


@LAYOUTS
def test_killed_producer_is_producer_lost(airflow: Deployment, live_project: Path, tmp_path: Path,
                                          layout: str) -> None:
    with slowed(live_project):
        run = start(airflow, "live_killed", layout, {"gate": str(gate_file(tmp_path))})
        run.wait_node("dbt.m000", {"success"})  # dbt is running
        pid = airflow.task_pid(run.dag_id, run.run_id, PRODUCER)
        assert pid is not None
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        assert run.wait() == "failed"
    nodes = run.nodes()
    slow = nodes["dbt.slow"]
    assert slow.state == "failed"
    assert "[producer_lost]" in run.log("dbt.slow")
    assert {nodes[t].state for t in ("dbt.m000", "dbt.raw_seed")} == {"success"}
    assert slow.end is not None
    FIGURES[f"kill_to_producer_lost_s[{layout}]"] = round(slow.end - killed_at, 2)


@LAYOUTS
def test_producer_failing_before_dbt_starts(airflow: Deployment, layout: str) -> None:
    run = start(airflow, "live_bad_args", layout, {})
    assert run.wait() == "failed"
    producer = run.producer()
    assert producer.state == "failed" and producer.end is not None
    nodes = run.nodes()
    assert {t.state for t in nodes.values()} == {"failed"}
    log = run.log("dbt.m000")
    assert "no-such-flag" in log or "producer task" in log, log[-2000:]
    FIGURES[f"producer_failed_to_sensors_terminal_s[{layout}]"] = round(
        max(t.end for t in nodes.values() if t.end is not None) - producer.end, 2)


def test_memray_profile_on_a_worker(airflow: Deployment, live_project: Path, tmp_path: Path) -> None:
    """The producer task, run by the scheduler's executor, profiles dbt into its own file; the run stays green."""
    import memray

    run = clean_run(airflow, "live_memray", "one_dag", tmp_path)
    profile = live_project / f"memray-{run.run_id}-1.bin"
    reader = memray.FileReader(profile)
    assert reader.metadata.total_allocations > 0
    assert reader.metadata.peak_memory > 2**20
    assert f"dbt's memory profile is in {profile}" in run.log(PRODUCER)


# ---------------------------------------------------------------------------------------------- at scale
# A 200-model project rendered with render_dbt_task_group's defaults: node DAGs of at most 50 tasks.


def _scale_outcome_lag(run: Scenario, live_redis: str) -> float:
    """The slowest node task: its end − its node's finish on the bus (seconds)."""
    import anyio

    import dbtbus
    from dbtbus.airflow import dbtbus_run_id

    async def records() -> dict[str, Any]:
        async with dbtbus.connect(live_redis) as bus:
            state = await bus.run_state(dbtbus_run_id(run.dag_id, run.run_id, -1, "dbt"))
        return dict(state.results)

    results = anyio.run(records)
    lags = []
    for label, task in run.nodes().items():
        name = label.removeprefix("dbt.")
        uid = "seed.gen.raw" if name == "raw_seed" else f"model.gen.{name}"
        record = results.get(uid)
        if task.end is not None and record is not None and record.finished_at is not None:
            lags.append(task.end - record.finished_at.timestamp())
    return max(lags)


def test_scale_clean_run(airflow: Deployment, scale_project: Path, live_redis: str, tmp_path: Path) -> None:
    run = start(airflow, "live_scale", "one_dag", {"gate": str(gate_file(tmp_path))})
    assert run.wait(timeout=600) == "success"
    nodes = run.nodes()
    assert len(nodes) == project_nodes(scale_project) + 1 == 202  # the seed, 200 models, the slow model
    assert {t.state for t in nodes.values()} == {"success"}
    node_dags = run.node_dags()
    assert len(node_dags) >= 5 and all(len(airflow.tasks(d, run.run_id)) <= 50 for d in node_dags)
    assert not [k for k, t in nodes.items() if t.queued], "node tasks ran on a worker"
    FIGURES["scale_200"] = {**run.timings(), "slowest_node_task_after_its_node_s": round(
        _scale_outcome_lag(run, live_redis), 2)}


def test_scale_failing_model(airflow: Deployment, scale_project: Path, tmp_path: Path) -> None:
    doomed = descendants(scale_project, f"model.gen.{GATED}")
    assert len(doomed) >= 10
    # As in test_failing_model: the slow model keeps dbt running until the failure's tasks are all terminal (or
    # 90 s pass, which fails the assertions below), so "before dbt ended" does not race a fast build.
    with slowed(scale_project):
        run = start(airflow, "live_scale", "one_dag", {"gate": str(gate_file(tmp_path, create=False))})
        run.wait_terminal({f"dbt.{GATED}"} | doomed, timeout=120)
    assert run.wait(timeout=600) == "failed"
    nodes = run.nodes()
    failed = {k for k, t in nodes.items() if t.state == "failed"}
    assert failed == {f"dbt.{GATED}"} | doomed
    assert {nodes[k].state for k in set(nodes) - failed} == {"success"}
    producer = run.producer()
    assert producer.end is not None
    ends = [nodes[t].end for t in failed]
    late = {t: None if end is None else round(end - producer.end, 2)
            for t in failed if (end := nodes[t].end) is None or end >= producer.end}
    assert not late, f"these doomed tasks ended only after dbt (seconds after the producer): {late}"
    assert "[upstream_failed]" in run.log(sorted(doomed)[-1])
    FIGURES["scale_200_failure_to_descendants_terminal_s"] = round(
        max(e for e in ends if e is not None) - (nodes[f"dbt.{GATED}"].end or 0), 2)


def test_scale_producer_retry(airflow: Deployment, tmp_path: Path) -> None:
    gate = gate_file(tmp_path, create=False)
    run = start(airflow, "live_scale_retry", "one_dag", {"gate": str(gate)})
    heal_when_producer_retries(run, gate)
    assert run.wait(timeout=600) == "success"
    assert {t.state for t in run.nodes().values()} == {"success"}
    assert run.producer().try_number == 2
    assert reran_dbt(run) == [], "a node task ran dbt while the producer was retrying"
    assert f"dbt.{GATED}" in {label for label, _ in run.history()}


# ---------------------------------------------------------------------------------------------- triggerer loss
# These change the deployment (a triggerer killed and replaced, a second one frozen): they run last and leave
# one healthy triggerer behind. The deployment's health-check threshold is 15 s (conftest's Deployment).

THRESHOLD = 15.0


def _assert_every_node_task_true(run: Scenario) -> None:
    nodes = run.nodes()
    assert len(nodes) == 14 and {t.state for t in nodes.values()} == {"success"}, {k: t.state for k, t in nodes.items()}


def test_a_killed_triggerer_costs_one_heartbeat_threshold(airflow: Deployment, live_project: Path,
                                                          tmp_path: Path) -> None:
    with slowed(live_project) as flag:
        run = start(airflow, "live_redis", "split", {"gate": str(gate_file(tmp_path))})
        run.wait_node("dbt.m000", {"success"})  # dbt runs; the other node tasks wait in the triggerer
        killed_at = time.time()
        airflow.kill_process("triggerer")
        airflow.start_process("triggerer")
        flag.unlink()  # dbt finishes while the new triggerer waits for the dead one's triggers
        assert run.wait(timeout=300) == "success"
    _assert_every_node_task_true(run)
    ends = [t.end for t in run.nodes().values() if t.end is not None]
    recovered = max(ends) - killed_at
    # the dead triggerer's triggers go to the new one once its heartbeat is THRESHOLD old; then they end at once
    assert recovered < THRESHOLD + 20, recovered
    FIGURES["killed_triggerer_to_last_node_task_end_s"] = round(recovered, 2)


def test_a_frozen_triggerer_loses_its_triggers_to_the_other(airflow: Deployment, live_project: Path,
                                                            tmp_path: Path) -> None:
    with slowed(live_project) as flag:
        run = start(airflow, "live_redis", "split", {"gate": str(gate_file(tmp_path))})
        run.wait_node("dbt.m000", {"success"})  # the one triggerer holds every waiting node task
        airflow.start_process("triggerer-2", "triggerer")
        airflow.wait_triggerers(2)
        frozen_at = time.time()
        airflow.signal_process("triggerer", signal.SIGSTOP)
        try:
            flag.unlink()
            assert run.wait(timeout=300) == "success"
            _assert_every_node_task_true(run)
            before = {k: (t.state, t.try_number, t.end) for k, t in run.nodes().items()}
        finally:
            airflow.signal_process("triggerer", signal.SIGCONT)
    time.sleep(THRESHOLD)  # the thawed triggerer finds its triggers gone and must not touch their tasks
    after = {k: (t.state, t.try_number, t.end) for k, t in run.nodes().items()}
    assert after == before
    ends = [t.end for t in run.nodes().values() if t.end is not None]
    FIGURES["frozen_triggerer_to_last_node_task_end_s"] = round(max(ends) - frozen_at, 2)
    airflow.kill_process("triggerer-2")
    airflow.check_alive()


# ---------------------------------------------------------------------------------------------- Airflow Assets
# Issue #29: a node task with its relation as an outlet emits an asset event when its node succeeds, and a DAG
# scheduled on that asset starts while the build still runs.

ASSET_MODEL = "m002"  # as in live_dags.py (which only Airflow imports: it reads the deployment's environment)
ASSET_CONSUMER = "live_assets_consumer"


def _asset_events(af: Deployment, run_id: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(dag id, task id) → the extras of the asset events its task instance emitted in DAG run ``run_id``."""
    rows = af.query("select source_dag_id, source_task_id, extra from asset_event where source_run_id=%s", run_id)
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for dag_id, task_id, extra in rows:
        out.setdefault((str(dag_id), str(task_id)), []).append(extra if isinstance(extra, dict) else json.loads(extra))
    return out


def test_a_task_ended_by_the_triggerer_registers_no_asset_event_and_runs_no_success_callback(
    airflow: Deployment, live_project: Path
) -> None:
    """Airflow 3.3's own DateTimeSensorAsync and trigger, both started in the triggerer with an outlet and an
    on_success_callback: the one the trigger ends (TaskSuccessEvent) succeeds without an asset event and its
    callback never runs — the dag-processor takes the request and drops it; the one resumed on a worker emits
    one and runs its callback. Why dbtbus ends such a success on a worker (dbtbus/airflow/sensors.py)."""
    run_id = new_run_id("probe")
    airflow.trigger("live_asset_probe", run_id)
    assert airflow.wait_run("live_asset_probe", run_id, timeout=120) == "success"
    tasks = airflow.tasks("live_asset_probe", run_id)
    assert {t.state for t in tasks.values()} == {"success"}, tasks
    assert not tasks["ended_by_the_triggerer"].queued and tasks["ended_on_a_worker"].queued
    events = _asset_events(airflow, run_id)
    assert ("live_asset_probe", "ended_by_the_triggerer") not in events, events
    assert len(events[("live_asset_probe", "ended_on_a_worker")]) == 1, events
    dropped = _dropped_success_callback(airflow, run_id, "ended_by_the_triggerer", timeout=90)
    assert _successes_noted(live_project, run_id) == ["live_asset_probe.ended_on_a_worker"], dropped


def _successes_noted(project: Path, run_id: str) -> list[str]:
    """The tasks of DAG run ``run_id`` whose on_success_callback ran (live_dags.note_success)."""
    folder = project / "success-callbacks" / run_id
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _dropped_success_callback(af: Deployment, run_id: str, task_id: str, timeout: float) -> str:
    """Wait for the dag-processor's log line saying it dropped the success callback request of ``task_id`` in
    DAG run ``run_id`` (the request was taken and handled: the callback will not run later); return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        af.check_alive()
        for path in sorted((af.home / "logs" / "dag_processor").rglob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if "not a failure callback" in line and run_id in line and task_id in line:
                    return line
        time.sleep(0.5)
    raise AssertionError(f"the dag-processor never handled the success callback request of {task_id} in "
                         f"{run_id} within {timeout:.0f} s\n{af.tails()}")


def test_node_tasks_with_a_success_callback_run_it(airflow: Deployment, live_project: Path,
                                                   tmp_path: Path) -> None:
    """sensor_kwargs on_success_callback: every node task's success ends on a worker, where Airflow runs it."""
    run = start(airflow, "live_success_callback", "one_dag", {"gate": str(gate_file(tmp_path))})
    assert run.wait() == "success"
    nodes = run.nodes()
    assert len(nodes) == 14 and {t.state for t in nodes.values()} == {"success"}, nodes
    assert [k for k in nodes if not run.ran_on_a_worker(k)] == []
    noted = _successes_noted(live_project, run.run_id)
    assert noted == sorted(f"{run.dag_id}.{task.task_id}" for task in nodes.values()), noted


def _consumer_start(af: Deployment, run_id: str, timeout: float) -> float:
    """When the consumer DAG's run made from an asset event of DAG run ``run_id`` started (epoch seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        af.check_alive()
        rows = af.query(
            "select extract(epoch from dr.start_date) from dag_run dr "
            "join dagrun_asset_event dae on dae.dag_run_id = dr.id join asset_event ae on ae.id = dae.event_id "
            "where dr.dag_id = %s and ae.source_run_id = %s and dr.start_date is not null", ASSET_CONSUMER, run_id)
        if rows:
            return float(rows[0][0])
        time.sleep(0.2)
    raise AssertionError(f"no run of {ASSET_CONSUMER} started from an asset event of {run_id} in {timeout:.0f} s\n"
                         f"{af.tails()}")


@LAYOUTS
def test_a_dag_scheduled_on_a_models_asset_starts_while_dbt_runs(airflow: Deployment, live_project: Path,
                                                                 live_redis: str, tmp_path: Path,
                                                                 layout: str) -> None:
    label = f"dbt.{ASSET_MODEL}"
    # The slow model holds dbt (and so the producer task) until the consumer DAG has started, or 90 s.
    with slowed(live_project):
        run = start(airflow, "live_assets", layout, {"gate": str(gate_file(tmp_path))})
        started = _consumer_start(airflow, run.run_id, timeout=85)
        producer = run.producer()
        assert producer.state == "running" and producer.end is None, "the build was over before the consumer started"
        emitting = run.wait_node(label, {"success"}, timeout=30)
    assert run.wait() == "success"
    assert emitting.end is not None
    # Issue #29's bound: from the model finishing (dbt's own finish, on the bus) to the consumer DAG starting.
    finished = _node_finished(run, live_redis)
    lag = started - finished[label]
    assert lag <= 10, f"the consumer DAG started {lag:.1f} s after {ASSET_MODEL} finished"
    # Only the node with an outlet emitted, once, with its node's metadata; it ended on a worker (the only place
    # Airflow registers outlets), every other node task in the triggerer.
    where = run.where()
    events = _asset_events(airflow, run.run_id)
    assert list(events) == [where[label]], events
    [extra] = events[where[label]]
    from dbtbus.airflow import dbtbus_run_id

    assert extra["unique_id"] == f"model.gen.{ASSET_MODEL}" and extra["status"] == "success", extra
    assert extra["run_id"] == dbtbus_run_id(run.dag_id, run.run_id, -1, "dbt") and extra["attempt"] == 1, extra
    assert extra["execution_time"] > 0, extra
    assert run.ran_on_a_worker(label)
    assert [k for k in run.nodes() if k != label and run.ran_on_a_worker(k)] == []
    others = [t.end - finished[k] for k, t in run.nodes().items()
              if k != label and t.end is not None and k in finished]
    FIGURES[f"assets_{layout}"] = {
        "consumer_started_after_model_finished_s": round(lag, 2),
        "consumer_started_after_model_task_end_s": round(started - emitting.end, 2),
        "model_task_end_after_node_finished_s (worker end, outlets)": round(emitting.end - finished[label], 2),
        "other_node_tasks_end_after_node_finished_s_median (triggerer end)": round(sorted(others)[len(others) // 2], 2),
    }


def _node_finished(run: Scenario, live_redis: str) -> dict[str, float]:
    """``dbt.<name>`` → when its node finished, as the bus says (epoch seconds)."""
    import anyio

    import dbtbus
    from dbtbus.airflow import dbtbus_run_id

    async def records() -> dict[str, Any]:
        async with dbtbus.connect(live_redis) as bus:
            state = await bus.run_state(dbtbus_run_id(run.dag_id, run.run_id, -1, "dbt"))
        return dict(state.results)

    out = {}
    for uid, record in anyio.run(records).items():
        if record.finished_at is not None:
            name = uid.rsplit(".", 1)[1]
            out[f"dbt.{name}_seed" if uid.startswith("seed.") else f"dbt.{name}"] = record.finished_at.timestamp()
    return out


def test_openlineage_from_the_producer_nests_each_node_under_its_task(airflow: Deployment, lineage_endpoint: Any,
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Split layout under a real scheduler: the producer emits every node's events to the suite's endpoint,
    each valid, each node's run a child of its node task's run as the Airflow OpenLineage provider computes it
    (the node DAG's run: logical date none, so its run_after)."""
    from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter

    from dbtbus.airflow import dbtbus_run_id

    # The provider's run ids hash its namespace in: this process computes them with the deployment's (the
    # provider reads its configuration afresh under pytest: its cache is off when PYTEST_VERSION is set).
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__NAMESPACE", "dbtbus-live")
    from dbtbus.lineage import lineage_run_id
    from tests.lineage.conftest import SpecValidator

    run = clean_run(airflow, "live_lineage", "split", tmp_path)
    rid = dbtbus_run_id(run.dag_id, run.run_id, -1, "dbt")
    invocation = lineage_run_id(rid, "@invocation", 1)
    where = run.where()
    tasks = {f"{dag_id}.{task_id}": (dag_id, task_id) for dag_id, task_id in where.values()}
    mine = [e for e in lineage_endpoint.events
            if e["run"]["runId"] == invocation
            or e["run"]["facets"].get("parent", {}).get("run", {}).get("runId") == invocation
            or e["run"]["facets"].get("parent", {}).get("job", {}).get("name") in tasks]
    spec = SpecValidator()
    for event in mine:
        spec.validate(event)
    node_starts = {e["run"]["facets"]["parent"]["job"]["name"]: e for e in mine
                   if e["eventType"] == "START" and e["run"]["facets"]["parent"]["job"]["name"] in tasks}
    assert set(node_starts) == set(tasks), sorted(set(tasks) - set(node_starts))  # all 14 nodes, each once
    ends = {e["run"]["runId"]: e["eventType"] for e in mine if e["eventType"] != "START"}
    assert ends[invocation] == "COMPLETE"
    for name, node_start in node_starts.items():
        dag_id, task_id = tasks[name]
        [(run_after, logical_date, clear_number)] = airflow.query(
            "select run_after, logical_date, clear_number from dag_run where dag_id=%s and run_id=%s",
            dag_id, run.run_id)
        parent = node_start["run"]["facets"]["parent"]
        assert parent["run"]["runId"] == OpenLineageAdapter.build_task_instance_run_id(
            dag_id=dag_id, task_id=task_id, try_number=1, logical_date=logical_date or run_after, map_index=-1)
        assert parent["root"]["job"]["name"] == dag_id and parent["root"]["run"]["runId"] == (
            OpenLineageAdapter.build_dag_run_id(dag_id=dag_id, logical_date=logical_date or run_after,
                                                clear_number=clear_number or 0))
        assert ends[node_start["run"]["runId"]] == "COMPLETE", name
    assert "dbtbus: OpenLineage on (openlineage=True)" in run.log(PRODUCER)
