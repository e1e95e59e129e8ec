"""Airflow names that moved between 3.x releases."""

from __future__ import annotations

try:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
except ImportError:  # pragma: no cover - Airflow 3.0
    from airflow.exceptions import (  # type: ignore[attr-defined,no-redef,unused-ignore]
        AirflowException,
        AirflowFailException,
        AirflowSkipException,
    )

__all__ = ["AirflowException", "AirflowFailException", "AirflowSkipException", "in_process_test_comms"]


def in_process_test_comms() -> bool:
    """True inside ``dag.test()``: it runs each trigger in its own ``asyncio.run`` (nothing to share) and
    resumes the task with the event's payload whatever the event's class (so no task-end events there)."""
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:  # pragma: no cover
        return False
    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    return type(comms).__name__ == "InProcessSupervisorComms"

