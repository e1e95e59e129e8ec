"""The runs of the node DAGs (the split layout): started by the producer task, watched by the group's tasks.

The producer starts each node DAG's run with its own DAG run's id, before dbt starts, through the Task
SDK's supervisor channel — the message ``TriggerDagRunOperator`` makes its task runner send, sent once per
node DAG from one task instead of one operator (and one worker run) per DAG. A run that exists already (the
producer's retry) is left as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = ["DAG_RUN_DONE", "dag_run_state", "start_dag_runs", "wait_until_waiting"]

#: DAG run states after which a run changes no more.
DAG_RUN_DONE: Final = frozenset({"success", "failed"})


def start_dag_runs(dag_ids: Sequence[str], run_id: str, conf: Mapping[str, Any], log: Any) -> dict[str, str]:
    """Start a run ``run_id`` of each DAG in ``dag_ids``; return each DAG's ``started`` / ``existed`` / error.

    Never raises: a node DAG whose run cannot be started is logged, and its group task fails with the reason
    once the run never shows up; dbt runs for every other node all the same.
    """
    from airflow.sdk.execution_time.comms import ErrorResponse, TriggerDagRun
    from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS, RuntimeTaskInstance

    from ..backends.xcom import TaskSdkXComApi

    outcome: dict[str, str] = {}
    for dag_id in dag_ids:
        try:
            with TaskSdkXComApi.comms_lock():
                dag = RuntimeTaskInstance.get_dag(dag_id)
                if getattr(dag, "is_paused", False):
                    log.error("dbtbus: the node DAG %s is paused: its tasks wait until it is unpaused", dag_id)
                reply = SUPERVISOR_COMMS.send(TriggerDagRun(dag_id=dag_id, run_id=run_id, conf=dict(conf)))
        except Exception as exc:  # an unknown DAG (not parsed yet), comms that refuse: said, never fatal
            outcome[dag_id] = f"not started: {type(exc).__name__}: {exc}"
            log.error("dbtbus: could not start the run %s of the node DAG %s: %s", run_id, dag_id, exc)
            continue
        if isinstance(reply, ErrorResponse):
            error = getattr(getattr(reply, "error", None), "value", getattr(reply, "error", ""))
            if str(error) == "DAGRUN_ALREADY_EXISTS":
                outcome[dag_id] = "existed"
                continue
            outcome[dag_id] = f"not started: {error} {getattr(reply, 'detail', '') or ''}".strip()
            log.error("dbtbus: could not start the run %s of the node DAG %s: %s", run_id, dag_id, outcome[dag_id])
            continue
        outcome[dag_id] = "started"
    return outcome


def wait_until_waiting(dag_ids: Sequence[str], run_id: str, timeout: float, log: Any) -> float:
    """Wait until every task of the node DAGs' runs ``run_id`` has left ``None`` (deferred, in the
    triggerer's hands, or already done), at most ``timeout`` seconds; return how long it took.

    A node DAG's run starts when the producer does, where the rendering DAG's own tasks are deferred from its
    first moment: without this wait dbt's first nodes finish before their tasks wait, and those tasks end
    seconds after their nodes instead of at once. A run that never gets there (a paused node DAG, a
    scheduler at its limits) delays dbt by ``timeout`` at most, said in the log.
    """
    import time

    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    from ..backends.xcom import TaskSdkXComApi

    began = time.monotonic()
    pending = list(dag_ids)
    while pending and time.monotonic() - began < timeout:
        still = []
        for dag_id in pending:
            try:
                with TaskSdkXComApi.comms_lock():
                    states = RuntimeTaskInstance.get_task_states(dag_id=dag_id, run_ids=[run_id]).get(run_id) or {}
            except Exception:
                states = {}
            if not states or any(state is None for state in states.values()):
                still.append(dag_id)
        pending = still
        if pending:
            time.sleep(0.2)
    waited = time.monotonic() - began
    if pending:
        log.warning("dbtbus: after %.0f s the tasks of %s are not waiting yet; dbt starts all the same (their "
                    "tasks end once they start waiting)", waited, ", ".join(pending))
    return waited


def dag_run_state(dag_id: str, run_id: str) -> str | None:
    """The state of DAG run ``run_id`` of ``dag_id`` through the Task SDK, or ``None`` when it does not exist."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    from ..backends.xcom import TaskSdkXComApi

    with TaskSdkXComApi.comms_lock():
        try:
            state = RuntimeTaskInstance.get_dagrun_state(dag_id=dag_id, run_id=run_id)
        except Exception:  # a run that does not exist is an error reply: tell it from a failing call
            if RuntimeTaskInstance.get_dr_count(dag_id=dag_id, run_ids=[run_id]) == 0:
                return None
            raise
    return None if state is None else str(getattr(state, "value", state))
