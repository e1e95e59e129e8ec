"""Airflow Assets per node (``dbtbus.airflow._assets``): the outlets a render declares, the events a run emits.

The event path that only a real scheduler shows — a task ended by the triggerer registers no outlets, a
DAG scheduled on a model's asset starts while the build still runs — is in tests/airflow_live/test_live.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG, Asset
from airflow.triggers.base import TaskFailedEvent, TaskSkippedEvent, TaskSuccessEvent

from dbtbus._kinds import OutcomeKind
from dbtbus._outcome import Outcome
from dbtbus.airflow import dbt_node_asset, render_dbt_task_group
from dbtbus.airflow._assets import asset_extra, asset_uri, dataset_names
from dbtbus.airflow.sensors import DbtNodeSensor
from dbtbus.airflow.triggers import DbtNodeTrigger
from dbtbus.events import NodeResult, NodeStatus, RunFinished

from ._dags import dag_id, registered_node_dags, registering_dags_like_a_dag_file, run_dag, shop_dag, states
from .conftest import shop_args


def _manifest(shop: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((shop / "target" / "manifest.json").read_text())
    return data


def _result(status: NodeStatus, adapter_response: dict[str, Any] | None = None) -> NodeResult:
    return NodeResult(run_id="r1", unique_id="model.shop.orders", status=status, execution_time=1.25,
                      adapter_response=adapter_response or {}, attempt=2)


def _sensors(dag: DAG) -> dict[str, DbtNodeSensor]:
    return {t.task_id: t for t in dag.tasks if isinstance(t, DbtNodeSensor)}


# ------------------------------------------------------------------------------------------ names, metadata

def test_asset_uri_puts_the_name_parts_in_the_path() -> None:
    # Airflow 3's postgres scheme refuses a dotted table name (cosmos moved to this form for Airflow 3).
    assert asset_uri("postgres://db:5432", "analytics.public.orders") == "postgres://db:5432/analytics/public/orders"
    assert Asset(uri=asset_uri("postgres://db:5432", "a.b.c")).uri == "postgres://db:5432/a/b/c"


def test_asset_extra_carries_the_nodes_metadata() -> None:
    record = _result(NodeStatus.SUCCESS, {"rows_affected": 42, "_message": "OK"})
    outcome = Outcome(OutcomeKind.SUCCESS, "r1", "model.shop.orders", record=record, attempt=2)
    assert asset_extra(outcome) == {"unique_id": "model.shop.orders", "run_id": "r1", "attempt": 2,
                                    "status": "success", "execution_time": 1.25, "rows_affected": 42}


def test_asset_extra_has_no_rows_when_the_adapter_reports_none() -> None:
    for response in ({}, {"rows_affected": -1}, {"rows_affected": 1.5}, {"rows_affected": True}):
        outcome = Outcome(OutcomeKind.SUCCESS, "r1", "model.shop.orders",
                          record=_result(NodeStatus.SUCCESS, response))
        assert "rows_affected" not in asset_extra(outcome), response


# ------------------------------------------------------------------------------------------ the render

def test_no_outlets_unless_asked(shop: Path) -> None:
    dag = shop_dag(shop, "redis://localhost:6379/0")
    sensors = _sensors(dag)
    assert sensors and all(not s.outlets for s in sensors.values())
    assert all("end_on_worker" not in s.start_trigger_args.trigger_kwargs for s in sensors.values())


@pytest.mark.usefixtures("_register_dags_like_a_dag_file")
@pytest.mark.parametrize("layout", ["one_dag", "split"])
def test_emit_assets_gives_each_node_task_its_relation(shop: Path, layout: str) -> None:
    manifest = _manifest(shop)
    args = shop_args(shop)
    with DAG(dag_id("assets"), schedule=None) as dag:
        render_dbt_task_group(shop / "target" / "manifest.json", "redis://localhost:6379/0", args,
                              emit_assets=True, layout=layout, max_tasks_per_dag=4)  # type: ignore[arg-type]
    tasks: list[DbtNodeSensor] = [t for d in _dags(dag) for t in d.tasks if isinstance(t, DbtNodeSensor)]
    assert len(tasks) >= 10
    names = dataset_names(manifest, [t.unique_id for t in tasks], args)
    for task in tasks:
        assert task.outlets == [Asset(asset_uri(*names[task.unique_id]))], task.task_id
        # Its success ends on a worker (the only place Airflow registers outlets); nothing else changes.
        assert task.start_trigger_args.trigger_kwargs["end_on_worker"] is True
        assert dbt_node_asset(shop / "target" / "manifest.json", task.unique_id, args) == task.outlets[0]
    if layout == "split":  # the rendering DAG's per-node-DAG tasks emit nothing: their node tasks do
        assert not any(t.outlets for t in dag.tasks)


@pytest.fixture
def _register_dags_like_a_dag_file() -> Iterator[None]:
    yield from registering_dags_like_a_dag_file()


def _dags(dag: DAG) -> list[DAG]:
    """The rendering DAG and the node DAGs a split render registered beside it."""
    return [dag, *registered_node_dags(dag.dag_id).values()]


def test_emit_assets_takes_a_selection(shop: Path) -> None:
    with DAG(dag_id("assets_sel"), schedule=None) as dag:
        render_dbt_task_group(shop / "target" / "manifest.json", "redis://localhost:6379/0", shop_args(shop),
                              emit_assets=["stg_orders", "seed.shop.customers"], layout="one_dag")
    with_outlets = {t.task_id for t in _sensors(dag).values() if t.outlets}
    assert with_outlets == {"dbt.stg_orders", "dbt.customers_seed"}
    with pytest.raises(ValueError, match="stg_ordrs picks none of the rendered nodes"):
        render_dbt_task_group(shop / "target" / "manifest.json", "redis://x", shop_args(shop),
                              emit_assets=["stg_ordrs"], group_id="typo")
    with pytest.raises(TypeError, match="a str is not a list"):
        render_dbt_task_group(shop / "target" / "manifest.json", "redis://x", shop_args(shop),
                              emit_assets="stg_orders", group_id="again")  # type: ignore[arg-type]


def test_the_asset_is_the_relation_as_dbt_ol_names_it(shop: Path) -> None:
    """dbt-ol names the shop's stg_orders (duckdb://<file>, shop.main.stg_orders): the asset is that, the name's
    parts as path segments."""
    asset = dbt_node_asset(shop / "target" / "manifest.json", "stg_orders", shop_args(shop))
    assert asset.name == f"duckdb://{shop}/shop.duckdb/shop/main/stg_orders"
    assert asset == Asset(f"duckdb://{shop}/shop.duckdb/shop/main/stg_orders")  # how a consumer spells it


def test_dbt_node_asset_refuses_an_unknown_name(shop: Path) -> None:
    with pytest.raises(KeyError, match="names 0 nodes"):
        dbt_node_asset(shop / "target" / "manifest.json", "no_such_model")


# ------------------------------------------------------------------------------------------ the trigger

def test_a_success_with_outlets_goes_back_to_a_worker() -> None:
    ok = Outcome(OutcomeKind.SUCCESS, "r1", "model.shop.orders", record=_result(NodeStatus.SUCCESS))
    failed = Outcome(OutcomeKind.FAILED, "r1", "model.shop.orders", record=_result(NodeStatus.ERROR))
    plain = DbtNodeTrigger("redis://x", "r1", "model.shop.orders")
    emitting = DbtNodeTrigger("redis://x", "r1", "model.shop.orders", end_on_worker=True)
    assert isinstance(plain.event(ok), TaskSuccessEvent)
    event = emitting.event(ok)
    assert type(event).__name__ == "TriggerEvent" and event.payload["status"] == "outcome"
    # Failures, upstream failures, skips and nodes not run emit nothing: they still end in the triggerer.
    assert isinstance(emitting.event(failed), TaskFailedEvent)
    doomed = Outcome(OutcomeKind.UPSTREAM_FAILED, "r1", "model.shop.orders", cause="model.shop.stg",
                     cause_record=_result(NodeStatus.ERROR))
    assert isinstance(emitting.event(doomed), TaskFailedEvent)
    not_run = Outcome(OutcomeKind.NOT_RUN, "r1", "model.shop.orders", ending=RunFinished(run_id="r1", success=True))
    assert isinstance(emitting.event(not_run), TaskSkippedEvent)
    assert emitting.serialize()[1]["end_on_worker"] is True


# ------------------------------------------------------------------------------------------ a whole run

def _asset_events(dag_id_: str) -> dict[str, list[dict[str, Any]]]:
    """task id → the extras of the asset events its task emitted."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    out: dict[str, list[dict[str, Any]]] = {}
    with create_session() as session:
        for event in session.scalars(select(AssetEvent).where(AssetEvent.source_dag_id == dag_id_)):
            out.setdefault(str(event.source_task_id), []).append(dict(event.extra or {}))
    return out


