"""DbtNodeTrigger: the task-end event per outcome, the log, serialisation, the run id from the task instance."""

from __future__ import annotations

import types
import uuid
from typing import Any

import anyio
import pytest
from airflow.triggers.base import TaskFailedEvent, TaskSkippedEvent, TaskSuccessEvent, TriggerEvent

import dbtbus
from dbtbus import Outcome, OutcomeKind
from dbtbus.airflow import DbtNodeTrigger
from dbtbus.airflow._policy import decide
from dbtbus.events import NodeResult, NodeStatus, RunFinished

from ._triggers import RUN, FakeTI, first_event, rebuild, started


@pytest.mark.anyio
async def test_success_ends_the_task_in_the_triggerer_with_its_result() -> None:
    url = f"memory://trig-{uuid.uuid4().hex}"
    trigger = DbtNodeTrigger(url, "r", "model.p.b", timeout=30, include_tests=True)
    async with dbtbus.connect(url) as bus:
        await bus.publish(started("r"))
        await bus.renew_lease("r", "t", 30)
        # the triggerer stops mid-wait (restart, rebalancing): the run() task is cancelled...
        with anyio.move_on_after(0.3):
            await first_event(trigger)
        await bus.publish([NodeResult(run_id="r", unique_id="model.p.a", status=NodeStatus.SUCCESS),
                           NodeResult(run_id="r", unique_id="model.p.b", status=NodeStatus.SUCCESS,
                                      execution_time=1.5)])
        # ...and another triggerer rebuilds it from its serialised form: it resumes and answers at once
        event = await first_event(rebuild(trigger))
    assert isinstance(event, TaskSuccessEvent)
    summary = event.xcoms["return_value"]
    assert summary["node_status"] == "success" and summary["execution_time"] == 1.5


@pytest.mark.anyio
async def test_a_sensor_without_xcom_push_ends_its_success_with_no_xcom() -> None:
    """``do_xcom_push=False`` reaches the trigger a sensor starts in the triggerer: its success writes no XCom
    row (before, the summary was pushed whatever the sensor said); the default still pushes it."""
    from dbtbus.airflow import DbtNodeSensor

    url = f"memory://trig-{uuid.uuid4().hex}"
    quiet = DbtNodeSensor(task_id="quiet", unique_id="model.p.a", bus_url=url, do_xcom_push=False)
    default = DbtNodeSensor(task_id="default", unique_id="model.p.a", bus_url=url)
    assert quiet.start_trigger_args.trigger_kwargs["push_result"] is False
    assert "push_result" not in default.start_trigger_args.trigger_kwargs  # the default, left out of the DAG
    async with dbtbus.connect(url) as bus:
        await bus.publish([started("r"), NodeResult(run_id="r", unique_id="model.p.a", status=NodeStatus.SUCCESS)])
        await bus.renew_lease("r", "t", 30)
        events = [await first_event(rebuild(DbtNodeTrigger(**{**sensor.start_trigger_args.trigger_kwargs,
                                                               "run_id": "r"})))
                  for sensor in (quiet, default)]
    assert all(isinstance(event, TaskSuccessEvent) for event in events)
    assert events[0].xcoms is None
    assert events[1].xcoms["return_value"]["unique_id"] == "model.p.a"


@pytest.mark.anyio
async def test_a_sensor_with_a_success_callback_ends_its_success_on_a_worker() -> None:
    """Airflow 3.3 runs on_success_callback only on a worker (the dag-processor drops the request a success ended
    in the triggerer sends): such a sensor's success resumes on a worker; its failures still end in the
    triggerer, where failure callbacks run as usual."""
    from dbtbus.airflow import DbtNodeSensor

    url = f"memory://trig-{uuid.uuid4().hex}"
    notified = DbtNodeSensor(task_id="notified", unique_id="model.p.a", bus_url=url, on_success_callback=print)
    on_failure = DbtNodeSensor(task_id="on_failure", unique_id="model.p.b", bus_url=url, on_failure_callback=print)
    assert notified.start_trigger_args.trigger_kwargs["end_on_worker"] is True
    assert "end_on_worker" not in on_failure.start_trigger_args.trigger_kwargs
    async with dbtbus.connect(url) as bus:
        await bus.publish([started("r"), NodeResult(run_id="r", unique_id="model.p.a", status=NodeStatus.SUCCESS),
                           NodeResult(run_id="r", unique_id="model.p.b", status=NodeStatus.ERROR, message="boom")])
        await bus.renew_lease("r", "t", 30)

        async def event_of(sensor: DbtNodeSensor) -> Any:
            return await first_event(rebuild(DbtNodeTrigger(**{**sensor.start_trigger_args.trigger_kwargs,
                                                               "run_id": "r"})))

        success = await event_of(notified)
        failure = await event_of(on_failure)
    assert type(success).__name__ == "TriggerEvent" and success.payload["status"] == "outcome"
    assert isinstance(failure, TaskFailedEvent)


