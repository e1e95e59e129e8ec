"""``DbtBusProducerOperator(memray_output=...)`` under ``dag.test()``: dbt's memory profiled in the task's
process and in dbt's subprocess; a profile that cannot be taken fails the task at once, publishing nothing."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from airflow.sdk import DAG

import dbtbus
from dbtbus.airflow import DbtBusProducerOperator

from ._dags import dag_id, producer_summary, run_dag, shop_dag, states
from .conftest import BIN, shop_args

MiB = 2**20
GREEN = ("--exclude", "assert_customers_have_repeat_orders")  # the shop's one failing test


def _profile_peak(path: Path) -> int:
    import memray

    reader = memray.FileReader(path)
    assert reader.metadata.total_allocations > 0
    return int(reader.metadata.peak_memory)


def _producer_dag(shop: Path, bus_url: str, run_id: str, **kwargs: Any) -> DAG:
    with DAG(dag_id("memray"), schedule=None, catchup=False) as dag:
        DbtBusProducerOperator(task_id="dbt_producer", bus_url=bus_url, dbtbus_run_id=run_id,
                               dbt_args=shop_args(shop, *GREEN), **kwargs)
    return dag


def _entries(url: str, run_id: str) -> int:
    async def count() -> int:
        async with dbtbus.connect(url) as bus:
            return len(await bus.backend.read(run_id, None, limit=100_000, timeout=0))

    return anyio.run(count)


def _tries(dag_run: Any) -> dict[str, int]:
    from airflow.utils.session import create_session

    with create_session() as session:
        return {ti.task_id: ti.try_number for ti in dag_run.get_task_instances(session=session)}


def test_in_process_profile_per_attempt(shop: Path, redis_url: str, tmp_path: Path) -> None:
    """The templated path names the attempt; the sensors' outcomes are what they would be without memray."""
    template = str(tmp_path / "dbt-{{ ti.try_number }}.bin")
    dag = shop_dag(shop, redis_url, dbt_args=shop_args(shop, *GREEN), producer_kwargs={"memray_output": template})
    got = states(run_dag(dag))
    assert set(got.values()) == {"success"}, got
    profile = tmp_path / "dbt-1.bin"
    assert _profile_peak(profile) > 1 * MiB
    assert producer_summary(dag.dag_id)["memray_output"] == str(profile)


def test_subprocess_profile_is_dbts_own_process(shop: Path, redis_url: str, tmp_path: Path) -> None:
    profile = tmp_path / "child.bin"
    run_id = f"memray-sub-{uuid.uuid4().hex[:6]}"
    dag = _producer_dag(shop, redis_url, run_id, invocation="subprocess", dbt_executable=str(BIN / "dbt"),
                        memray_output=str(profile))
    got = states(run_dag(dag))
    assert got == {"dbt_producer": "success"}
    assert _profile_peak(profile) > 20 * MiB  # dbt's interpreter with its imports, not a stub
    assert _entries(redis_url, run_id) > 0  # the run was published as usual


def test_a_refused_profile_fails_at_once_and_publishes_nothing(
    shop: Path, redis_url: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """memray never overwrites: an existing file is a configuration error no retry fixes."""
    profile = tmp_path / "taken.bin"
    profile.write_bytes(b"someone else's profile")
    run_id = f"memray-refused-{uuid.uuid4().hex[:6]}"
    dag = _producer_dag(shop, redis_url, run_id, memray_output=str(profile), retries=2,
                        retry_delay=timedelta(0))
    dag_run = run_dag(dag)
    assert states(dag_run) == {"dbt_producer": "failed"}
    assert _tries(dag_run) == {"dbt_producer": 1}  # AirflowFailException: no retry
    assert profile.read_bytes() == b"someone else's profile"
    assert _entries(redis_url, run_id) == 0  # no attempt announced, so no waiter sees a crashed run
    out = capfd.readouterr().out
    assert "no memray profile for run" in out and "already exists" in out
