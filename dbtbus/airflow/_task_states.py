"""Airflow's word on task instances, asked through the Task SDK (``get_task_states``) and shared per process."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import anyio
import anyio.to_thread

__all__ = ["PRODUCER_DONE", "DagRunRef", "ProducerWatch", "TaskStates"]

#: Producer task-instance states after which it will never publish again in this DAG run.
PRODUCER_DONE = frozenset({"success", "failed", "upstream_failed", "skipped", "removed"})


@dataclass(frozen=True)
class DagRunRef:
    """The sensor's DAG run."""

    dag_id: str
    run_id: str


class TaskStates:
    """Airflow's word on the task instances of a DAG run, through the Task SDK (``get_task_states``): asked at
    most once per ``interval`` per DAG run and process — every trigger of the run shares the answer."""

    _cache: dict[DagRunRef, tuple[float, dict[str, str | None]]] = {}
    _inflight: dict[DagRunRef, asyncio.Future[dict[str, str | None]]] = {}

    def __init__(self, ref: DagRunRef, interval: float) -> None:
        self.ref = ref
        self.interval = interval

    def _ask(self) -> dict[str, str | None]:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        from ..backends.xcom import TaskSdkXComApi

        with TaskSdkXComApi.comms_lock():
            states = RuntimeTaskInstance.get_task_states(dag_id=self.ref.dag_id, run_ids=[self.ref.run_id])
        found = states.get(self.ref.run_id) or {}
        return {str(k): (None if v is None else str(getattr(v, "value", v))) for k, v in found.items()}

    async def states(self) -> dict[str, str | None]:
        cached = self._cache.get(self.ref)
        if cached is not None and time.monotonic() - cached[0] < self.interval:
            return cached[1]
        pending = self._inflight.get(self.ref)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[dict[str, str | None]] = asyncio.get_running_loop().create_future()
        self._inflight[self.ref] = future
        try:
            value = await anyio.to_thread.run_sync(self._ask)
            self._cache[self.ref] = (time.monotonic(), value)
            future.set_result(value)
            return value
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            self._inflight.pop(self.ref, None)

    async def state(self, task_id: str) -> str | None:
        return (await self.states()).get(task_id)


@dataclass(frozen=True)
class ProducerWatch:
    tasks: TaskStates
    task_id: str

    async def state(self) -> str | None:
        return await self.tasks.state(self.task_id)

    async def done(self) -> bool:
        return await self.state() in PRODUCER_DONE