@pytest.mark.dbt
def test_only_succeeded_nodes_emit_with_their_metadata(shop: Path, redis_url: str) -> None:
    """shop_break: `broken` errors, its child is upstream_failed, customers_summary's test fails: those emit
    nothing; stg_orders and its seed succeed and each emits one event carrying the node's metadata."""
    select = ["seed.shop.orders", "model.shop.stg_orders", "model.shop.broken", "model.shop.broken_child",
              "model.shop.customers_summary"]
    with DAG(dag_id("assets_run"), schedule=None, catchup=False) as dag:
        render_dbt_task_group(shop / "target" / "manifest.json", redis_url,
                              shop_args(shop, "--vars", "{shop_break: true}"), group_id="dbt",
                              select=select, emit_assets=True, sensors_after_producer=True,
                              sensor_kwargs={"timeout": 120})
    got = states(run_dag(dag))
    assert got["dbt.stg_orders"] == "success" and got["dbt.orders_seed"] == "success", got
    assert got["dbt.broken"] == "failed" and got["dbt.customers_summary"] == "failed", got
    assert got["dbt.broken_child"] in ("failed", "upstream_failed"), got
    events = _asset_events(dag.dag_id)
    assert set(events) == {"dbt.stg_orders", "dbt.orders_seed"}, events
    [stg] = events["dbt.stg_orders"]
    assert stg["unique_id"] == "model.shop.stg_orders" and stg["status"] == "success"
    assert stg["attempt"] == 1 and stg["run_id"].startswith("af-") and stg["execution_time"] > 0
    [seed] = events["dbt.orders_seed"]
    assert seed["unique_id"] == "seed.shop.orders" and seed["rows_affected"] > 0, seed  # dbt-duckdb reports it


