"""Whole DAG runs under ``dag.test()`` on the Redis and XCom buses."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._dags import run_dag, shop_dag, states
from .conftest import shop_args


def test_clean_run(shop: Path, bus_url: str) -> None:
    # Without the failing singular test the default project is green.
    dag = shop_dag(shop, bus_url, dbt_args=shop_args(shop, "--exclude", "assert_customers_have_repeat_orders"))
    dr = run_dag(dag)
    got = states(dr)
    assert got["dbt.dbt_producer"] == "success", got
    sensors = {k: v for k, v in got.items() if k not in ("dbt.dbt_producer", "dbt.dbtbus_carrier")}
    assert len(sensors) == 10
    assert set(sensors.values()) == {"success"}, got
    assert str(dr.state) in ("success", "DagRunState.SUCCESS"), dr.state


BROKEN = ("model.shop.broken", "model.shop.broken_child", "model.shop.broken_grandchild")


def test_failing_model(shop: Path, bus_url: str, capfd: pytest.CaptureFixture[str]) -> None:
    """shop_break: `broken` errors; its sensor fails, its Airflow-downstream sensors are upstream_failed;
    the failing singular test fails customers_summary's sensor (include_tests) and dooms customer_ranking."""
    dag = shop_dag(shop, bus_url, dbt_args=shop_args(shop, "--vars", "{shop_break: true}"),
                   select=(*BROKEN, "model.shop.customers_summary", "model.shop.stg_orders"))
    dr = run_dag(dag)
    got = states(dr)
    assert got["dbt.dbt_producer"] == "failed"  # dbt reported failures (fail_on_dbt_failure)
    assert got["dbt.broken"] == "failed"
    assert got["dbt.broken_child"] == "upstream_failed"
    assert got["dbt.broken_grandchild"] == "upstream_failed"
    assert got["dbt.customers_summary"] == "failed"  # its test assert_customers_have_repeat_orders failed
    assert got["dbt.stg_orders"] == "success"
    assert "failed" in str(dr.state)
    out = capfd.readouterr().out
    assert "Catalog Error" in out or "does not exist" in out


def test_upstream_failed_cause_in_log(shop: Path, bus_url: str, capfd: pytest.CaptureFixture[str]) -> None:
    """Without a sensor for `broken`, broken_child's sensor learns from the bus that an ancestor failed."""
    dag = shop_dag(shop, bus_url, dbt_args=shop_args(shop, "--vars", "{shop_break: true}"),
                   select=BROKEN[1:])
    dr = run_dag(dag)
    got = states(dr)
    assert got["dbt.broken_child"] == "failed"
    assert got["dbt.broken_grandchild"] == "upstream_failed"
    out = capfd.readouterr().out
    assert "[upstream_failed] model.shop.broken_child will not run: upstream model.shop.broken failed" in out
    assert "root cause model.shop.broken:" in out


def test_not_run_is_skipped(shop: Path, bus_url: str) -> None:
    """A node the run never ran (excluded by the producer's own flags) is skipped, not failed."""
    dag = shop_dag(shop, bus_url, dbt_args=shop_args(shop, "--select", "stg_orders", "orders"),
                   select=("model.shop.stg_orders", "model.shop.stg_customers"),
                   producer_kwargs={"fail_on_dbt_failure": False})
    dr = run_dag(dag)
    got = states(dr)
    assert got["dbt.stg_orders"] == "success"
    assert got["dbt.stg_customers"] == "failed"  # not in the run's selection at all: a wiring mistake
