"""OpenLineage from the producer task (``dbtbus.airflow._lineage``): under ``dag.test()``, a real HTTP endpoint
receives every node's events, each valid against the spec, each node nested under its Airflow task's run as the
Airflow OpenLineage provider computes it."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.openlineage import conf as ol_conf
from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter
from airflow.sdk import DAG

from dbtbus.airflow import render_dbt_task_group
from dbtbus.airflow._lineage import lineage_parents, wants_openlineage
from dbtbus.lineage import lineage_run_id
from tests.lineage.conftest import LineageEndpoint, SpecValidator, configure_openlineage, serve_endpoint

from ._dags import dag_id, producer_summary, run_dag, states
from .conftest import shop_args

SELECT = ["seed.shop.orders", "model.shop.stg_orders", "model.shop.orders_enriched", "seed.shop.payments",
          "model.shop.stg_payments"]


def _clear_provider_conf() -> None:
    # The provider caches its configuration per process (functools.cache) — except under pytest, where it turns
    # the cache off; cleared anyway, so these tests never depend on that.
    for value in vars(ol_conf).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[LineageEndpoint]:
    with serve_endpoint() as served:
        configure_openlineage(monkeypatch, served)
        monkeypatch.setenv("OPENLINEAGE_NAMESPACE", "dbtbus-test")
        _clear_provider_conf()
        yield served
    _clear_provider_conf()


@pytest.fixture(scope="module")
def spec() -> SpecValidator:
    return SpecValidator()


def _dag(shop: Path, bus_url: str, name: str, **render: Any) -> DAG:
    with DAG(dag_id(name), schedule=None, catchup=False) as dag:
        render_dbt_task_group(shop / "target" / "manifest.json", bus_url,
                              shop_args(shop, "--select", " ".join(uid.split(".")[-1] for uid in SELECT)),
                              group_id="dbt",
                              select=SELECT, sensors_after_producer=True, sensor_kwargs={"timeout": 120},
                              layout="one_dag", **render)
    return dag


def test_off_unless_the_provider_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENLINEAGE_URL", "OPENLINEAGE_CONFIG", "OPENLINEAGE_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", "")
    _clear_provider_conf()
    try:
        assert wants_openlineage(None)[0] is False
        assert wants_openlineage(False)[0] is False
        assert wants_openlineage(True)[0] is True
        monkeypatch.setenv("OPENLINEAGE_URL", "http://127.0.0.1:9")
        _clear_provider_conf()
        assert wants_openlineage(None) == (True, "the Airflow OpenLineage provider is configured")
        assert wants_openlineage(False)[0] is False
    finally:
        _clear_provider_conf()


@pytest.mark.dbt
def test_the_producer_emits_every_node_nested_under_its_task(shop: Path, redis_url: str, endpoint: LineageEndpoint,
                                                             spec: SpecValidator) -> None:
    dag = _dag(shop, redis_url, "lineage")
    dag_run = run_dag(dag)
    got = states(dag_run)
    assert set(got.values()) == {"success"}, got
    summary = producer_summary(dag.dag_id)
    run_id, lineage = summary["run_id"], summary["openlineage"]
    assert lineage["failed"] == 0 and lineage["ended"] is True and lineage["error"] is None, lineage
    # The 5 nodes, their tests, the invocation: each one START and one COMPLETE.
    assert lineage["events"]["START"] == lineage["events"]["COMPLETE"] > 6 and len(lineage["events"]) == 2, lineage

    ours = [e for e in endpoint.events if e["producer"].startswith("https://pypi.org/project/dbtbus/")]
    for event in ours:
        spec.validate(event)
    logical_date = dag_run.logical_date or dag_run.run_after
    dag_run_ol = OpenLineageAdapter.build_dag_run_id(dag_id=dag.dag_id, logical_date=logical_date,
                                                     clear_number=dag_run.clear_number or 0)
    producer_ol = OpenLineageAdapter.build_task_instance_run_id(
        dag_id=dag.dag_id, task_id="dbt.dbt_producer", try_number=1, logical_date=logical_date, map_index=-1)
    tasks = {"seed.shop.orders": "dbt.orders_seed", "model.shop.stg_orders": "dbt.stg_orders",
             "model.shop.orders_enriched": "dbt.orders_enriched", "seed.shop.payments": "dbt.payments_seed",
             "model.shop.stg_payments": "dbt.stg_payments"}
    assert len(ours) == lineage["events"]["START"] * 2
    starts = {e["job"]["name"]: e for e in ours
              if e["eventType"] == "START" and not e["job"]["name"].startswith("test.")}
    invocation = starts.pop("dbt-run-shop")
    assert invocation["run"]["runId"] == lineage_run_id(run_id, "@invocation", 1)
    parent = invocation["run"]["facets"]["parent"]
    assert parent["job"] == {"namespace": "dbtbus-test", "name": f"{dag.dag_id}.dbt.dbt_producer"}
    assert parent["run"]["runId"] == producer_ol and parent["root"]["run"]["runId"] == dag_run_ol
    assert set(starts) == set(tasks)
    for uid, start in starts.items():
        assert start["run"]["runId"] == lineage_run_id(run_id, uid, 1)
        parent = start["run"]["facets"]["parent"]
        assert parent["job"] == {"namespace": "dbtbus-test", "name": f"{dag.dag_id}.{tasks[uid]}"}, uid
        assert parent["run"]["runId"] == OpenLineageAdapter.build_task_instance_run_id(
            dag_id=dag.dag_id, task_id=tasks[uid], try_number=1, logical_date=logical_date, map_index=-1)
        assert parent["root"]["job"]["name"] == dag.dag_id and parent["root"]["run"]["runId"] == dag_run_ol
    # The provider's own events for the same tasks (its listener, in dag.test's process), where it sent any:
    # the very run ids dbtbus named as parents.
    airflow_runs = {e["job"]["name"]: e["run"]["runId"] for e in endpoint.events if e not in ours}
    for uid, task_id in tasks.items():
        if f"{dag.dag_id}.{task_id}" in airflow_runs:
            assert airflow_runs[f"{dag.dag_id}.{task_id}"] == starts[uid]["run"]["facets"]["parent"]["run"]["runId"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.dbt
def test_a_failing_transport_never_fails_the_producer(shop: Path, redis_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens at the endpoint: every event fails, each is counted, the producer succeeds, and it waits
    no longer than ``openlineage_timeout`` for lineage once dbt is done."""
    for name in ("OPENLINEAGE_URL", "OPENLINEAGE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT",  # the provider's own configuration, no retries
                       json.dumps({"type": "http", "url": url, "timeout": 1, "retry": {"total": 0}}))
    _clear_provider_conf()
    try:
        dag = _dag(shop, redis_url, "lineage_down", producer_kwargs={"openlineage_timeout": 5})
        got = states(run_dag(dag))
    finally:
        _clear_provider_conf()
    assert set(got.values()) == {"success"}, got
    lineage = producer_summary(dag.dag_id)["openlineage"]
    assert lineage["failed"] > 0 and lineage["events"] == {}, lineage
    # Either every event was tried and failed, or the producer stopped waiting for them after 5 s: both bounded.
    assert lineage["ended"] or lineage["error"] == "stopped 5 s after dbt ended, before the run's end", lineage


