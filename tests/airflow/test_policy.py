"""The sensor's decision: wait for the producer's next attempt, re-run once it is done for good, share one watch."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from airflow.triggers.base import TriggerEvent

import dbtbus
from dbtbus import Outcome, OutcomeKind
from dbtbus.airflow import _policy
from dbtbus.airflow._policy import Rerun, WaitSpec, decide
from dbtbus.airflow._task_states import TaskStates
from dbtbus.events import NodeResult, NodeStatus, RunFinished

from ._triggers import RUN, FakeTI, make_trigger, started


@pytest.mark.anyio
async def test_a_retry_waits_for_the_producers_next_attempt(producer_state: dict[str, str | None]) -> None:
    """The producer failed attempt 1 and will retry: a sensor's retry must not re-run dbt, it waits."""
    url = f"memory://trig-{uuid.uuid4().hex}"
    producer_state["dbt.dbt_producer"] = "up_for_retry"
    async with dbtbus.connect(url) as bus:
        await bus.publish([started(RUN), NodeResult(run_id=RUN, unique_id="model.p.a", status=NodeStatus.ERROR),
                           RunFinished(run_id=RUN, success=False, exit_code=1)])
        trigger = make_trigger(url, "model.p.a", ti=FakeTI(try_number=2), run_group="dbt",
                           producer_task_id="dbt.dbt_producer", timeout=30)
        spec = trigger.spec(RUN)
        async with anyio.create_task_group() as tg:
            decisions: list[Any] = []

            async def wait() -> None:
                decisions.append(await decide(bus, spec))

            tg.start_soon(wait)
            await anyio.sleep(0.5)
            assert decisions == []  # neither a re-run nor attempt 1's failure
            producer_state["dbt.dbt_producer"] = "running"
            await bus.publish([started(RUN, attempt=2),
                               NodeResult(run_id=RUN, unique_id="model.p.a", status=NodeStatus.SUCCESS, attempt=2)])
    assert isinstance(decisions[0], Outcome) and decisions[0].ok and decisions[0].attempt == 2


@pytest.mark.anyio
async def test_a_retry_reruns_once_the_producer_is_done_for_good(producer_state: dict[str, str | None]) -> None:
    url = f"memory://trig-{uuid.uuid4().hex}"
    producer_state["dbt.dbt_producer"] = "failed"
    async with dbtbus.connect(url) as bus:
        await bus.publish([started(RUN), NodeResult(run_id=RUN, unique_id="model.p.a", status=NodeStatus.ERROR),
                           RunFinished(run_id=RUN, success=False, exit_code=1)])
        trigger = make_trigger(url, "model.p.a", ti=FakeTI(try_number=2), run_group="dbt",
                           producer_task_id="dbt.dbt_producer", timeout=30)
        decision = await decide(bus, trigger.spec(RUN))
        assert isinstance(decision, Rerun) and decision.args == ["build", "--project-dir", "/p"]
        event = trigger.event(decision)
        assert type(event) is TriggerEvent and event.payload["status"] == "rerun"
        # a first try never re-runs: it reports the failure
        first = make_trigger(url, "model.p.a", ti=FakeTI(try_number=1), run_group="dbt",
                         producer_task_id="dbt.dbt_producer", timeout=30)
        outcome = await decide(bus, first.spec(RUN))
        assert isinstance(outcome, Outcome) and outcome.kind is OutcomeKind.FAILED


@pytest.mark.anyio
async def test_a_producer_that_fails_before_publishing_ends_the_wait(producer_state: dict[str, str | None]) -> None:
    url = f"memory://trig-{uuid.uuid4().hex}"
    async with dbtbus.connect(url) as bus:
        trigger = make_trigger(url, "model.p.a", ti=FakeTI(), run_group="dbt", producer_task_id="dbt.dbt_producer",
                           timeout=60)
        spec = WaitSpec(**{**trigger.spec(RUN).__dict__, "grace": 0.05})
        async with anyio.create_task_group() as tg:
            decisions: list[Any] = []

            async def wait() -> None:
                decisions.append(await decide(bus, spec))

            tg.start_soon(wait)
            await anyio.sleep(0.3)
            assert decisions == []
            producer_state["dbt.dbt_producer"] = "failed"  # e.g. killed while queued: nothing on the bus
    outcome = decisions[0]
    assert isinstance(outcome, Outcome) and outcome.kind is OutcomeKind.PRODUCER_LOST
    assert "dbt.dbt_producer" in outcome.message and "failed" in outcome.message


