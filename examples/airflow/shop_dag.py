"""An Airflow 3 DAG over the DuckDB example project (examples/shop): one dbt build, one task per node.

Setup (from the repository root)::

    pip install 'dbtbus[airflow,redis,duckdb]'
    dbt parse --project-dir examples/shop --profiles-dir examples/shop    # writes target/manifest.json
    export DBTBUS_URL=redis://localhost:6379/0     # or xcom:// for a deployment without Redis
    cp examples/airflow/shop_dag.py "$AIRFLOW_HOME/dags/"   # or point dags_folder here

``dbtbus_shop`` then has a ``dbt`` task group: ``dbt_producer`` runs ``dbt build`` once and publishes every
node's result; each model, seed and snapshot has a :class:`~dbtbus.airflow.DbtNodeSensor` that waits in the
triggerer from the DAG run's start and is ended there the moment its node (and its tests) are done. The
project has an intentionally failing test (``assert_customers_have_repeat_orders``), so ``customers_summary``
fails and ``customer_ranking`` / ``top_customers`` fail within a second after it, their logs naming the root
cause — the DAG run is red, as it must be.
Trigger with ``{"shop_break": true}`` as the run's conf to also break the ``broken`` model.

``python examples/airflow/shop_dag.py`` runs the DAG once with ``dag.test()`` (Airflow executes tasks one at
a time there, so set ``DBTBUS_SEQUENTIAL=1`` to make the root sensors wait for the producer).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG

from dbtbus.airflow import render_dbt_task_group

PROJECT = Path(os.environ.get("DBTBUS_SHOP_DIR", Path(__file__).resolve().parents[1] / "shop"))
MANIFEST = PROJECT / "target" / "manifest.json"
BUS_URL = os.environ.get("DBTBUS_URL", "redis://localhost:6379/0")

if not MANIFEST.exists():
    raise FileNotFoundError(f"{MANIFEST} is missing: run `dbt parse --project-dir {PROJECT} --profiles-dir {PROJECT}`")

with DAG(
    dag_id="dbtbus_shop",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    tags=["dbt", "dbtbus"],
) as dag:
    render_dbt_task_group(
        MANIFEST,
        BUS_URL,
        [
            "build",
            "--project-dir", str(PROJECT),
            "--profiles-dir", str(PROJECT),
            "--vars", "{shop_break: {{ dag_run.conf.get('shop_break', false) | tojson }}}",
        ],
        group_id="dbt",
        producer_kwargs={"heartbeat_interval": 5.0},
        sensor_kwargs={"timeout": 3600, "not_run": "skip"},
        sensors_after_producer=os.environ.get("DBTBUS_SEQUENTIAL") == "1",
    )


if __name__ == "__main__":
    dag.test()