def test_split_layout_parents_are_the_node_dags_runs() -> None:
    """In the split layout a node's task lives in a node DAG whose run has the producer's run id; its logical
    date is its run_after (triggered without one), as the provider reads it."""
    from datetime import datetime, timezone

    made = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    node_run = SimpleNamespace(logical_date=None, run_after=datetime(2026, 1, 2, 3, 5, tzinfo=timezone.utc),
                               clear_number=0, conf={})
    dag_run = SimpleNamespace(logical_date=made, run_after=made, clear_number=1, conf={})
    ti = SimpleNamespace(dag_id="parent", task_id="dbt.dbt_producer", try_number=2, map_index=-1, run_id="r1",
                         dag_run=dag_run, get_template_context=lambda: {"dag_run": dag_run})
    asked: list[tuple[str, str]] = []

    def node_dag_run(dag_id: str, run_id: str) -> Any:
        asked.append((dag_id, run_id))
        if dag_id == "parent.dbt.gone":
            raise RuntimeError("no such run")
        return node_run

    log = SimpleNamespace(warning=lambda *a: None)
    producer, parents = lineage_parents(
        ti, dag_run, {"model.a": ("parent.dbt.staging", "a"), "model.b": ("parent.dbt.staging", "b"),
                      "model.c": ("parent.dbt.gone", "c")}, log, node_dag_run=node_dag_run)
    assert asked == [("parent.dbt.staging", "r1"), ("parent.dbt.gone", "r1")]  # once per node DAG
    assert producer.run_id == OpenLineageAdapter.build_task_instance_run_id(
        dag_id="parent", task_id="dbt.dbt_producer", try_number=2, logical_date=made, map_index=-1)
    assert producer.root is not None and producer.root.run_id == OpenLineageAdapter.build_dag_run_id(
        dag_id="parent", logical_date=made, clear_number=1)
    assert set(parents) == {"model.a", "model.b"}  # the DAG whose run cannot be read: under the invocation
    a = parents["model.a"]
    assert a.name == "parent.dbt.staging.a" and a.run_id == OpenLineageAdapter.build_task_instance_run_id(
        dag_id="parent.dbt.staging", task_id="a", try_number=2, logical_date=node_run.run_after, map_index=-1)
    assert a.root is not None and a.root.name == "parent.dbt.staging"
    assert a.root.run_id == OpenLineageAdapter.build_dag_run_id(dag_id="parent.dbt.staging",
                                                                logical_date=node_run.run_after, clear_number=0)