@pytest.mark.anyio
async def test_sensors_of_one_producer_share_one_watch(producer_state: dict[str, str | None]) -> None:
    """A triggerer's waiting sensors cost a cancel scope each: one watch of the producer task ends them all."""
    url = f"memory://trig-{uuid.uuid4().hex}"
    nodes = ("model.p.a", "model.p.b", "model.p.c")
    async with dbtbus.connect(url) as bus:
        specs = [WaitSpec(**{**make_trigger(url, uid, ti=FakeTI(), run_group="dbt", timeout=60,
                                                     producer_task_id="dbt.dbt_producer").spec(RUN).__dict__,
                                          "grace": 0.05}) for uid in nodes]
        decisions: dict[str, Any] = {}

        async def wait(spec: WaitSpec) -> None:
            decisions[spec.unique_id] = await decide(bus, spec)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for spec in specs:
                    tg.start_soon(wait, spec)
                await anyio.sleep(0.2)
                watches = [w for (_, ref, task, _), (w, _) in _policy._WATCHES.items()
                           if ref.run_id == "manual__1" and task == "dbt.dbt_producer"]
                assert len(watches) == 1 and len(watches[0].waits) == 3
                # one sensor finishes on its own; the others keep waiting on the same watch
                await bus.publish([started(RUN), NodeResult(run_id=RUN, unique_id="model.p.a",
                                                             status=NodeStatus.SUCCESS)])
                await anyio.sleep(0.2)
                assert decisions["model.p.a"].ok and len(watches[0].waits) == 2
                producer_state["dbt.dbt_producer"] = "failed"  # killed: nothing more comes
    for uid in ("model.p.b", "model.p.c"):
        assert decisions[uid].kind is OutcomeKind.PRODUCER_LOST and "failed" in decisions[uid].message
    assert not any(ref.run_id == "manual__1" for (_, ref, _, _) in _policy._WATCHES)  # nothing left behind