@pytest.mark.anyio
async def test_upstream_failure_fails_the_task_and_logs_the_root_cause(capfd: pytest.CaptureFixture[str]) -> None:
    url = f"memory://trig-{uuid.uuid4().hex}"
    async with dbtbus.connect(url) as bus:
        await bus.publish([started("r"), NodeResult(run_id="r", unique_id="model.p.a", status=NodeStatus.ERROR,
                                                     message="Catalog Error")])
        await bus.renew_lease("r", "t", 30)
        event = await first_event(DbtNodeTrigger(url, "r", "model.p.c", timeout=10))
    assert isinstance(event, TaskFailedEvent)
    out = capfd.readouterr().out  # Airflow's logging writes there
    assert "root cause model.p.a: Catalog Error" in out and "[upstream_failed]" in out


@pytest.mark.anyio
async def test_not_in_run_goes_back_to_a_worker_which_fails_without_retry() -> None:
    url = f"memory://trig-{uuid.uuid4().hex}"
    async with dbtbus.connect(url) as bus:
        await bus.publish(started("r"))
        await bus.renew_lease("r", "t", 30)
        event = await first_event(DbtNodeTrigger(url, "r", "model.p.zzz", timeout=10))
    assert type(event) is TriggerEvent
    assert event.payload["status"] == "outcome" and event.payload["outcome"]["kind"] == "not_in_run"


@pytest.mark.anyio
async def test_clean_not_run_is_skipped() -> None:
    url = f"memory://trig-{uuid.uuid4().hex}"
    async with dbtbus.connect(url) as bus:
        await bus.publish([started("r"), RunFinished(run_id="r", success=True)])
        event = await first_event(DbtNodeTrigger(url, "r", "model.p.a", timeout=10))
    assert isinstance(event, TaskSkippedEvent)


@pytest.mark.anyio
async def test_producer_lost_and_timeout() -> None:
    url = f"memory://trig-{uuid.uuid4().hex}"
    async with dbtbus.connect(url) as bus:
        await bus.publish(started("r", heartbeat=0.2))
        await bus.renew_lease("r", "t", 0.3)
        spec = DbtNodeTrigger(url, "r", "model.p.a", timeout=60).spec("r")
        with anyio.fail_after(10):
            lost = await decide(bus, spec)
        assert isinstance(lost, Outcome) and lost.kind is OutcomeKind.PRODUCER_LOST
        spec = DbtNodeTrigger(url, "other-run", "model.p.a", timeout=0.2).spec("other-run")
        timed_out = await decide(bus, spec)
        assert isinstance(timed_out, Outcome) and timed_out.kind is OutcomeKind.TIMEOUT


@pytest.mark.anyio
async def test_run_id_derived_from_the_task_instance() -> None:
    """start_from_trigger: the trigger kwargs are static; the run id comes from the triggerer's TI."""
    url = f"memory://trig-{uuid.uuid4().hex}"
    trigger = rebuild(DbtNodeTrigger(url, None, "model.p.a", run_group="dbt"))
    trigger.task_instance = FakeTI()  # type: ignore[assignment]
    async with dbtbus.connect(url) as bus:
        await bus.publish([started(RUN), NodeResult(run_id=RUN, unique_id="model.p.a", status=NodeStatus.SUCCESS)])
        event = await first_event(trigger)
    assert isinstance(event, TaskSuccessEvent) and event.xcoms["return_value"]["run_id"] == RUN


def test_a_trigger_started_from_the_triggerer_lets_go_of_its_dag_copy() -> None:
    """Airflow 3.3 gives each start_from_trigger trigger a task instance whose task belongs to a DAG deserialized
    for it alone; after rendering, the trigger keeps the task instance's plain fields, not that DAG."""
    import gc
    import weakref

    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    class Dag:  # stands in for the deserialized DAG: what must become collectable
        pass

    dag = Dag()
    task = types.SimpleNamespace(dag=dag, template_ext=(), start_trigger_args=None)
    dag.tasks = [task]  # type: ignore[attr-defined]  # a cycle, as a real DAG has
    gone = weakref.ref(dag)
    ti = RuntimeTaskInstance.model_construct(dag_id="d", run_id="r", task_id="dbt.m1", try_number=2, map_index=-1,
                                             task=task)
    trigger = DbtNodeTrigger("{{ 'memory://x' }}", None, "model.p.m1", run_group="dbt")
    trigger.task_instance = ti
    trigger.template_fields = ("bus_url",)
    context: dict[str, Any] = {"ti": ti, "task": task, "dag": dag}
    del dag, task
    trigger.render_template_fields(context)
    gc.collect()
    assert trigger.bus_url == "memory://x"  # rendered as before
    assert gone() is None
    assert context == {}
    assert (ti.dag_id, ti.run_id, ti.task_id, ti.try_number, ti.map_index) == ("d", "r", "dbt.m1", 2, -1)
    assert trigger.spec("run-1").retrying  # what the trigger reads of its task instance is still there
