"""DbtNodeTrigger: serialisation, resumption after a triggerer restart, run ids derived in the triggerer."""

from __future__ import annotations

import importlib
import uuid
from typing import Any

import anyio
import pytest

import dbtbus
from dbtbus.airflow import DbtNodeTrigger, dbtbus_run_id
from dbtbus.events import GraphNode, NodeResult, NodeStatus, ProducerInfo, RunFinished, RunStarted

pytestmark = pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the triggerer runs asyncio


def _started(run_id: str) -> RunStarted:
    graph = {
        "model.p.a": GraphNode("model"),
        "model.p.b": GraphNode("model", ("model.p.a",)),
        "model.p.c": GraphNode("model", ("model.p.b",)),
    }
    return RunStarted(run_id=run_id, producer=ProducerInfo(id="t"), command="build", graph=graph,
                      skip_children_on=frozenset({NodeStatus.ERROR}), heartbeat_interval=30)


def _rebuild(trigger: DbtNodeTrigger) -> DbtNodeTrigger:
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    rebuilt: DbtNodeTrigger = getattr(importlib.import_module(module), name)(**kwargs)
    return rebuilt


async def _first_event(trigger: DbtNodeTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        payload: dict[str, Any] = event.payload
        return payload
    raise AssertionError("no event")


@pytest.mark.anyio
async def test_serialise_and_resume() -> None:
    url = f"memory://trig-{uuid.uuid4().hex}"
    run_id = "run-1"
    trigger = DbtNodeTrigger(url, run_id, "model.p.b", timeout=30, include_tests=True)
    classpath, kwargs = trigger.serialize()
    assert classpath == "dbtbus.airflow.triggers.DbtNodeTrigger"
    assert kwargs["unique_id"] == "model.p.b" and kwargs["include_tests"] is True
    async with dbtbus.connect(url) as bus:
        await bus.publish(_started(run_id))
        await bus.renew_lease(run_id, "t", 30)
        # the triggerer stops mid-wait (restart, rebalancing): the run() task is cancelled...
        with anyio.move_on_after(0.3):
            await _first_event(trigger)
        await bus.publish([NodeResult(run_id=run_id, unique_id="model.p.a", status=NodeStatus.SUCCESS),
                           NodeResult(run_id=run_id, unique_id="model.p.b", status=NodeStatus.SUCCESS,
                                      execution_time=1.5)])
        # ...and another triggerer rebuilds it from its serialised form: it resumes and answers at once
        payload = await _first_event(_rebuild(trigger))
    assert payload["status"] == "success"
    assert payload["node_status"] == "success" and payload["execution_time"] == 1.5


@pytest.mark.anyio
async def test_upstream_failed_payload_names_the_cause() -> None:
    url = f"memory://trig-{uuid.uuid4().hex}"
    async with dbtbus.connect(url) as bus:
        await bus.publish([_started("r"), NodeResult(run_id="r", unique_id="model.p.a", status=NodeStatus.ERROR,
                                                     message="Catalog Error")])
        await bus.renew_lease("r", "t", 30)
        payload = await _first_event(DbtNodeTrigger(url, "r", "model.p.c", timeout=10))
    assert payload["status"] == "upstream_failed"
    assert payload["cause"] == "model.p.a" and payload["cause_message"] == "Catalog Error"
    assert payload["cause_status"] == "error"


@pytest.mark.anyio
async def test_producer_lost_and_timeout() -> None:
    url = f"memory://trig-{uuid.uuid4().hex}"
    started = _started("r")
    object.__setattr__(started, "heartbeat_interval", 0.2)
    async with dbtbus.connect(url) as bus:
        await bus.publish(started)
        await bus.renew_lease("r", "t", 0.3)
        with anyio.fail_after(5):
            payload = await _first_event(DbtNodeTrigger(url, "r", "model.p.a", timeout=60))
        assert payload["status"] == "producer_lost"
        payload = await _first_event(DbtNodeTrigger(url, "other-run", "model.p.a", timeout=0.2))
        assert payload["status"] == "timeout"


class _TI:
    dag_id = "shop"
    run_id = "manual__1"
    map_index = -1
    task_id = "dbt.stg_orders"
    try_number = 1


@pytest.mark.anyio
async def test_run_id_derived_from_the_task_instance() -> None:
    """start_from_trigger: the trigger kwargs are static; the run id comes from the triggerer's TI."""
    url = f"memory://trig-{uuid.uuid4().hex}"
    run_id = dbtbus_run_id("shop", "manual__1", -1, "dbt")
    trigger = _rebuild(DbtNodeTrigger(url, None, "model.p.a", run_group="dbt"))
    trigger.task_instance = _TI()  # type: ignore[assignment]
    async with dbtbus.connect(url) as bus:
        await bus.publish([_started(run_id), NodeResult(run_id=run_id, unique_id="model.p.a",
                                                        status=NodeStatus.SUCCESS)])
        payload = await _first_event(trigger)
    assert payload["status"] == "success" and payload["run_id"] == run_id


@pytest.mark.anyio
async def test_retry_check_asks_for_a_rerun() -> None:
    url = f"memory://trig-{uuid.uuid4().hex}"
    run_id = dbtbus_run_id("shop", "manual__1", -1, None)
    ti = _TI()
    ti.try_number = 2
    async with dbtbus.connect(url) as bus:
        await bus.publish([_started(run_id), NodeResult(run_id=run_id, unique_id="model.p.a", status=NodeStatus.ERROR),
                           RunFinished(run_id=run_id, success=False, exit_code=1)])
        trigger = DbtNodeTrigger(url, None, "model.p.a", retry_check=True)
        trigger.task_instance = ti  # type: ignore[assignment]
        assert (await _first_event(trigger))["status"] == "rerun"
        ti.try_number = 1  # a first try never re-runs: it reports the failure
        assert (await _first_event(trigger))["status"] == "failed"


@pytest.mark.anyio
async def test_quick_success_needs_the_tests_too() -> None:
    from dbtbus.airflow.triggers import quick_success

    url = f"memory://trig-{uuid.uuid4().hex}"
    graph = {"model.p.a": GraphNode("model"), "test.p.t": GraphNode("test", ("model.p.a",))}
    started = RunStarted(run_id="r", producer=ProducerInfo(id="t"), command="build", graph=graph)
    async with dbtbus.connect(url) as bus:
        await bus.publish([started, NodeResult(run_id="r", unique_id="model.p.a", status=NodeStatus.SUCCESS)])
        assert (await quick_success(bus, "r", "model.p.a", False)) is not None
        assert (await quick_success(bus, "r", "model.p.a", True)) is None  # its test has no result yet
        await bus.publish(NodeResult(run_id="r", unique_id="test.p.t", status=NodeStatus.FAIL))
        assert (await quick_success(bus, "r", "model.p.a", True)) is None
        payload = await _first_event(DbtNodeTrigger(url, "r", "model.p.a", include_tests=True, timeout=5))
        assert payload["status"] == "failed" and payload["failed_node"] == "test.p.t"
        await bus.publish(NodeResult(run_id="r", unique_id="test.p.t", status=NodeStatus.PASS))
        assert (await quick_success(bus, "r", "model.p.a", True)) is not None


@pytest.mark.anyio
async def test_triggers_in_one_loop_share_one_bus() -> None:
    """A triggerer runs many triggers in one event loop: they share one bus (one reader per run)."""
    from dbtbus.airflow import triggers

    url = f"memory://trig-{uuid.uuid4().hex}"
    buses = []
    async with triggers.shared_bus(url) as first, triggers.shared_bus(url) as second:
        buses = [first, second]
        assert first is second
        await first.publish([_started("r"), NodeResult(run_id="r", unique_id="model.p.a", status=NodeStatus.SUCCESS)])
        await first.renew_lease("r", "t", 30)
        async with anyio.create_task_group() as tg:
            results: list[dict[str, Any]] = []

            async def one(uid: str) -> None:
                results.append(await _first_event(DbtNodeTrigger(url, "r", uid, timeout=5)))

            tg.start_soon(one, "model.p.a")
            tg.start_soon(one, "model.p.b")
            await anyio.sleep(0.2)
            await first.publish(NodeResult(run_id="r", unique_id="model.p.b", status=NodeStatus.SUCCESS))
        assert sorted(r["status"] for r in results) == ["success", "success"]
        assert len([k for k in triggers._SHARED if k[1] == url]) == 1
    assert buses
