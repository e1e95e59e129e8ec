"""An Airflow 3 DAG over the DuckDB example project (examples/shop): one dbt build, one task per node.

docs/airflow-quickstart.md sets it up from nothing under ``airflow standalone``. In short: put the ``shop``
project beside this file in the DAGs folder (or point ``DBTBUS_SHOP_DIR`` at it), parse it with an absolute
``--project-dir``, and give the bus as the Airflow connection ``dbtbus_default`` (a ``redis`` connection, or
a ``dbtbus`` one holding e.g. ``xcom://``), or as ``DBTBUS_URL`` in the environment of every Airflow process.

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

HERE = Path(__file__).resolve().parent
#: Where the project is looked for, in order: $DBTBUS_SHOP_DIR, beside this file, the repository's layout.
CANDIDATES = [Path(p) for p in [os.environ.get("DBTBUS_SHOP_DIR", "")] if p] + [HERE / "shop", HERE.parent / "shop"]
PROJECT = next((p.resolve() for p in CANDIDATES if (p / "dbt_project.yml").exists()), None)
BUS_URL = os.environ.get("DBTBUS_URL")  # unset: the Airflow connection dbtbus_default holds the bus

if PROJECT is None:
    raise FileNotFoundError(
        "the dbt project 'shop' is in none of " + ", ".join(map(str, CANDIDATES)) + ": copy examples/shop beside "
        "this file or set DBTBUS_SHOP_DIR to its absolute path (for every Airflow process)")
MANIFEST = PROJECT / "target" / "manifest.json"
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
        bus_conn_id=None if BUS_URL else "dbtbus_default",
        group_id="dbt",
        producer_kwargs={"heartbeat_interval": 5.0},
        sensor_kwargs={"timeout": 3600, "not_run": "skip"},
        sensors_after_producer=os.environ.get("DBTBUS_SEQUENTIAL") == "1",
    )


if __name__ == "__main__":
    dag.test()
