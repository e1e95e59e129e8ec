"""Retries under ``dag.test()``: a producer retry resumes, a sensor retry re-runs its node."""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ._dags import producer_summary, run_dag, shop_dag, states
from .conftest import BIN, copy_shop, shop_args

FLAKY_SQL = """{% if env_var('DBTBUS_FLAKY', '0') == '1' %}
select * from this_table_does_not_exist
{% else %}
select customer_id from {{ ref('stg_customers') }}
{% endif %}
"""


@pytest.fixture(scope="module")
def flaky_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = copy_shop(tmp_path_factory.mktemp("flaky-template"))
    (path / "models" / "flaky.sql").write_text(FLAKY_SQL)
    subprocess.run([str(BIN / "dbt"), "parse", "--project-dir", str(path), "--profiles-dir", str(path)],
                   check=True, capture_output=True, cwd=path)
    return path


@pytest.fixture
def flaky(flaky_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import shutil

    path = tmp_path / "flaky"
    shutil.copytree(flaky_template, path)
    monkeypatch.setenv("DBTBUS_DUCKDB_PATH", str(path / "shop.duckdb"))
    monkeypatch.setenv("DBTBUS_FLAKY", "1")
    return path


def _heal(context: Any) -> None:
    os.environ["DBTBUS_FLAKY"] = "0"  # the transient failure is gone by the next try


SELECT = ("seed.shop.customers", "model.shop.stg_customers", "model.shop.flaky", "model.shop.stg_orders")
ARGS_EXTRA = ("--select", "customers", "stg_customers", "flaky", "orders", "stg_orders")


def test_sensor_retry_reruns_its_node(flaky: Path, bus_url: str, capfd: pytest.CaptureFixture[str]) -> None:
    dag = shop_dag(flaky, bus_url, dbt_args=shop_args(flaky, *ARGS_EXTRA), select=SELECT,
                   producer_kwargs={"fail_on_dbt_failure": False},
                   sensor_kwargs={"retries": 1, "retry_delay": timedelta(0), "on_retry_callback": _heal})
    dr = run_dag(dag)
    got = states(dr)
    assert got["dbt.flaky"] == "success", got
    assert got["dbt.stg_customers"] == "success"
    out = capfd.readouterr().out
    assert "re-running dbt build --select resource_type:model,package:shop,flaky" in out


def test_producer_retry_resumes(flaky: Path, bus_url: str) -> None:
    dag = shop_dag(flaky, bus_url, dbt_args=shop_args(flaky, *ARGS_EXTRA), select=SELECT,
                   producer_kwargs={"retries": 1, "retry_delay": timedelta(0), "on_retry_callback": _heal})
    dr = run_dag(dag)
    got = states(dr)
    assert got["dbt.dbt_producer"] == "success", got
    assert {got[f"dbt.{n}"] for n in ("flaky", "stg_customers", "stg_orders", "customers_seed")} == {"success"}
    summary = producer_summary(dag.dag_id)
    assert summary["attempt"] == 2
    # attempt 2 built only what had not succeeded: the flaky model (everything else was excluded)
    assert summary["counts"] == {"success": 1}, summary
