"""The floor benchmark's task (``bench/airflow_floor.py``): no dbtbus, only what Airflow itself does.

``FloorOperator`` starts in the triggerer (``start_from_trigger``, as dbtbus's node sensors do) with a
``FloorTrigger`` that waits for a shared moment — a file the benchmark writes — and then ends its task from the
triggerer with ``TaskSuccessEvent`` or ``TaskFailedEvent``, as dbtbus's trigger does once dbt decides a node.
Whatever the deployment spends between that moment and the tasks' ends is Airflow's floor for ending tasks.
A task given ``after`` (a fraction) ends that fraction of a spread past the moment instead, the spread being
the moment file's second number (``bench/airflow_floor_build.py``: the tasks end across a dbt build, as
dbtbus's do as dbt decides their nodes).
Imported by the dag-processor (the DAG file), the scheduler and the triggerer: it must stay light.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, StartTriggerArgs, TaskFailedEvent, TaskSuccessEvent, TriggerEvent

CLASSPATH = "bench._floor_trigger.FloorTrigger"


class _Moment:
    """One poller per moment file for every trigger of the runner: a thousand triggers each stat-ing the file
    would be our own cost, not Airflow's. The poller forgets itself once the file is removed (the run ended),
    so the next run waits for the next moment."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.seen = asyncio.Event()
        self.at = self.spread = 0.0
        self.waiting = 0
        self.task = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        # Blocking stat/open on purpose: a local file, microseconds, one poller per runner — a thread hop per
        # look (anyio/aiofiles) would cost the loop more than it saves.
        written = -1
        while not os.path.exists(self.path):  # noqa: ASYNC240
            # The benchmark sets the moment once every trigger runs here, not merely once every task is
            # `deferred` in the database (the triggerer picks triggers up later): it reads this count.
            if self.waiting != written:
                written = self.waiting
                with open(f"{self.path}.waiting", "w", encoding="ascii") as fh:  # noqa: ASYNC230
                    fh.write(str(written))
            await asyncio.sleep(0.05)
        with open(self.path, encoding="ascii") as fh:  # noqa: ASYNC230 - "EPOCH" or "EPOCH SPREAD"
            at, _, spread = fh.read().partition(" ")
        self.at, self.spread = float(at), float(spread or 0)
        self.seen.set()
        while os.path.exists(self.path):  # noqa: ASYNC110, ASYNC240 - the file is the signal, no Event to wait on
            await asyncio.sleep(0.5)
        if _MOMENTS.get(self.path) is self:
            del _MOMENTS[self.path]


_MOMENTS: dict[str, _Moment] = {}


class FloorTrigger(BaseTrigger):
    def __init__(self, path: str, outcome: str, after: float = 0.0) -> None:
        super().__init__()
        self.path, self.outcome, self.after = path, outcome, after

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return CLASSPATH, {"path": self.path, "outcome": self.outcome, "after": self.after}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        moment = _MOMENTS.get(self.path)
        if moment is None:
            moment = _MOMENTS[self.path] = _Moment(self.path)
        moment.waiting += 1
        await moment.seen.wait()
        if self.after:
            await asyncio.sleep(max(0.0, moment.at + self.after * moment.spread - time.time()))
        yield TaskFailedEvent() if self.outcome == "failed" else TaskSuccessEvent()


class FloorOperator(BaseOperator):
    """Starts in the triggerer and ends there; ``execute`` only runs if Airflow ever sends it to a worker."""

    def __init__(self, *, moment_path: str, outcome: str, after: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.moment_path, self.outcome, self.after = moment_path, outcome, after
        self.start_from_trigger = True
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls=CLASSPATH, trigger_kwargs={"path": moment_path, "outcome": outcome, "after": after},
            next_method="execute_complete", next_kwargs=None, timeout=timedelta(minutes=30))

    def execute(self, context: Any) -> None:
        self.defer(trigger=FloorTrigger(self.moment_path, self.outcome, self.after), method_name="execute_complete")

    def execute_complete(self, context: Any, event: Any = None) -> None:
        if self.outcome == "failed":
            raise RuntimeError("floor: this task fails by design")
