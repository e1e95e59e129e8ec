"""The floor benchmark's REST-reporter task (``bench/airflow_floor.py``, ``rest-*`` variants): no trigger.

``FloorRestOperator`` is assigned to a pool with no slots, so the scheduler leaves its task instance
``scheduled``: never queued, never run, no trigger. The benchmark's reporter ends it through Airflow's public
REST API (``PATCH .../taskInstances/{task_id}`` with ``new_state``). Not an ``EmptyOperator``: the scheduler
marks those ``success`` by itself. Imported by the dag-processor and the scheduler: it must stay light.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

#: The pool every REST-ended task sits in (created with 0 slots by the benchmark).
POOL = "floor_zero"


class FloorRestOperator(BaseOperator):
    """Waits in a 0-slot pool until the reporter sets its state; ``execute`` only runs if a worker ever gets it."""

    def execute(self, context: Any) -> None:
        raise RuntimeError("floor: a REST-ended task must never run (its pool has no slots)")
