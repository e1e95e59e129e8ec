"""DAG builders and helpers shared by the Airflow tests."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from airflow.sdk import DAG

from dbtbus.airflow import render_dbt_task_group

_COUNTER = itertools.count()
_TOKEN = uuid.uuid4().hex[:6]
DEFAULT_SELECT = (
    "seed.shop.customers", "seed.shop.orders", "seed.shop.payments",
    "model.shop.stg_customers", "model.shop.stg_orders", "model.shop.stg_payments",
    "model.shop.orders_enriched", "model.shop.customers_summary",
    "model.shop.customer_ranking", "model.shop.top_customers",
)


def dag_id(prefix: str) -> str:
    return f"{prefix}_{_TOKEN}_{next(_COUNTER)}"


def shop_dag(
    project: Path,
    bus_url: str,
    *,
    name: str = "shop",
    dbt_args: list[str] | None = None,
    select: Iterable[str] | None = DEFAULT_SELECT,
    producer_kwargs: dict[str, Any] | None = None,
    sensor_kwargs: dict[str, Any] | None = None,
) -> DAG:
    args = dbt_args or ["build", "--project-dir", str(project), "--profiles-dir", str(project)]
    with DAG(dag_id(name), schedule=None, catchup=False) as dag:
        render_dbt_task_group(
            project / "target" / "manifest.json",
            bus_url,
            args,
            group_id="dbt",
            select=select,
            producer_kwargs=producer_kwargs,
            sensor_kwargs={"timeout": 120, **(sensor_kwargs or {})},
            sensors_after_producer=True,
        )
    return dag


def register(dag: DAG) -> DAG:
    """Write the DAG to the metadata DB as the DAG processor would (``dag.test()`` needs a DAG version)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
    with create_session() as session:
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session,
            files_parsed=set(),
        )
    return dag


def run_dag(dag: DAG) -> Any:
    """``dag.test()`` on a DAG built in a test (registered first)."""
    register(dag)
    return dag.test()


def states(dag_run: Any) -> dict[str, str]:
    """task_id → final state of a ``dag.test()`` DagRun."""
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = dag_run.get_task_instances(session=session)
        return {ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state) for ti in tis}


def producer_summary(dag_id: str, task_id: str = "dbt.dbt_producer") -> Any:
    """The producer task's XCom summary (its ``return_value``; the sensors return values too)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(select(XComModel).where(XComModel.dag_id == dag_id, XComModel.task_id == task_id,
                                                      XComModel.key == "return_value")).first()
        assert row is not None
        return XComModel.deserialize_value(row)


def registering_dags_like_a_dag_file() -> Iterator[None]:
    """Airflow registers a DAG made in a ``with`` block while it parses a DAG file: do as it does (the body of
    the ``register_dags_like_a_dag_file`` fixture)."""
    from airflow.sdk.definitions._internal.contextmanager import DagContext

    DagContext.current_autoregister_module_name = __name__
    try:
        yield
    finally:
        DagContext.current_autoregister_module_name = None
        DagContext.autoregistered_dags.clear()


def registered_node_dags(dag_id: str) -> dict[str, DAG]:
    """The node DAGs a split render of ``dag_id`` registered beside it, by DAG id."""
    from airflow.sdk.definitions._internal.contextmanager import DagContext

    return {d.dag_id: d for d, _ in DagContext.autoregistered_dags if d.dag_id.startswith(f"{dag_id}.")}