@pytest.mark.anyio
async def test_a_failing_task_sdk_call_fails_every_wait_on_the_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow not answering says nothing about the producer: the sensors fail as trigger failures, with why."""

    def broken(self: TaskStates) -> dict[str, str | None]:
        raise RuntimeError("the API server is unreachable")

    monkeypatch.setattr(TaskStates, "_ask", broken)
    monkeypatch.setattr(TaskStates, "_cache", {})
    url = f"memory://trig-{uuid.uuid4().hex}"
    async with dbtbus.connect(url) as bus:
        specs = [make_trigger(url, uid, ti=FakeTI(), run_group="dbt", producer_task_id="dbt.dbt_producer",
                          timeout=60).spec(RUN) for uid in ("model.p.a", "model.p.b")]
        errors: list[BaseException] = []

        async def wait(spec: WaitSpec) -> None:
            try:
                await decide(bus, spec)
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
        def spec(uid: str) -> WaitSpec:
            base = make_trigger(url, uid, ti=FakeTI(), run_group="dbt", producer_task_id="dbt.dbt_producer", timeout=60)
            return WaitSpec(**{**base.spec(RUN).__dict__, "grace": 0.6})

        decisions: dict[str, Any] = {}

        async def wait(uid: str) -> None:
            decisions[uid] = await decide(bus, spec(uid))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait, "model.p.a")
                await anyio.sleep(0.4)
                tg.start_soon(wait, "model.p.b")  # joins 0.4 s into the first one's grace
                await anyio.sleep(0.35)
                assert "model.p.a" in decisions and "model.p.b" not in decisions
                # b's record arrives within b's own grace: b gets the real outcome, not "lost"
                await bus.publish([started(RUN), NodeResult(run_id=RUN, unique_id="model.p.b",
                                                             status=NodeStatus.SUCCESS)])
    assert decisions["model.p.a"].kind is OutcomeKind.PRODUCER_LOST
    assert decisions["model.p.b"].ok


@pytest.mark.anyio
async def test_a_tombstone_is_not_final_while_the_producer_task_will_still_write(
    producer_state: dict[str, str | None],
) -> None:
    """A cleared DAG run re-uses its run id: the old run's tombstone (it was gc'd) must not fail the sensors
    that start before the new producer writes; once the producer task is done for good without writing, it is."""
    url = f"memory://trig-{uuid.uuid4().hex}"
    async with dbtbus.connect(url) as bus:
        await bus.publish([started(RUN), NodeResult(run_id=RUN, unique_id="model.p.a", status=NodeStatus.SUCCESS),
                           RunFinished(run_id=RUN, success=True, exit_code=0)])
        await bus.delete_run(RUN)  # leaves a tombstone
    producer_state["dbt.dbt_producer"] = "queued"
    async with dbtbus.connect(url) as bus:
        assert (await bus.outcome(RUN, "model.p.a", timeout=5)).kind is OutcomeKind.RUN_NOT_FOUND  # no producer
        trigger = make_trigger(url, "model.p.a", ti=FakeTI(), run_group="dbt", producer_task_id="dbt.dbt_producer",
                               timeout=30)
        spec = WaitSpec(**{**trigger.spec(RUN).__dict__, "grace": 0.05})
        decisions: list[Any] = []
        async with anyio.create_task_group() as tg:

            async def wait() -> None:
                decisions.append(await decide(bus, spec))

            tg.start_soon(wait)
            await anyio.sleep(0.5)
            assert decisions == []  # the tombstone alone does not decide
            producer_state["dbt.dbt_producer"] = "running"
            await bus.publish([started(RUN), NodeResult(run_id=RUN, unique_id="model.p.a", status=NodeStatus.SUCCESS)])
        assert isinstance(decisions[0], Outcome) and decisions[0].ok


@contextlib.asynccontextmanager
async def deciding(bus: dbtbus.Bus, spec: WaitSpec) -> AsyncIterator[list[Any]]:
    """``decide(bus, spec)`` running while the block steps Airflow and the bus on; the list holds its decision
    once the block (and the decision, within 15 s) is done."""
    decisions: list[Any] = []

    async def wait() -> None:
        decisions.append(await decide(bus, spec))

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            yield decisions


def _first_try(url: str) -> WaitSpec:
    """A first try's wait for model.p.a, with a short grace after its producer task's end."""
    trigger = make_trigger(url, "model.p.a", ti=FakeTI(), run_group="dbt", producer_task_id="dbt.dbt_producer",
                           timeout=60)
    return WaitSpec(**{**trigger.spec(RUN).__dict__, "grace": 0.05})


@pytest.mark.anyio
async def test_a_lost_producer_whose_task_is_retried_is_not_final(producer_state: dict[str, str | None]) -> None:
    """The producer's host vanished (its lease lapsed) while Airflow still has its task running: the first try
    waits for the retry Airflow starts once it notices, and answers from that attempt."""
    url = f"memory://trig-{uuid.uuid4().hex}"
    async with dbtbus.connect(url) as bus:
        await bus.publish(started(RUN, heartbeat=0.2))
        await bus.renew_lease(RUN, "host-a", 0.3)
        assert (await bus.outcome(RUN, "model.p.a", timeout=10)).kind is OutcomeKind.PRODUCER_LOST  # no Airflow
        spec = _first_try(url)
        async with deciding(bus, spec) as decisions:
            await anyio.sleep(1.0)
            assert decisions == []  # lost, but the task is still "running": not the last word
            producer_state["dbt.dbt_producer"] = "up_for_retry"  # Airflow's heartbeat timeout noticed
            await anyio.sleep(0.5)
            assert decisions == []
            producer_state["dbt.dbt_producer"] = "running"  # the retry, on another host
            await bus.publish([started(RUN, attempt=2), NodeResult(run_id=RUN, unique_id="model.p.a",
                                                                   status=NodeStatus.SUCCESS, attempt=2)])
    assert isinstance(decisions[0], Outcome) and decisions[0].ok and decisions[0].attempt == 2


@pytest.mark.anyio
async def test_a_lost_producer_is_final_once_its_task_failed_for_good(producer_state: dict[str, str | None]) -> None:
    url = f"memory://trig-{uuid.uuid4().hex}"
    async with dbtbus.connect(url) as bus:
        await bus.publish(started(RUN, heartbeat=0.2))
        await bus.renew_lease(RUN, "host-a", 0.3)
        spec = _first_try(url)
        async with deciding(bus, spec) as decisions:
            await anyio.sleep(1.0)
            assert decisions == []
            producer_state["dbt.dbt_producer"] = "failed"  # no try left
    assert isinstance(decisions[0], Outcome) and decisions[0].kind is OutcomeKind.PRODUCER_LOST


@pytest.mark.anyio
async def test_a_lost_producer_that_came_back_is_answered_from_its_attempt(
    producer_state: dict[str, str | None],
) -> None:
    """A producer frozen past its lease and then thawed (no retry started) finishes attempt 1: its task ends
    success and the sensor answers attempt 1's result, not a loss."""
    url = f"memory://trig-{uuid.uuid4().hex}"
    async with dbtbus.connect(url) as bus:
        await bus.publish(started(RUN, heartbeat=0.2))
        await bus.renew_lease(RUN, "host-a", 0.3)
        spec = _first_try(url)
        async with deciding(bus, spec) as decisions:
            await anyio.sleep(1.0)
            await bus.renew_lease(RUN, "host-a", 30)  # thawed
            await bus.publish([NodeResult(run_id=RUN, unique_id="model.p.a", status=NodeStatus.SUCCESS),
                               RunFinished(run_id=RUN, success=True, exit_code=0)])
            producer_state["dbt.dbt_producer"] = "success"
    assert isinstance(decisions[0], Outcome) and decisions[0].ok and decisions[0].attempt == 1
