from __future__ import annotations

from pathlib import Path

from airflow.sdk import DAG

from dbtbus.airflow import DbtBusProducerOperator, DbtNodeSensor, render_dbt_task_group
from dbtbus.airflow.render import select_nodes


def test_select_nodes_wires_through_ephemeral(shop_template: Path) -> None:
    parents, chosen = select_nodes(shop_template / "target" / "manifest.json")
    assert "model.shop.order_payments" not in chosen  # ephemeral: no result of its own, no sensor
    assert parents["model.shop.orders_enriched"] == ["model.shop.stg_orders", "model.shop.stg_payments"]
    assert parents["model.shop.stg_customers"] == ["seed.shop.customers"]
    assert parents["snapshot.shop.orders_snapshot"] == ["seed.shop.orders"]
    assert not any(uid.startswith("test.") for uid in chosen)
    assert len(chosen) == 14  # 10 models without the ephemeral one, 3 seeds, 1 snapshot


def test_render_group(shop_template: Path) -> None:
    with DAG("render_test", schedule=None) as dag:
        group = render_dbt_task_group(shop_template / "target" / "manifest.json", "redis://localhost:6379/0",
                                      ["build"], group_id="dbt")
    assert group.group_id == "dbt"
    producer = dag.get_task("dbt.dbt_producer")
    assert isinstance(producer, DbtBusProducerOperator)
    sensor = dag.get_task("dbt.orders_enriched")
    assert isinstance(sensor, DbtNodeSensor)
    assert sensor.include_tests and sensor.unique_id == "model.shop.orders_enriched"
    assert sensor.upstream_task_ids == {"dbt.stg_orders", "dbt.stg_payments"}
    # sensors never wait for the producer task: they start at once in the triggerer
    assert not producer.downstream_task_ids
    assert dag.get_task("dbt.customers_seed").upstream_task_ids == set()
    assert sensor.start_from_trigger and sensor.start_trigger_args is not None
    assert sensor.start_trigger_args.trigger_kwargs["run_id"] is None  # derived in the triggerer
    assert sensor.start_trigger_args.trigger_kwargs["run_group"] == "dbt"
    assert "dbt.dbtbus_carrier" not in dag.task_dict


def test_render_xcom_gets_a_carrier(shop_template: Path) -> None:
    with DAG("render_xcom", schedule=None) as dag:
        render_dbt_task_group(shop_template / "target" / "manifest.json", "xcom://", ["build"],
                              select=["stg_orders", "seed.shop.orders"], sensors_after_producer=True)
    assert set(dag.task_dict) == {"dbt.dbtbus_carrier", "dbt.dbt_producer", "dbt.stg_orders", "dbt.orders_seed"}
    assert dag.get_task("dbt.dbt_producer").upstream_task_ids == {"dbt.dbtbus_carrier"}
    assert dag.get_task("dbt.orders_seed").upstream_task_ids == {"dbt.dbt_producer"}
    assert dag.get_task("dbt.stg_orders").carrier_task_id == "dbt.dbtbus_carrier"


def test_dag_serialises_with_start_trigger_args(shop_template: Path) -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    with DAG("render_ser", schedule=None) as dag:
        render_dbt_task_group(shop_template / "target" / "manifest.json", "redis://h:1/0", ["build"])
    restored = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    task = restored.get_task("dbt.stg_orders")
    assert task.start_from_trigger
    assert task.start_trigger_args.trigger_cls == "dbtbus.airflow.triggers.DbtNodeTrigger"
    assert "model.shop.stg_orders" in str(task.start_trigger_args.trigger_kwargs)
