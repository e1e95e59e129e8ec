"""The DAGs of the live-scheduler suite (copied into the deployment's dags folder; Airflow parses it there).

One generated dbt-duckdb project (``DBTBUS_LIVE_PROJECT``) rendered several times, one DAG per scenario.
The run's conf steers dbt through ``--vars``: ``gate`` is a CSV file that the gated model ``m005`` reads
(missing: the model fails at runtime; the test creates it to heal a "transient" failure). The ``slow``
Python model sleeps while the project's ``slow.flag`` exists, so the producer is still running while
sensors decide.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync
from airflow.sdk import DAG, Asset

from dbtbus.airflow import dbt_node_asset, render_dbt_task_group

PROJECT = Path(os.environ["DBTBUS_LIVE_PROJECT"])
MANIFEST = PROJECT / "manifest.render.json"  # a copy: the producer's build rewrites target/manifest.json
REDIS_URL = os.environ["DBTBUS_LIVE_REDIS"]
VARS = '{"gate": "{{ dag_run.conf.get(\'gate\', \'/nonexistent/gate.csv\') }}"}'
ARGS = ["build", "--project-dir", str(PROJECT), "--profiles-dir", str(PROJECT), "--vars", VARS]
# DuckDB takes one writer at a time: sensors re-running their node on a worker queue in a one-slot pool
# (a deferred sensor holds no pool slot, so this only orders the re-runs).
RERUN_POOL = "dbt_rerun"


#: Every scenario also runs with the node tasks split over small DAGs of their own (``<dag>_split``), at most
#: SPLIT_SIZE tasks each: the layout render_dbt_task_group picks for large projects, here on the small one.
SPLIT_SIZE = 5


def _dag(dag_id: str, bus_url: str, *, producer: dict[str, object], sensor: dict[str, object],
         args: list[str] = ARGS, heartbeat: float = 2.0, emit_assets: bool | list[str] = False) -> DAG:
    for name, layout in ((dag_id, "one_dag"), (f"{dag_id}_split", "split")):
        with DAG(name, schedule=None, catchup=False, max_active_runs=1, tags=["dbtbus-live"]) as dag:
            render_dbt_task_group(
                MANIFEST, bus_url, args, group_id="dbt", layout=layout, max_tasks_per_dag=SPLIT_SIZE,
                producer_kwargs={"heartbeat_interval": heartbeat, **producer},
                sensor_kwargs={"timeout": 300, "pool": RERUN_POOL, **sensor}, emit_assets=emit_assets,
            )
    return dag


NO_RETRY = {"retries": 0}
clean_redis = _dag("live_redis", REDIS_URL, producer=NO_RETRY, sensor=NO_RETRY)
# The operator's default heartbeat (5 s, a 7.5 s lease): XCom heartbeats are API round trips from a process
# whose GIL dbt's parse holds for long stretches.
clean_xcom = _dag("live_xcom", "xcom://?poll=0.2", producer=NO_RETRY, sensor=NO_RETRY, heartbeat=5.0)
# The producer fails once (the gate is missing); the test heals it while the producer waits for its retry.
# Every sensor may retry at once: a sensor's retry must wait for the producer's new attempt, not run dbt.
RETRYING_PRODUCER = {"retries": 1, "retry_delay": timedelta(seconds=8)}
RETRYING_SENSOR = {"retries": 2, "retry_delay": timedelta(seconds=0)}
producer_retry = _dag("live_producer_retry", REDIS_URL, producer=RETRYING_PRODUCER, sensor=RETRYING_SENSOR)
# The same with the rule dbtbus had before (re-run once the run on the bus is over, without asking Airflow
# about the producer): the race the suite reproduces.
producer_retry_old_rule = _dag("live_producer_retry_old_rule", REDIS_URL, producer=RETRYING_PRODUCER,
                               sensor={**RETRYING_SENSOR, "producer_task_id": None})
producer_retry_xcom = _dag("live_producer_retry_xcom", "xcom://?poll=0.2", producer=RETRYING_PRODUCER,
                           sensor=RETRYING_SENSOR, heartbeat=5.0)
# The producer's Celery worker is SIGKILLed or frozen mid-build (test_celery.py): Airflow fails the producer
# task at its heartbeat timeout and retries it on the other worker. The node tasks never retry: their first
# try must end with the node's true outcome.
worker_lost = _dag("live_worker_lost", REDIS_URL, producer={"retries": 1, "retry_delay": timedelta(seconds=2)},
                   sensor=NO_RETRY)
# The producer fails for good; the gated model's sensor retries and re-runs its node itself, then its
# descendants' sensors re-run theirs once it succeeded.
sensor_retry = _dag("live_sensor_retry", REDIS_URL, producer=NO_RETRY,
                    sensor={"retries": 1, "retry_delay": timedelta(seconds=3)})
# The test kills the producer's task process while the slow model sleeps.
killed = _dag("live_killed", REDIS_URL, producer=NO_RETRY, sensor=NO_RETRY)
# dbt refuses its arguments: the producer task fails before dbt runs anything.
bad_args = _dag("live_bad_args", REDIS_URL, producer=NO_RETRY, sensor=NO_RETRY,
                args=["build", "--project-dir", str(PROJECT), "--no-such-flag"])
# dbt profiled with memray in the producer's task process (a worker's, under the scheduler), one file a try.
MEMRAY_OUTPUT = str(PROJECT / "memray-{{ dag_run.run_id }}-{{ ti.try_number }}.bin")
profiled = _dag("live_memray", REDIS_URL, producer={**NO_RETRY, "memray_output": MEMRAY_OUTPUT}, sensor=NO_RETRY)


# OpenLineage from the producer task (issue #29), each node under its node task's run.
lineage = _dag("live_lineage", REDIS_URL, producer={**NO_RETRY, "openlineage": True}, sensor=NO_RETRY)


# Airflow Assets (issue #29): ASSET_MODEL's task declares its relation as an outlet and emits an asset event
# when the node succeeds; ASSET_CONSUMER is scheduled on that asset and must start while the slow model still
# holds the build. The other node tasks emit nothing and still end in the triggerer.
ASSET_MODEL = "m002"
ASSET_CONSUMER = "live_assets_consumer"
assets = _dag("live_assets", REDIS_URL, producer=NO_RETRY, sensor=NO_RETRY, emit_assets=[ASSET_MODEL])
with DAG(ASSET_CONSUMER, schedule=[dbt_node_asset(MANIFEST, ASSET_MODEL, ARGS)], catchup=False,
         is_paused_upon_creation=False, tags=["dbtbus-live"]):
    EmptyOperator(task_id="consume")


# A task's on_success_callback leaves a file named after it here, in a folder per DAG run.
SUCCESS_CALLBACKS = PROJECT / "success-callbacks"


def note_success(context: dict[str, Any]) -> None:
    ti = context["ti"]
    folder = SUCCESS_CALLBACKS / str(context["run_id"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{ti.dag_id}.{ti.task_id}").touch()


# What Airflow itself does with a task's outlets and its on_success_callback when the triggerer ends the task
# (TaskSuccessEvent) and when a worker does: Airflow's own sensor and trigger, no dbtbus code. The test reads
# the asset events and the callbacks' files of each.
PROBE_TRIGGERER = Asset("x-dbtbus-probe://ended-by-the-triggerer")
PROBE_WORKER = Asset("x-dbtbus-probe://ended-on-a-worker")
with DAG("live_asset_probe", schedule=None, catchup=False, tags=["dbtbus-live"]):
    for _task_id, _end_from_trigger, _asset in (("ended_by_the_triggerer", True, PROBE_TRIGGERER),
                                                 ("ended_on_a_worker", False, PROBE_WORKER)):
        DateTimeSensorAsync(task_id=_task_id, target_time="2000-01-01T00:00:00+00:00", start_from_trigger=True,
                            end_from_trigger=_end_from_trigger, outlets=[_asset], on_success_callback=note_success)

# Every node task has an on_success_callback: dbtbus ends each success on a worker, where Airflow runs it.
success_callback = _dag("live_success_callback", REDIS_URL, producer=NO_RETRY,
                        sensor={**NO_RETRY, "on_success_callback": note_success})

# What dbtbus is measured against on each deployment: the same build in ONE task, no per-model tasks.
def _bare_build(args: list[str]) -> None:
    from dbt.cli.main import dbtRunner

    result = dbtRunner().invoke(args)
    if not result.success:
        raise RuntimeError(f"dbt build failed: {result.exception}")


with DAG("live_bare", schedule=None, catchup=False, max_active_runs=1, tags=["dbtbus-live"]):
    PythonOperator(task_id="dbt_build", python_callable=_bare_build, op_args=[ARGS])

# The scale scenarios: a 200-model project rendered with render_dbt_task_group's defaults (its layout picks
# node DAGs of at most 50 tasks), nothing tuned.
SCALE = Path(os.environ["DBTBUS_LIVE_SCALE_PROJECT"])
SCALE_ARGS = ["build", "--project-dir", str(SCALE), "--profiles-dir", str(SCALE), "--vars", VARS]
# What emit_assets=True costs at this scale is bench/airflow_live.py --assets's to measure, not the suite's.
for _name, _producer in (("live_scale", NO_RETRY),
                         ("live_scale_retry", {"retries": 1, "retry_delay": timedelta(seconds=8)})):
    with DAG(_name, schedule=None, catchup=False, max_active_runs=1, tags=["dbtbus-live"]):
        render_dbt_task_group(SCALE / "manifest.render.json", REDIS_URL, SCALE_ARGS,
                              producer_kwargs={"heartbeat_interval": 2.0, **_producer},
                              sensor_kwargs={"timeout": 600, **(RETRYING_SENSOR if _producer["retries"] else NO_RETRY)})
