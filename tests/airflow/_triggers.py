"""What the trigger, policy and shared-bus tests share: a run, a task instance, a trigger."""

from __future__ import annotations

import importlib
from typing import Any

from airflow.triggers.base import TriggerEvent

from dbtbus.airflow import DbtNodeTrigger, dbtbus_run_id
from dbtbus.events import GraphNode, NodeStatus, ProducerInfo, RunStarted
from dbtbus.testing.records import run_started

RUN = dbtbus_run_id("shop", "manual__1", -1, "dbt")


def started(run_id: str, attempt: int = 1, heartbeat: float = 30) -> RunStarted:
    graph = {
        "model.p.a": GraphNode("model"),
        "model.p.b": GraphNode("model", ("model.p.a",)),
        "model.p.c": GraphNode("model", ("model.p.b",)),
    }
    return run_started(graph, run_id=run_id, producer=ProducerInfo(id="t"), attempt=attempt,
                       skip_children_on={NodeStatus.ERROR}, heartbeat_interval=heartbeat,
                       args=("build", "--project-dir", "/p"))


class FakeTI:
    dag_id = "shop"
    run_id = "manual__1"
    map_index = -1
    task_id = "dbt.b"

    def __init__(self, try_number: int = 1) -> None:
        self.try_number = try_number


def make_trigger(url: str, uid: str, *, ti: FakeTI | None = None, **kwargs: Any) -> DbtNodeTrigger:
    kwargs.setdefault("producer_check_interval", 0.05)
    trigger = DbtNodeTrigger(url, None if ti is not None else kwargs.pop("run_id", "r"), uid, **kwargs)
    if ti is not None:
        trigger.task_instance = ti  # type: ignore[assignment]
    return trigger


def rebuild(trigger: DbtNodeTrigger) -> DbtNodeTrigger:
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    rebuilt: DbtNodeTrigger = getattr(importlib.import_module(module), name)(**kwargs)
    return rebuilt


async def first_event(trigger: DbtNodeTrigger) -> TriggerEvent:
    async for event in trigger.run():
        return event
    raise AssertionError("no event")
