"""The Airflow state of each outcome, and what a task's log and XCom say about it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._kinds import OutcomeKind
from .._outcome import Outcome
from ..events import NodeResult, RunFinished

__all__ = ["AIRFLOW_STATE", "airflow_state", "alog_outcome", "log_outcome", "result_summary"]

#: The Airflow state each outcome ends its task in ("fail_now": failed without a retry, from a worker).
AIRFLOW_STATE: Mapping[OutcomeKind, str] = {
    OutcomeKind.SUCCESS: "success",
    OutcomeKind.FAILED: "failed",
    OutcomeKind.UPSTREAM_FAILED: "failed",
    OutcomeKind.NOT_RUN: "skipped",
    OutcomeKind.NOT_IN_RUN: "fail_now",
    OutcomeKind.PRODUCER_LOST: "failed",
    #: Never skipped: the node's record was lost, it may well have run (its message says so).
    OutcomeKind.DATA_LOST: "failed",
    #: The run was deleted, expired or flushed under the waiter: its answer is gone, never a skip.
    OutcomeKind.RUN_NOT_FOUND: "failed",
    OutcomeKind.TIMEOUT: "failed",
    OutcomeKind.PENDING: "failed",
}


def airflow_state(outcome: Outcome, not_run: str = "skip") -> str:
    """The Airflow state for ``outcome`` (the table above). A node not run is skipped only when dbt itself
    succeeded (``not_run="skip"``); a run that crashed or that dbt failed (bad arguments, fail-fast) fails it:
    a skip there would be a false green."""
    state = AIRFLOW_STATE[outcome.kind]
    if outcome.kind is OutcomeKind.NOT_RUN:
        ending = outcome.ending
        clean = isinstance(ending, RunFinished) and ending.success
        if not_run == "fail" or not clean:
            return "failed"
    return state


def result_summary(outcome: Outcome) -> dict[str, Any]:
    """The sensor's XCom for a success: a short summary of the node's result."""
    record: NodeResult | None = outcome.record
    return {
        "unique_id": outcome.unique_id,
        "run_id": outcome.run_id,
        "attempt": outcome.attempt,
        "node_status": record.status.value if record is not None else None,
        "execution_time": record.execution_time if record is not None else None,
        "relation_name": record.relation_name if record is not None else None,
        "message": record.message if record is not None else None,
    }


def log_outcome(log: Any, outcome: Outcome, state: str) -> None:
    """One line in the task's log: the outcome's message (for an upstream failure: the root cause's too)."""
    if state == "success":
        log.info("dbtbus: %s", outcome.message)
        return
    level = log.warning if state == "skipped" else log.error
    level("dbtbus: [%s] %s", outcome.kind.value, outcome.explain())


async def alog_outcome(log: Any, outcome: Outcome, state: str) -> None:
    """:func:`log_outcome` from a trigger: never a blocking write on the triggerer's event loop.

    The trigger runner sends its log lines to the triggerer's supervisor over a socket. A synchronous write
    blocks the event loop while that socket is full, and the supervisor stops reading it while it sends the
    runner a large message: both then wait for each other for good (the triggerer deadlock of
    docs/airflow.md). structlog's async methods write from a worker thread, so the loop keeps reading.
    """
    if state == "success":
        await log.ainfo("dbtbus: %s", outcome.message)
        return
    level = log.awarning if state == "skipped" else log.aerror
    await level("dbtbus: [%s] %s", outcome.kind.value, outcome.explain())
