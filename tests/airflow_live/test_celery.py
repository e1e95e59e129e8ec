"""The live scenarios on a CeleryExecutor deployment (conftest's ``celery_airflow``): the producer task runs on
one of two Celery workers — two hosts as far as Airflow can tell, each its own process tree, working directory
and hostname — while the node tasks wait in the triggerer.

Beyond the clean, failing and retry runs on both buses, what distributed deployments do: the producer's worker
SIGKILLed mid-build (the host lost) or frozen and thawed after Airflow retried its task elsewhere, and the
scheduler restarted mid-run. The node tasks never retry here: each first try must end with its node's true
outcome. Assertions are causal; timings go to ``FIGURES`` (``DBTBUS_LIVE_FIGURES``).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from ._deployment import Deployment, TaskState
from ._scenario import (
    FIGURES,
    PRODUCER,
    Scenario,
    clean_run,
    descendants,
    gate_file,
    heal_when_producer_retries,
    new_run_id,
    reran_dbt,
    slowed,
    start,
)
from .conftest import CELERY_WORKERS, GATED

BUSES = pytest.mark.parametrize("bus", ["redis", "xcom"])


def _producer_host(run: Scenario) -> str:
    host = run.producer().hostname
    assert host in CELERY_WORKERS, f"the producer ran on {host!r}, not on a Celery worker"
    return host


@BUSES
def test_clean_run(celery_airflow: Deployment, tmp_path: Path, bus: str) -> None:
    run = clean_run(celery_airflow, f"live_{bus}", "one_dag", tmp_path, figure=f"celery_clean_{bus}")
    _producer_host(run)


def test_the_bare_build_to_compare_with(celery_airflow: Deployment, tmp_path: Path) -> None:
    """The same build in ONE Celery task of this deployment (``live_bare``), after the clean runs (so the
    deployment's warm-up is theirs): what their DAG walls are compared with."""
    run_id = new_run_id("bare")
    celery_airflow.trigger("live_bare", run_id, {"gate": str(gate_file(tmp_path))})
    assert celery_airflow.wait_run("live_bare", run_id) == "success"
    start_at, end_at = celery_airflow.dag_run_times("live_bare", run_id)
    assert start_at is not None and end_at is not None
    bare = end_at - start_at
    FIGURES["celery_bare_task_dag_wall_s"] = round(bare, 2)
    for bus in ("redis", "xcom"):
        clean = FIGURES.get(f"celery_clean_{bus}")
        if clean is not None:
            clean["dag_wall_per_bare_task"] = round(clean["dag_wall_s"] / bare, 2)


@BUSES
def test_failing_model_ends_its_descendants_while_dbt_runs(celery_airflow: Deployment, live_project: Path,
                                                           tmp_path: Path, bus: str) -> None:
    doomed = descendants(live_project, f"model.gen.{GATED}")
    with slowed(live_project):
        run = start(celery_airflow, f"live_{bus}", "one_dag", {"gate": str(gate_file(tmp_path, create=False))})
        run.wait_terminal({f"dbt.{GATED}"} | doomed)
    assert run.wait() == "failed"
    nodes = run.nodes()
    failed = {k for k, t in nodes.items() if t.state == "failed"}
    assert failed == {f"dbt.{GATED}"} | doomed, {k: t.state for k, t in nodes.items()}
    assert {nodes[k].state for k in set(nodes) - failed} == {"success"}
    producer = run.producer()
    assert producer.state == "failed" and producer.end is not None
    assert all((nodes[k].end or producer.end) < producer.end for k in failed), "a doomed task ended after dbt"
    assert "gate.csv" in run.log(sorted(doomed)[0])
    _producer_host(run)
    gated_end = nodes[f"dbt.{GATED}"].end or 0
    FIGURES[f"celery_failure_to_descendants_terminal_s[{bus}]"] = round(
        max(nodes[k].end or 0 for k in doomed) - gated_end, 2)


@BUSES
def test_producer_retry_never_collides(celery_airflow: Deployment, tmp_path: Path, bus: str) -> None:
    gate = gate_file(tmp_path, create=False)
    name = "live_producer_retry" if bus == "redis" else "live_producer_retry_xcom"
    run = start(celery_airflow, name, "one_dag", {"gate": str(gate)})
    heal_when_producer_retries(run, gate)
    assert run.wait() == "success", {k: (v.state, v.try_number) for k, v in run.nodes().items()}
    assert {t.state for t in run.nodes().values()} == {"success"}
    assert run.producer().try_number == 2
    assert reran_dbt(run) == [], "a node task ran dbt while the producer was retrying"


# ---------------------------------------------------------------------------------------------- a worker lost
# The producer's worker is SIGKILLed (the host lost) or SIGSTOPped (a frozen host) while dbt runs. Airflow fails
# the producer task once its heartbeat is TASK_HEARTBEAT_TIMEOUT old and retries it; the other worker is the
# only one left to take it.


def _records(run: Scenario, redis_url: str) -> list[tuple[float, Any]]:
    """The run's log as stored: (when Redis stored the entry, the record), oldest first."""
    import anyio

    import dbtbus
    from dbtbus.airflow import dbtbus_run_id
    from dbtbus.events import decode

    bus_run = dbtbus_run_id(run.dag_id, run.run_id, -1, "dbt")

    async def read() -> list[tuple[float, Any]]:
        async with dbtbus.connect(redis_url) as bus:
            entries = await bus.backend.read(bus_run, None, limit=1_000_000)
        return [(int(e.cursor.split("-")[0]) / 1000, decode(e.data)) for e in entries]

    return anyio.run(read)


def _attempt_started_at(records: list[tuple[float, Any]], attempt: int) -> float:
    from dbtbus.events import RunStarted

    return min(at for at, r in records if isinstance(r, RunStarted) and r.attempt == attempt)


def _lose_the_producers_worker(af: Deployment, run: Scenario, sig: int) -> tuple[str, float]:
    run.wait_node("dbt.m000", {"success"})  # dbt is building; the slow model holds it
    host = _producer_host(run)
    at = time.time()
    af.signal_tree(host, sig)
    return host, at


def _assert_retried_elsewhere(run: Scenario, host: str) -> TaskState:
    producer = run.producer()
    assert producer.state == "success" and producer.try_number == 2, producer
    assert producer.hostname in CELERY_WORKERS and producer.hostname != host, (producer.hostname, host)
    nodes = run.nodes()
    assert len(nodes) == 14 and {t.state for t in nodes.values()} == {"success"}, \
        {k: (t.state, t.try_number) for k, t in nodes.items()}
    assert {t.try_number for t in nodes.values()} == {1}, "a node task needed a retry"
    assert run.history() == [], "a node task failed a try"
    return producer


def _built_in(records: list[tuple[float, Any]], attempt: int) -> set[str]:
    from dbtbus.events import NodeStarted

    return {r.unique_id for _, r in records if isinstance(r, NodeStarted) and r.attempt == attempt}


def _succeeded_in(records: list[tuple[float, Any]], attempt: int) -> set[str]:
    from dbtbus.events import NodeResult

    return {r.unique_id for _, r in records if isinstance(r, NodeResult) and r.attempt == attempt and r.ok}


def test_the_producers_worker_killed_mid_build(celery_airflow: Deployment, live_project: Path, live_redis: str,
                                               tmp_path: Path) -> None:
    with slowed(live_project) as flag:
        run = start(celery_airflow, "live_worker_lost", "one_dag", {"gate": str(gate_file(tmp_path))})
        host, killed_at = _lose_the_producers_worker(celery_airflow, run, signal.SIGKILL)
        flag.unlink()  # the retry's dbt need not wait
        assert run.wait(timeout=300) == "success"
    celery_airflow.start_worker(host)  # the host comes back for the next scenarios
    celery_airflow.wait_worker(host)
    producer = _assert_retried_elsewhere(run, host)
    records = _records(run, live_redis)
    done_before = _succeeded_in(records, 1)
    assert "model.gen.m000" in done_before
    assert not done_before & _built_in(records, 2), "the retry rebuilt what attempt 1 had built"
    retry_at = _attempt_started_at(records, 2)
    assert max(at for at, r in records if getattr(r, "attempt", None) == 1) < retry_at, "two attempts at once"
    assert "resumes;" in run.log(PRODUCER)
    FIGURES["celery_worker_killed"] = {"kill_to_retry_started_s": round(retry_at - killed_at, 2),
                                      "kill_to_dag_end_s": round((producer.end or 0) - killed_at, 2),
                                      "rebuilt_by_retry": len(_built_in(records, 2)),
                                      "kept_from_attempt_1": len(done_before)}


def test_the_producers_worker_frozen_then_thawed(celery_airflow: Deployment, live_project: Path, live_redis: str,
                                                 tmp_path: Path) -> None:
    with slowed(live_project) as flag:
        run = start(celery_airflow, "live_worker_lost", "one_dag", {"gate": str(gate_file(tmp_path))})
        host, frozen_at = _lose_the_producers_worker(celery_airflow, run, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 120
            while run.producer().try_number < 2 or not _has_attempt(run, live_redis, 2):
                assert time.monotonic() < deadline, "Airflow never retried the frozen producer"
                time.sleep(0.3)
        finally:
            thawed_at = time.time()
            celery_airflow.signal_tree(host, signal.SIGCONT)  # the stale attempt wakes up mid-build
        flag.unlink()
        assert run.wait(timeout=300) == "success"
    producer = _assert_retried_elsewhere(run, host)
    records = _records(run, live_redis)
    retry_at = _attempt_started_at(records, 2)
    stale = [r for at, r in records if at >= retry_at and getattr(r, "attempt", None) == 1]
    assert stale == [], f"{len(stale)} records of the stale attempt stored after the retry claimed the run"
    stale_log = run.af.task_log(run.dag_id, run.run_id, PRODUCER, attempt=1)
    FIGURES["celery_worker_frozen"] = {"freeze_to_retry_started_s": round(retry_at - frozen_at, 2),
                                      "thawed_after_retry_started_s": round(thawed_at - retry_at, 2),
                                      "freeze_to_dag_end_s": round((producer.end or 0) - frozen_at, 2),
                                      # whether the thawed producer got as far as being refused (else Airflow's
                                      # supervisor killed it first)
                                      "stale_attempt_told_it_was_superseded": "RunClaimed" in stale_log}


def _has_attempt(run: Scenario, redis_url: str, attempt: int) -> bool:
    from dbtbus.events import RunStarted

    return any(isinstance(r, RunStarted) and r.attempt >= attempt for _, r in _records(run, redis_url))


def test_a_scheduler_restarted_mid_run(celery_airflow: Deployment, live_project: Path, tmp_path: Path) -> None:
    with slowed(live_project) as flag:
        run = start(celery_airflow, "live_redis", "one_dag", {"gate": str(gate_file(tmp_path))})
        run.wait_node("dbt.m000", {"success"})
        restarted_at = time.time()
        celery_airflow.restart_process("scheduler")
        flag.unlink()
        assert run.wait(timeout=300) == "success"
    producer = run.producer()
    assert producer.state == "success" and producer.try_number == 1, producer
    nodes = run.nodes()
    assert {t.state for t in nodes.values()} == {"success"} and {t.try_number for t in nodes.values()} == {1}
    assert run.history() == [] and celery_airflow.history(run.dag_id, run.run_id) == []
    FIGURES["celery_scheduler_restart_to_dag_end_s"] = round(
        (celery_airflow.dag_run_times(run.dag_id, run.run_id)[1] or 0) - restarted_at, 2)
