"""DbtNodeTrigger: the decision (outcome or re-run), the task-end event per outcome, serialisation, sharing."""

from __future__ import annotations

import importlib
import types
import uuid
from typing import Any

import anyio
import pytest
from airflow.triggers.base import TaskFailedEvent, TaskSkippedEvent, TaskSuccessEvent, TriggerEvent

import dbtbus
from dbtbus import Outcome, OutcomeKind
from dbtbus.airflow import DbtNodeTrigger, dbtbus_run_id
from dbtbus.airflow import triggers as triggers_mod
from dbtbus.airflow.triggers import AIRFLOW_STATE, Rerun, TaskStates, airflow_state
from dbtbus.events import GraphNode, NodeResult, NodeStatus, ProducerInfo, RunFinished, RunStarted


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the triggerer runs asyncio

RUN = dbtbus_run_id("shop", "manual__1", -1, "dbt")


def _started(run_id: str, attempt: int = 1, heartbeat: float = 30) -> RunStarted:
    graph = {
        "model.p.a": GraphNode("model"),
        "model.p.b": GraphNode("model", ("model.p.a",)),
        "model.p.c": GraphNode("model", ("model.p.b",)),
    }
    return RunStarted(run_id=run_id, producer=ProducerInfo(id="t"), command="build", graph=graph, attempt=attempt,
                      skip_children_on=frozenset({NodeStatus.ERROR}), heartbeat_interval=heartbeat,
                      args=("build", "--project-dir", "/p"))


class _TI:
    dag_id = "shop"
    run_id = "manual__1"
    map_index = -1
    task_id = "dbt.b"

    def __init__(self, try_number: int = 1) -> None:
        self.try_number = try_number


