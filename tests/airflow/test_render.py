from __future__ import annotations

from pathlib import Path

from airflow.sdk import DAG

from dbtbus.airflow import DbtBusProducerOperator, DbtNodeSensor, DbtNodeTrigger, render_dbt_task_group
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


def _chain_manifest(depth: int, root_path: str = "/abs/project") -> dict[str, object]:
    nodes: dict[str, object] = {"seed.p.s": {"unique_id": "seed.p.s", "resource_type": "seed", "name": "s",
                                             "root_path": root_path, "depends_on": {"nodes": []}}}
    parent = "seed.p.s"
    for i in range(depth):
        uid = f"model.p.m{i}"
        nodes[uid] = {"unique_id": uid, "resource_type": "model", "name": f"m{i}",
                      "config": {"materialized": "ephemeral" if i % 2 else "view"}, "depends_on": {"nodes": [parent]}}
        parent = uid
    return {"nodes": nodes}


def test_select_nodes_on_a_10000_deep_chain_does_not_recurse() -> None:
    parents, chosen = select_nodes(_chain_manifest(10_000))
    assert len(chosen) == 5_001  # the seed and every non-ephemeral model
    assert parents["model.p.m2"] == ["model.p.m0"]  # through the ephemeral m1
    assert parents["model.p.m0"] == ["seed.p.s"]


def test_render_warns_on_a_relative_root_path() -> None:
    import pytest

    with DAG("render_relative", schedule=None), pytest.warns(UserWarning, match="absolute --project-dir"):
        render_dbt_task_group(_chain_manifest(2, root_path="."), "redis://h:1/0", ["build"])


def test_sensors_wait_from_the_start_and_know_their_producer(shop_template: Path) -> None:
    with DAG("render_push", schedule=None) as dag:
        render_dbt_task_group(shop_template / "target" / "manifest.json", "redis://h:1/0", ["build"],
                              producer_kwargs={"retries": 2})
    sensor = dag.get_task("dbt.orders_enriched")
    assert sensor.trigger_rule == "always"  # push-bound: in the triggerer from the DAG run's start
    assert sensor.upstream_task_ids == {"dbt.stg_orders", "dbt.stg_payments"}  # the graph still shows dbt's edges
    kwargs = sensor.start_trigger_args.trigger_kwargs
    assert kwargs["producer_task_id"] == "dbt.dbt_producer"
    assert kwargs["upstream_task_ids"] == ["dbt.stg_orders", "dbt.stg_payments"]
    assert sensor.retries == 2  # as many as the producer: a sensor's retry waits for the producer's next attempt


def test_start_trigger_args_leave_out_the_triggers_defaults(shop_template: Path) -> None:
    """Airflow 3.3's triggerer ships the whole serialized DAG with every trigger it starts: the sensors' trigger
    arguments carry only what differs from DbtNodeTrigger's defaults, and rebuild the same trigger."""
    with DAG("render_lean", schedule=None) as dag:
        render_dbt_task_group(shop_template / "target" / "manifest.json", "redis://h:1/0", ["build"])
    seed = dag.get_task("dbt.customers_seed")
    kwargs = seed.start_trigger_args.trigger_kwargs
    assert {"not_run", "retry_check", "carrier_task_id", "bus_conn_id", "upstream_task_ids"}.isdisjoint(kwargs)
    full = seed._trigger_kwargs(None, seed.bus_url)
    assert DbtNodeTrigger(**kwargs).serialize() == DbtNodeTrigger(**full).serialize()


def test_bus_conn_id_reaches_the_trigger(shop_template: Path) -> None:
    with DAG("render_conn", schedule=None) as dag:
        render_dbt_task_group(shop_template / "target" / "manifest.json", None, ["build"], bus_conn_id="bus")
    assert dag.get_task("dbt.dbt_producer").bus_conn_id == "bus"
    assert dag.get_task("dbt.stg_orders").start_trigger_args.trigger_kwargs["bus_conn_id"] == "bus"


def test_connections_give_bus_urls() -> None:
    from types import SimpleNamespace

    from dbtbus.airflow._urls import bus_url_from_connection

    redis = SimpleNamespace(conn_type="redis", host="r.internal", port=6380, login=None, password="p@ss",
                            extra_dejson={"db": 2, "ssl": True})
    assert bus_url_from_connection(redis) == "rediss://:p%40ss@r.internal:6380/2"
    plain = SimpleNamespace(conn_type="dbtbus", host=None, extra_dejson={"url": "xcom://"})
    assert bus_url_from_connection(plain) == "xcom://"


def test_provider_info_names_the_classes() -> None:
    from dbtbus.airflow.provider import get_provider_info

    info = get_provider_info()
    assert info["package-name"] == "dbtbus"
    assert {"dbtbus.airflow.sensors"} == set(info["sensors"][0]["python-modules"])
    assert info["connection-types"][0]["connection-type"] == "dbtbus"
