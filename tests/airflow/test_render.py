from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow.sdk import DAG

from dbtbus.airflow import DbtBusProducerOperator, DbtNodeSensor, DbtNodeTrigger, render_dbt_task_group

from ._dags import registered_node_dags, registering_dags_like_a_dag_file


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


def test_render_warns_on_a_relative_root_path_with_the_whole_fix() -> None:
    with DAG("render_relative", schedule=None) as dag, \
            pytest.warns(UserWarning, match="absolute --project-dir") as caught:
        render_dbt_task_group(_chain_manifest(2, root_path="."), "redis://h:1/0", ["build"])
    message = str(caught[0].message)
    # An absolute --project-dir alone is not enough: dbt's partial-parse cache keeps the relative root_path.
    assert "--no-partial-parse" in message and "partial_parse.msgpack" in message
    # The producer task says it again in its own log, where the failing seeds show.
    assert dag.get_task("dbt.dbt_producer").manifest_warnings == [message]


def test_a_clean_manifest_gives_the_producer_nothing_to_say(shop_template: Path) -> None:
    with DAG("render_clean", schedule=None) as dag:
        render_dbt_task_group(shop_template / "target" / "manifest.json", "redis://h:1/0", ["build"])
    assert dag.get_task("dbt.dbt_producer").manifest_warnings == []


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


def test_a_dbtbus_connection_takes_its_password_from_the_password_field() -> None:
    from types import SimpleNamespace

    from dbtbus.airflow._urls import bus_url_from_connection

    def conn(host: str, login: str | None = None, password: str | None = None) -> object:
        return SimpleNamespace(conn_type="dbtbus", host=host, login=login, password=password, extra_dejson={})

    assert bus_url_from_connection(conn("redis://r:6379/0", password="p@ss")) == "redis://:p%40ss@r:6379/0"
    assert bus_url_from_connection(conn("rediss://r:6380/1", "team", "s")) == "rediss://team:s@r:6380/1"
    # A URL that names its own credentials keeps them; a URL without a host (a bare xcom://) is left alone.
    assert bus_url_from_connection(conn("redis://:mine@r:6379/0", password="other")) == "redis://:mine@r:6379/0"
    assert bus_url_from_connection(conn("xcom://", password="x")) == "xcom://"
    assert bus_url_from_connection(conn("redis://r:6379/0")) == "redis://r:6379/0"


def test_provider_info_names_the_classes() -> None:
    from dbtbus.airflow.provider import get_provider_info

    info = get_provider_info()
    assert info["package-name"] == "dbtbus"
    assert {"dbtbus.airflow.sensors"} == set(info["sensors"][0]["python-modules"])
    assert info["connection-types"][0]["connection-type"] == "dbtbus"


def test_sensors_keep_the_dags_default_retries_when_the_producer_names_none(shop_template: Path) -> None:
    """They used to be set to the producer's retries or 0, overriding the DAG's default_args."""
    with DAG("render_default_retries", schedule=None, default_args={"retries": 3}) as dag:
        render_dbt_task_group(shop_template / "target" / "manifest.json", "redis://h:1/0", ["build"])
    assert dag.get_task("dbt.orders_enriched").retries == 3
    assert dag.get_task("dbt.dbt_producer").retries == 3


@pytest.mark.parametrize("layout", ["one_dag", "split"])
def test_a_success_callback_in_the_dags_default_args_ends_each_success_on_a_worker(layout: str) -> None:
    """default_args reach every node task (node DAGs inherit them): each must end its success where Airflow
    runs on_success_callback, a worker; the producer is a worker task anyway."""
    with DAG(f"render_callback_{layout}", schedule=None, default_args={"on_success_callback": print}) as dag:
        render_dbt_task_group(_wide_manifest(5), "redis://h:1/0", ["build"], layout=layout,  # type: ignore[arg-type]
                              max_tasks_per_dag=3)
    sensors = [t for d in [dag, *registered_node_dags(dag.dag_id).values()] for t in d.tasks
               if isinstance(t, DbtNodeSensor)]
    assert len(sensors) == 6
    assert all(t.start_trigger_args.trigger_kwargs["end_on_worker"] is True for t in sensors)


def _wide_manifest(models: int, folders: int = 1) -> dict[str, object]:
    """A seed and ``models`` models in ``folders`` folders, each model reading the seed and its predecessor."""
    nodes: dict[str, object] = {"seed.p.s": {"unique_id": "seed.p.s", "resource_type": "seed", "name": "s",
                                             "fqn": ["p", "s"], "root_path": "/abs", "depends_on": {"nodes": []}}}
    for i in range(models):
        uid = f"model.p.m{i:03d}"
        parents = ["seed.p.s"] + ([f"model.p.m{i - 1:03d}"] if i else [])
        nodes[uid] = {"unique_id": uid, "resource_type": "model", "name": f"m{i:03d}", "root_path": "/abs",
                      "fqn": ["p", f"f{i % folders}", f"m{i:03d}"], "depends_on": {"nodes": parents}}
    return {"metadata": {"project_name": "p"}, "nodes": nodes}


@pytest.fixture(autouse=True)
def _register_dags_like_a_dag_file() -> Iterator[None]:
    yield from registering_dags_like_a_dag_file()