@pytest.fixture
def producer_state(monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    """What Airflow answers about the DAG run's task instances (the Task SDK's get_task_states)."""
    states: dict[str, str | None] = {"dbt.dbt_producer": "running"}
    monkeypatch.setattr(TaskStates, "_ask", lambda self: dict(states))
    monkeypatch.setattr(TaskStates, "_cache", {})
    return states


def _trigger(url: str, uid: str, *, ti: _TI | None = None, **kwargs: Any) -> DbtNodeTrigger:
    kwargs.setdefault("producer_check_interval", 0.05)
    trigger = DbtNodeTrigger(url, None if ti is not None else kwargs.pop("run_id", "r"), uid, **kwargs)
    if ti is not None:
        trigger.task_instance = ti  # type: ignore[assignment]
    return trigger


def _rebuild(trigger: DbtNodeTrigger) -> DbtNodeTrigger:
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    rebuilt: DbtNodeTrigger = getattr(importlib.import_module(module), name)(**kwargs)
    return rebuilt


async def _first_event(trigger: DbtNodeTrigger) -> TriggerEvent:
    async for event in trigger.run():
        return event
    raise AssertionError("no event")


def test_every_outcome_kind_has_an_airflow_state() -> None:
    assert set(AIRFLOW_STATE) == set(OutcomeKind)
    ok_end = RunFinished(run_id="r", success=True)
    failed_end = RunFinished(run_id="r", success=False, exit_code=2, error="bad flag")
    not_run = Outcome(kind=OutcomeKind.NOT_RUN, run_id="r", unique_id="u", ending=ok_end)
    assert airflow_state(not_run) == "skipped"
    assert airflow_state(not_run, "fail") == "failed"
    doomed = Outcome(kind=OutcomeKind.NOT_RUN, run_id="r", unique_id="u", ending=failed_end)
    assert airflow_state(doomed) == "failed"  # dbt failed: a skip would be a false green


@pytest.mark.anyio
async def test_success_ends_the_task_in_the_triggerer_with_its_result() -> None:
    url = f"memory://trig-{uuid.uuid4().hex}"
    trigger = DbtNodeTrigger(url, "r", "model.p.b", timeout=30, include_tests=True)
    async with dbtbus.connect(url) as bus:
        await bus.publish(_started("r"))
        await bus.renew_lease("r", "t", 30)
        # the triggerer stops mid-wait (restart, rebalancing): the run() task is cancelled...
        with anyio.move_on_after(0.3):
            await _first_event(trigger)
        await bus.publish([NodeResult(run_id="r", unique_id="model.p.a", status=NodeStatus.SUCCESS),
                           NodeResult(run_id="r", unique_id="model.p.b", status=NodeStatus.SUCCESS,
                                      execution_time=1.5)])
        # ...and another triggerer rebuilds it from its serialised form: it resumes and answers at once
        event = await _first_event(_rebuild(trigger))
    assert isinstance(event, TaskSuccessEvent)
    summary = event.xcoms["return_value"]
    assert summary["node_status"] == "success" and summary["execution_time"] == 1.5


@pytest.mark.anyio
async def test_upstream_failure_fails_the_task_and_logs_the_root_cause(capfd: pytest.CaptureFixture[str]) -> None:
    url = f"memory://trig-{uuid.uuid4().hex}"
    async with dbtbus.connect(url) as bus:
        await bus.publish([_started("r"), NodeResult(run_id="r", unique_id="model.p.a", status=NodeStatus.ERROR,
                                                     message="Catalog Error")])
        await bus.renew_lease("r", "t", 30)
        event = await _first_event(DbtNodeTrigger(url, "r", "model.p.c", timeout=10))
    assert isinstance(event, TaskFailedEvent)
    out = capfd.readouterr().out  # Airflow's logging writes there
    assert "root cause model.p.a: Catalog Error" in out and "[upstream_failed]" in out


@pytest.mark.anyio
async def test_not_in_run_goes_back_to_a_worker_which_fails_without_retry() -> None:
    url = f"memory://trig-{uuid.uuid4().hex}"
    async with dbtbus.connect(url) as bus:
        await bus.publish(_started("r"))
        await bus.renew_lease("r", "t", 30)
        event = await _first_event(DbtNodeTrigger(url, "r", "model.p.zzz", timeout=10))
    assert type(event) is TriggerEvent
    assert event.payload["status"] == "outcome" and event.payload["outcome"]["kind"] == "not_in_run"


@pytest.mark.anyio
async def test_clean_not_run_is_skipped() -> None:
    url = f"memory://trig-{uuid.uuid4().hex}"
    async with dbtbus.connect(url) as bus:
        await bus.publish([_started("r"), RunFinished(run_id="r", success=True)])
        event = await _first_event(DbtNodeTrigger(url, "r", "model.p.a", timeout=10))
    assert isinstance(event, TaskSkippedEvent)


@pytest.mark.anyio
async def test_producer_lost_and_timeout() -> None:
    url = f"memory://trig-{uuid.uuid4().hex}"
    async with dbtbus.connect(url) as bus:
        await bus.publish(_started("r", heartbeat=0.2))
        await bus.renew_lease("r", "t", 0.3)
        spec = DbtNodeTrigger(url, "r", "model.p.a", timeout=60).spec("r")
        with anyio.fail_after(10):
            lost = await triggers_mod.decide(bus, spec)
        assert isinstance(lost, Outcome) and lost.kind is OutcomeKind.PRODUCER_LOST
        spec = DbtNodeTrigger(url, "other-run", "model.p.a", timeout=0.2).spec("other-run")
        timed_out = await triggers_mod.decide(bus, spec)
        assert isinstance(timed_out, Outcome) and timed_out.kind is OutcomeKind.TIMEOUT


@pytest.mark.anyio
async def test_run_id_derived_from_the_task_instance() -> None:
    """start_from_trigger: the trigger kwargs are static; the run id comes from the triggerer's TI."""
    url = f"memory://trig-{uuid.uuid4().hex}"
    trigger = _rebuild(DbtNodeTrigger(url, None, "model.p.a", run_group="dbt"))
    trigger.task_instance = _TI()  # type: ignore[assignment]
    async with dbtbus.connect(url) as bus:
        await bus.publish([_started(RUN), NodeResult(run_id=RUN, unique_id="model.p.a", status=NodeStatus.SUCCESS)])
        event = await _first_event(trigger)
    assert isinstance(event, TaskSuccessEvent) and event.xcoms["return_value"]["run_id"] == RUN


@pytest.mark.anyio
async def test_a_retry_waits_for_the_producers_next_attempt(producer_state: dict[str, str | None]) -> None:
    """The producer failed attempt 1 and will retry: a sensor's retry must not re-run dbt, it waits."""
    url = f"memory://trig-{uuid.uuid4().hex}"
    producer_state["dbt.dbt_producer"] = "up_for_retry"
    async with dbtbus.connect(url) as bus:
        await bus.publish([_started(RUN), NodeResult(run_id=RUN, unique_id="model.p.a", status=NodeStatus.ERROR),
                           RunFinished(run_id=RUN, success=False, exit_code=1)])
        trigger = _trigger(url, "model.p.a", ti=_TI(try_number=2), run_group="dbt",
                           producer_task_id="dbt.dbt_producer", timeout=30)
        spec = trigger.spec(RUN)
        async with anyio.create_task_group() as tg:
            decisions: list[Any] = []

            async def wait() -> None:
                decisions.append(await triggers_mod.decide(bus, spec))

            tg.start_soon(wait)
            await anyio.sleep(0.5)
            assert decisions == []  # neither a re-run nor attempt 1's failure
            producer_state["dbt.dbt_producer"] = "running"
            await bus.publish([_started(RUN, attempt=2),
                               NodeResult(run_id=RUN, unique_id="model.p.a", status=NodeStatus.SUCCESS, attempt=2)])
    assert isinstance(decisions[0], Outcome) and decisions[0].ok and decisions[0].attempt == 2


@pytest.mark.anyio
async def test_a_retry_reruns_once_the_producer_is_done_for_good(producer_state: dict[str, str | None]) -> None:
    url = f"memory://trig-{uuid.uuid4().hex}"
    producer_state["dbt.dbt_producer"] = "failed"
    async with dbtbus.connect(url) as bus:
        await bus.publish([_started(RUN), NodeResult(run_id=RUN, unique_id="model.p.a", status=NodeStatus.ERROR),
                           RunFinished(run_id=RUN, success=False, exit_code=1)])
        trigger = _trigger(url, "model.p.a", ti=_TI(try_number=2), run_group="dbt",
                           producer_task_id="dbt.dbt_producer", timeout=30)
        decision = await triggers_mod.decide(bus, trigger.spec(RUN))
        assert isinstance(decision, Rerun) and decision.args == ["build", "--project-dir", "/p"]
        event = trigger.event(decision)
        assert type(event) is TriggerEvent and event.payload["status"] == "rerun"
        # a first try never re-runs: it reports the failure
        first = _trigger(url, "model.p.a", ti=_TI(try_number=1), run_group="dbt",
                         producer_task_id="dbt.dbt_producer", timeout=30)
        outcome = await triggers_mod.decide(bus, first.spec(RUN))
        assert isinstance(outcome, Outcome) and outcome.kind is OutcomeKind.FAILED


@pytest.mark.anyio
async def test_a_producer_that_fails_before_publishing_ends_the_wait(producer_state: dict[str, str | None]) -> None:
    url = f"memory://trig-{uuid.uuid4().hex}"
    async with dbtbus.connect(url) as bus:
        trigger = _trigger(url, "model.p.a", ti=_TI(), run_group="dbt", producer_task_id="dbt.dbt_producer",
                           timeout=60)
        spec = triggers_mod.WaitSpec(**{**trigger.spec(RUN).__dict__, "grace": 0.05})
        async with anyio.create_task_group() as tg:
            decisions: list[Any] = []

            async def wait() -> None:
                decisions.append(await triggers_mod.decide(bus, spec))

            tg.start_soon(wait)
            await anyio.sleep(0.3)
            assert decisions == []
            producer_state["dbt.dbt_producer"] = "failed"  # e.g. killed while queued: nothing on the bus
    outcome = decisions[0]
    assert isinstance(outcome, Outcome) and outcome.kind is OutcomeKind.PRODUCER_LOST
    assert "dbt.dbt_producer" in outcome.message and "failed" in outcome.message


@pytest.mark.anyio
async def test_triggers_in_one_loop_share_one_bus() -> None:
    """A triggerer runs many triggers in one event loop: they share one bus (one reader per run)."""
    url = f"memory://trig-{uuid.uuid4().hex}"
    async with triggers_mod.shared_bus(url) as first, triggers_mod.shared_bus(url) as second:
        assert first is second
        await first.publish([_started("r"), NodeResult(run_id="r", unique_id="model.p.a", status=NodeStatus.SUCCESS)])
        await first.renew_lease("r", "t", 30)
        results: list[TriggerEvent] = []
        async with anyio.create_task_group() as tg:

            async def one(uid: str) -> None:
                results.append(await _first_event(DbtNodeTrigger(url, "r", uid, timeout=5)))

            tg.start_soon(one, "model.p.a")
            tg.start_soon(one, "model.p.b")
            await anyio.sleep(0.2)
            await first.publish(NodeResult(run_id="r", unique_id="model.p.b", status=NodeStatus.SUCCESS))
        assert all(isinstance(r, TaskSuccessEvent) for r in results) and len(results) == 2
        assert len([k for k in triggers_mod._SHARED if k[1] == url]) == 1


@pytest.mark.anyio
async def test_sensors_of_one_producer_share_one_watch(producer_state: dict[str, str | None]) -> None:
    """A triggerer's waiting sensors cost a cancel scope each: one watch of the producer task ends them all."""
    url = f"memory://trig-{uuid.uuid4().hex}"
    nodes = ("model.p.a", "model.p.b", "model.p.c")
    async with dbtbus.connect(url) as bus:
        specs = [triggers_mod.WaitSpec(**{**_trigger(url, uid, ti=_TI(), run_group="dbt", timeout=60,
                                                     producer_task_id="dbt.dbt_producer").spec(RUN).__dict__,
                                          "grace": 0.05}) for uid in nodes]
        decisions: dict[str, Any] = {}

        async def wait(spec: triggers_mod.WaitSpec) -> None:
            decisions[spec.unique_id] = await triggers_mod.decide(bus, spec)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for spec in specs:
                    tg.start_soon(wait, spec)
                await anyio.sleep(0.2)
                watches = [w for (_, ref, task, _), (w, _) in triggers_mod._WATCHES.items()
                           if ref.run_id == "manual__1" and task == "dbt.dbt_producer"]
                assert len(watches) == 1 and len(watches[0].waits) == 3
                # one sensor finishes on its own; the others keep waiting on the same watch
                await bus.publish([_started(RUN), NodeResult(run_id=RUN, unique_id="model.p.a",
                                                             status=NodeStatus.SUCCESS)])
                await anyio.sleep(0.2)
                assert decisions["model.p.a"].ok and len(watches[0].waits) == 2
                producer_state["dbt.dbt_producer"] = "failed"  # killed: nothing more comes
    for uid in ("model.p.b", "model.p.c"):
        assert decisions[uid].kind is OutcomeKind.PRODUCER_LOST and "failed" in decisions[uid].message
    assert not any(ref.run_id == "manual__1" for (_, ref, _, _) in triggers_mod._WATCHES)  # nothing left behind


@pytest.mark.anyio
async def test_a_failing_task_sdk_call_fails_every_wait_on_the_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow not answering says nothing about the producer: the sensors fail as trigger failures, with why."""

    def broken(self: TaskStates) -> dict[str, str | None]:
        raise RuntimeError("the API server is unreachable")

    monkeypatch.setattr(TaskStates, "_ask", broken)
    monkeypatch.setattr(TaskStates, "_cache", {})
    url = f"memory://trig-{uuid.uuid4().hex}"
    async with dbtbus.connect(url) as bus:
        specs = [_trigger(url, uid, ti=_TI(), run_group="dbt", producer_task_id="dbt.dbt_producer",
                          timeout=60).spec(RUN) for uid in ("model.p.a", "model.p.b")]
        errors: list[BaseException] = []

        async def wait(spec: triggers_mod.WaitSpec) -> None:
            try:
                await triggers_mod.decide(bus, spec)
            except RuntimeError as exc:
                errors.append(exc)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for spec in specs:
                    tg.start_soon(wait, spec)
    assert [str(e) for e in errors] == ["the API server is unreachable"] * 2


@pytest.mark.anyio
async def test_a_sensor_joining_after_the_producer_ended_gets_its_own_grace(
    producer_state: dict[str, str | None],
) -> None:
    """Records still in flight get the grace period from when each sensor started waiting, not from the end."""
    url = f"memory://trig-{uuid.uuid4().hex}"
    producer_state["dbt.dbt_producer"] = "success"
    async with dbtbus.connect(url) as bus:
        def spec(uid: str) -> triggers_mod.WaitSpec:
            base = _trigger(url, uid, ti=_TI(), run_group="dbt", producer_task_id="dbt.dbt_producer", timeout=60)
            return triggers_mod.WaitSpec(**{**base.spec(RUN).__dict__, "grace": 0.6})

        decisions: dict[str, Any] = {}

        async def wait(uid: str) -> None:
            decisions[uid] = await triggers_mod.decide(bus, spec(uid))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait, "model.p.a")
                await anyio.sleep(0.4)
                tg.start_soon(wait, "model.p.b")  # joins 0.4 s into the first one's grace
                await anyio.sleep(0.35)
                assert "model.p.a" in decisions and "model.p.b" not in decisions
                # b's record arrives within b's own grace: b gets the real outcome, not "lost"
                await bus.publish([_started(RUN), NodeResult(run_id=RUN, unique_id="model.p.b",
                                                             status=NodeStatus.SUCCESS)])
    assert decisions["model.p.a"].kind is OutcomeKind.PRODUCER_LOST
    assert decisions["model.p.b"].ok


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
