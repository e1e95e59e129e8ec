"""examples/airflow/shop_dag.py renders, serialises and runs under dag.test()."""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path

import pytest

from ._dags import run_dag, states
from .conftest import ROOT


def _load(monkeypatch: pytest.MonkeyPatch, shop: Path, url: str) -> object:
    monkeypatch.setenv("DBTBUS_SHOP_DIR", str(shop))
    monkeypatch.setenv("DBTBUS_URL", url)
    monkeypatch.setenv("DBTBUS_SEQUENTIAL", "1")
    spec = importlib.util.spec_from_file_location("shop_dag_example", ROOT / "examples" / "airflow" / "shop_dag.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag  # type: ignore[attr-defined]


def test_example_dag(shop: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dag = _load(monkeypatch, shop, redis_url)
    dag.dag_id = f"{dag.dag_id}_{shop.parent.name}"  # type: ignore[attr-defined]
    for task in dag.tasks:  # type: ignore[attr-defined]
        task.retry_delay = timedelta(0)  # the example retries after 30 s
    got = states(run_dag(dag))  # type: ignore[arg-type]
    assert got["dbt.stg_orders"] == "success"
    assert got["dbt.customers_summary"] == "failed"  # the project's intentionally failing test
    assert got["dbt.customer_ranking"] == "upstream_failed"
    assert got["dbt.broken"] == "success"  # shop_break is off by default
    assert got["dbt.orders_snapshot_snapshot"] == "success"