def test_a_project_of_up_to_100_nodes_stays_in_one_dag() -> None:
    with DAG("render_small", schedule=None) as dag:
        render_dbt_task_group(_wide_manifest(99), "redis://h:1/0", ["build"])
    assert len(dag.task_dict) == 101 and not registered_node_dags("render_small")  # producer + 100 node tasks
    with DAG("render_101", schedule=None) as dag:
        render_dbt_task_group(_wide_manifest(100), "redis://h:1/0", ["build"])
    assert len(registered_node_dags("render_101")) == 3  # models in 50s, the seed apart


def test_a_larger_project_gets_node_dags_of_bounded_size() -> None:
    with DAG("render_split", schedule=None, default_args={"retries": 2}, tags=["team"], max_active_runs=3) as dag:
        group = render_dbt_task_group(_wide_manifest(120, folders=3), "redis://h:1/0", ["build"],
                                      max_tasks_per_dag=30)
    node_dags = registered_node_dags("render_split")
    # folders f0..f2 of 40 models each: two chunks each; the seed in a DAG of its own
    assert sorted(node_dags) == ["render_split.dbt.models_f0_01", "render_split.dbt.models_f0_02",
                                 "render_split.dbt.models_f1_01", "render_split.dbt.models_f1_02",
                                 "render_split.dbt.models_f2_01", "render_split.dbt.models_f2_02",
                                 "render_split.dbt.seeds"]
    assert all(len(d.tasks) <= 30 for d in node_dags.values())
    assert sum(len(d.tasks) for d in node_dags.values()) == 121
    # the rendering DAG: the producer (which starts the node DAGs' runs) and one task per node DAG
    producer = dag.get_task("dbt.dbt_producer")
    assert sorted(producer.node_dag_ids) == sorted(node_dags)
    waiters = {t.task_id: t for t in dag.tasks if t.task_id.startswith("dbt.nodes_")}
    assert len(waiters) == 7 and set(group.children) == {"dbt.dbt_producer", *waiters}
    assert waiters["dbt.nodes_seeds"].unique_ids == ["seed.p.s"]
    assert all(t.start_from_trigger and t.trigger_rule == "always" for t in waiters.values())
    # node DAGs: unpaused, the parent's defaults and tags, no schedule
    for node_dag in node_dags.values():
        assert node_dag.is_paused_upon_creation is False and node_dag.schedule is None
        assert node_dag.default_args == {"retries": 2} and set(node_dag.tags) == {"team", "dbtbus"}
        assert node_dag.max_active_runs == 3
    task = node_dags["render_split.dbt.models_f0_01"].get_task("m003")
    assert isinstance(task, DbtNodeSensor) and task.retries == 2 and task.task_id == "m003"
    kwargs = task.start_trigger_args.trigger_kwargs
    assert kwargs["run_dag_id"] == "render_split" and kwargs["producer_task_id"] == "dbt.dbt_producer"
    # dbt's edges inside a node DAG are edges; across node DAGs they are references for a re-run's wait
    assert task.upstream_task_ids == set()  # m002 is in folder f2
    assert kwargs["upstream_task_ids"] == ["render_split.dbt.models_f2_01/m002", "render_split.dbt.seeds/s_seed"]
    m093 = node_dags["render_split.dbt.models_f0_02"].get_task("m093")  # folder chunks: 30 ids in order each
    assert m093.start_trigger_args.trigger_kwargs["upstream_task_ids"] == [
        "render_split.dbt.models_f2_02/m092", "render_split.dbt.seeds/s_seed"]


def test_layout_can_be_forced_and_is_checked(shop_template: Path) -> None:
    with DAG("render_forced", schedule=None) as dag:
        render_dbt_task_group(shop_template / "target" / "manifest.json", "xcom://", ["build"], layout="split")
    assert {t.task_id for t in dag.tasks} >= {"dbt.dbtbus_carrier", "dbt.dbt_producer"}
    node_dags = registered_node_dags("render_forced")
    assert node_dags and sum(len(d.tasks) for d in node_dags.values()) == 14
    sensor = next(d for d in node_dags.values() if "stg_orders" in d.task_dict).get_task("stg_orders")
    assert sensor.start_trigger_args.trigger_kwargs["carrier_task_id"] == "dbt.dbtbus_carrier"
    with DAG("render_bad_layout", schedule=None), pytest.raises(ValueError, match="layout"):
        render_dbt_task_group(_wide_manifest(3), "redis://h:1/0", ["build"], layout="mapped")  # type: ignore[arg-type]
    with DAG("render_bad_mix", schedule=None), pytest.raises(ValueError, match="one_dag"):
        render_dbt_task_group(_wide_manifest(3), "redis://h:1/0", ["build"], layout="split",
                              sensors_after_producer=True)


def test_node_dags_serialise_with_the_producers_dag_in_their_triggers() -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    with DAG("render_split_ser", schedule=None):
        render_dbt_task_group(_wide_manifest(60), "redis://h:1/0", ["build"], layout="split")
    for node_dag in registered_node_dags("render_split_ser").values():
        restored = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(node_dag))
        for task in restored.tasks:
            assert task.start_from_trigger
            kwargs = str(task.start_trigger_args.trigger_kwargs)  # Airflow 3.3 keeps them encoded until used
            assert "'run_dag_id'" in kwargs and "'render_split_ser'" in kwargs