@pytest.mark.parametrize("layout", ["one_dag", "split"])
def test_the_render_tells_the_producer_each_nodes_task(shop: Path, layout: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.definitions._internal.contextmanager import DagContext

    from dbtbus.airflow import DbtBusProducerOperator

    # Node DAGs register with the DAG file's module, as the dag-processor collects them (tests/airflow/test_render).
    monkeypatch.setattr(DagContext, "current_autoregister_module_name", __name__)
    monkeypatch.setattr(DagContext, "autoregistered_dags", set())
    with DAG(dag_id("lineage_tasks"), schedule=None, catchup=False) as dag:
        render_dbt_task_group(shop / "target" / "manifest.json", "redis://127.0.0.1:1/0", shop_args(shop),
                              group_id="dbt", select=SELECT, layout=layout, max_tasks_per_dag=2,
                              producer_kwargs={"openlineage": False})
    [producer] = [t for t in dag.tasks if isinstance(t, DbtBusProducerOperator)]
    assert producer.openlineage is False  # producer_kwargs' own option reaches the operator
    dags = {dag.dag_id: dag, **{d.dag_id: d for d, _ in DagContext.autoregistered_dags}}
    assert set(producer.openlineage_tasks) == set(SELECT)
    for uid, (where, task_id) in producer.openlineage_tasks.items():
        assert getattr(dags[where].get_task(task_id), "unique_id", None) == uid
        assert (where == dag.dag_id) is (layout == "one_dag"), where


def test_a_try_that_never_started_its_producer_does_not_wait_for_lineage() -> None:
    """The task failed before its producer announced the attempt (memray refused, say): finish() returns at
    once instead of waiting ``openlineage_timeout`` for a run that will never come."""
    import time
    import uuid

    from dbtbus.airflow._lineage import ProducerLineage

    warned: list[str] = []
    log = SimpleNamespace(warning=lambda msg, *args: warned.append(msg % args))
    lineage = ProducerLineage(f"memory://never-{uuid.uuid4().hex[:8]}", "never", 1, client=object(), log=log)
    lineage.start()
    began = time.monotonic()
    delivery = lineage.finish(30.0)
    assert time.monotonic() - began < 8.0
    assert delivery.error == "stopped: the attempt was never announced on the bus" and delivery.events == {}
    assert warned and "never announced" in warned[-1]