# ------------------------------------------------------------------------------------------ the sensor, on a worker

def test_a_re_run_node_emits_with_its_own_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node its task re-ran on a retry succeeded there, not on the bus: its event says so."""
    from types import SimpleNamespace

    from airflow.sdk.execution_time.context import OutletEventAccessors

    import dbtbus._dbt.args as dbt_args

    asset = Asset("x-dbtbus-test://orders")
    sensor = DbtNodeSensor(task_id="orders", unique_id="model.shop.orders", bus_url="redis://x", outlets=[asset])
    monkeypatch.setattr(dbt_args, "run_dbt", lambda args, **kw: (True, ""))
    context = {"outlet_events": OutletEventAccessors(), "ti": SimpleNamespace(try_number=2)}
    sensor._rerun(["build", "--project-dir", "/p"], "r1", "the producer is done", context)
    assert context["outlet_events"][asset].extra == {"unique_id": "model.shop.orders", "run_id": "r1",
                                                     "attempt": 2, "status": "success", "rerun": True}


def test_a_sensor_without_outlets_touches_no_outlet_events() -> None:
    ok = Outcome(OutcomeKind.SUCCESS, "r1", "model.shop.orders", record=_result(NodeStatus.SUCCESS))
    sensor = DbtNodeSensor(task_id="plain", unique_id="model.shop.orders", bus_url="redis://x")
    assert not sensor.emits_assets
    assert sensor._finish(ok, {})["unique_id"] == "model.shop.orders"  # no outlet_events in the context: fine
