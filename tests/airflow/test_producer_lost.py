"""The producer dies mid-run: sensors fail fast with ProducerLost (within ~2 heartbeats), not at their timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import anyio

import dbtbus
from dbtbus.airflow import DbtNodeSensor

from ._dags import dag_id, run_dag, states
from .conftest import shop_args

PRODUCER = """
import sys, dbtbus
dbtbus.Producer(sys.argv[1], sys.argv[2], heartbeat_interval=0.5).invoke(sys.argv[3:])
"""


SLOW_PY = """
def model(dbt, session):
    import time
    time.sleep(30)
    return dbt.ref("stg_orders")
"""


def _first_result(url: str, run_id: str, deadline: float) -> None:
    async def look() -> bool:
        async with dbtbus.connect(url) as bus:
            state = await bus.run_state(run_id)
            return bool(state.results)

    while time.monotonic() < deadline:
        if anyio.run(look):
            return
        time.sleep(0.05)
    raise AssertionError("the producer published no result in time")


def test_producer_killed_redis(shop: Path, redis_url: str, capfd: Any) -> None:
    """A real producer process is SIGKILLed mid-run (no RunCrashed is ever published)."""
    from airflow.sdk import DAG

    run_id = f"killed-{uuid.uuid4().hex[:8]}"
    (shop / "models" / "slow.py").write_text(SLOW_PY)
    (shop / "models" / "after_slow.sql").write_text("select * from {{ ref('slow') }}\n")
    proc = subprocess.Popen([sys.executable, "-c", PRODUCER, redis_url, run_id, *shop_args(shop)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        _first_result(redis_url, run_id, time.monotonic() + 60)
        killer = threading.Timer(1.0, os.kill, (proc.pid, signal.SIGKILL))
        killer.start()
        with DAG(dag_id("killed"), schedule=None) as dag:
            for uid in ("model.shop.slow", "model.shop.after_slow"):
                DbtNodeSensor(task_id=uid.rsplit(".", 1)[1], bus_url=redis_url, unique_id=uid,
                              dbtbus_run_id=run_id, timeout=300)
        dr = run_dag(dag)
    finally:
        proc.kill()
        proc.wait()
    got = states(dr)
    assert set(got.values()) == {"failed"}, got  # long before their 300 s timeout: the lease said so
    assert "[producer_lost]" in capfd.readouterr().out


def _dead_producer(**context: Any) -> None:
    """Publish what a producer has published when SIGKILLed mid-run: RunStarted, a lease, one result."""
    from dbtbus.airflow._run_id import run_id_from_context
    from dbtbus.airflow._urls import resolve_bus_url
    from dbtbus.events import GraphNode, NodeResult, NodeStatus, ProducerInfo, RunStarted

    ti = context["ti"]
    url = resolve_bus_url("xcom://?poll=0.05", ti, "dead_producer")
    run_id = run_id_from_context(context)
    graph = {"model.p.a": GraphNode("model"), "model.p.b": GraphNode("model", ("model.p.a",))}

    async def main() -> None:
        async with dbtbus.connect(url) as bus:
            await bus.publish(RunStarted(run_id=run_id, producer=ProducerInfo(id="dead"), command="build",
                                         graph=graph, heartbeat_interval=0.5))
            await bus.renew_lease(run_id, "dead", 0.75)
            await bus.publish(NodeResult(run_id=run_id, unique_id="model.p.a", status=NodeStatus.SUCCESS))

    anyio.run(main)  # ...and "dies": no more heartbeats, no RunFinished/RunCrashed


def test_producer_lost_xcom(capfd: Any) -> None:
    """On the XCom bus the lease is an XCom row with an expiry: a dead producer is noticed the same way."""
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG

    with DAG(dag_id("lost_xcom"), schedule=None) as dag:
        dead = PythonOperator(task_id="dead_producer", python_callable=_dead_producer)
        for uid in ("model.p.a", "model.p.b"):
            sensor = DbtNodeSensor(task_id=uid.rsplit(".", 1)[1], bus_url="xcom://?poll=0.05", unique_id=uid,
                                   carrier_task_id="dead_producer", timeout=300)
            dead >> sensor
    dr = run_dag(dag)
    got = states(dr)
    assert got["a"] == "success"
    assert got["b"] == "failed"
    assert "[producer_lost]" in capfd.readouterr().out
