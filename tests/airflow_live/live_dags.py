"""The DAGs of the live-scheduler suite (copied into the deployment's dags folder; Airflow parses it there).

One generated dbt-duckdb project (``DBTBUS_LIVE_PROJECT``) rendered several times, one DAG per scenario.
The run's conf steers dbt through ``--vars``: ``gate`` is a CSV file that the gated model ``m005`` reads
(missing: the model fails at runtime; the test creates it to heal a "transient" failure), ``slow`` makes
the ``slow`` Python model sleep so the producer is still running while sensors decide.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from airflow.sdk import DAG

from dbtbus.airflow import render_dbt_task_group

PROJECT = Path(os.environ["DBTBUS_LIVE_PROJECT"])
MANIFEST = PROJECT / "manifest.render.json"  # a copy: the producer's build rewrites target/manifest.json
REDIS_URL = os.environ["DBTBUS_LIVE_REDIS"]
VARS = ('{"gate": "{{ dag_run.conf.get(\'gate\', \'/nonexistent/gate.csv\') }}", '
        '"slow": {{ dag_run.conf.get(\'slow\', 0) }}}')
ARGS = ["build", "--project-dir", str(PROJECT), "--profiles-dir", str(PROJECT), "--vars", VARS]


def _dag(dag_id: str, bus_url: str, *, producer: dict[str, object], sensor: dict[str, object]) -> DAG:
    with DAG(dag_id, schedule=None, catchup=False, max_active_runs=1, tags=["dbtbus-live"]) as dag:
        render_dbt_task_group(
            MANIFEST, bus_url, ARGS, group_id="dbt",
            producer_kwargs={"heartbeat_interval": 1.0, **producer},
            sensor_kwargs={"timeout": 300, **sensor},
        )
    return dag


NO_RETRY = {"retries": 0}
clean_redis = _dag("live_redis", REDIS_URL, producer=NO_RETRY, sensor=NO_RETRY)
clean_xcom = _dag("live_xcom", "xcom://?poll=0.2", producer=NO_RETRY, sensor=NO_RETRY)
# The producer fails once (the gate is missing), the test heals it while the producer waits for its retry;
# every sensor may retry at once: a sensor retry must wait for the producer's new attempt, not run dbt.
producer_retry = _dag("live_producer_retry", REDIS_URL,
                      producer={"retries": 1, "retry_delay": timedelta(seconds=8)},
                      sensor={"retries": 2, "retry_delay": timedelta(seconds=0)})
# The producer fails for good; the gated model's sensor retries and re-runs its node itself.
sensor_retry = _dag("live_sensor_retry", REDIS_URL, producer=NO_RETRY,
                    sensor={"retries": 1, "retry_delay": timedelta(seconds=3)})
