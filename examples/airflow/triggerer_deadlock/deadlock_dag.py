"""One DAG of N ``start_from_trigger`` tasks whose serialized form is large (the triggerer deadlock reproducer).

Knobs (environment of the dag-processor, set by ``reproduce.py``):

* ``DEADLOCK_TASKS``: the number of tasks (default 200);
* ``DEADLOCK_PAD_KB``: KB of padding in the DAG's ``doc_md``, so that each serialized DAG is that much larger
  (default 200) — Airflow 3.3 ships the whole serialized DAG in the workload of every such trigger;
* ``DEADLOCK_LOG_LINES``, ``DEADLOCK_LOG_KB``, ``DEADLOCK_LOG_INTERVAL``, ``DEADLOCK_WAIT``,
  ``DEADLOCK_ASYNC_LOG``: the trigger's arguments (see ``deadlock_trigger.ChattyTrigger``).

Uses Airflow and the standard library only.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, BaseOperator
from airflow.triggers.base import StartTriggerArgs

DAG_ID = "triggerer_deadlock"
TASKS = int(os.environ.get("DEADLOCK_TASKS", "200"))
PAD_KB = int(os.environ.get("DEADLOCK_PAD_KB", "200"))
TRIGGER_KWARGS: dict[str, Any] = {
    "lines": int(os.environ.get("DEADLOCK_LOG_LINES", "5")),
    "line_kb": int(os.environ.get("DEADLOCK_LOG_KB", "4")),
    "interval": float(os.environ.get("DEADLOCK_LOG_INTERVAL", "2")),
    "wait": float(os.environ.get("DEADLOCK_WAIT", "120")),
    "async_log": os.environ.get("DEADLOCK_ASYNC_LOG", "0") == "1",
}


class ChattyOperator(BaseOperator):
    """Starts in the triggerer (``start_from_trigger``) and ends there (the trigger yields a task event)."""

    start_from_trigger = True

    def __init__(self, *, trigger_kwargs: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls="deadlock_trigger.ChattyTrigger", trigger_kwargs=dict(trigger_kwargs),
            next_method="execute_complete", next_kwargs=None, timeout=None)

    def execute(self, context: Any) -> None:
        raise RuntimeError("this task starts in the triggerer")

    def execute_complete(self, context: Any, event: Any = None) -> None:
        return None


with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_tasks=TASKS + 10,
    max_active_runs=16,
    doc_md="padding " + "p" * (PAD_KB * 1024),
):
    for i in range(TASKS):
        ChattyOperator(task_id=f"chatty_{i:04d}", trigger_kwargs=TRIGGER_KWARGS)
