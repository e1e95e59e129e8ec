"""The two enums every layer speaks: what became of a node (:class:`OutcomeKind`), where a run stands
(:class:`RunStatus`). Ground floor: nothing imported, so exceptions, outcomes and records can all use them."""

from __future__ import annotations

import enum

__all__ = ["OutcomeKind", "RunStatus"]


class OutcomeKind(str, enum.Enum):
    """What became of a node a consumer waits for. The values are stable: they travel in payloads."""

    #: The node's result is success-like (success, pass, warn, no-op, reused).
    SUCCESS = "success"
    #: The node — or, with ``include_tests``, one of its tests — failed.
    FAILED = "failed"
    #: An ancestor failed in a way dbt propagates: dbt skips (or skipped) the node.
    UPSTREAM_FAILED = "upstream_failed"
    #: The run's selected graph lacks the node: it will never have a result in this run.
    NOT_IN_RUN = "not_in_run"
    #: The run ended (finished or crashed) without running the node.
    NOT_RUN = "not_run"
    #: The producer's liveness lease expired before the node finished.
    PRODUCER_LOST = "producer_lost"
    #: The run's log has lost records (its head is gone — a Redis restart without persistence, a flush, a
    #: trimmed stream — or its ending counts more results than it holds) and this node has none left: it may
    #: have succeeded, failed or never run; the log cannot say which.
    DATA_LOST = "data_lost"
    #: The run was seen (its records were read) and has since vanished from the backend — deleted
    #: (``dbtbus gc``), expired by its retention or flushed — before this node was decided.
    RUN_NOT_FOUND = "run_not_found"
    #: The caller's timeout passed first. Made by the bus; :class:`RunState` never answers it.
    TIMEOUT = "timeout"
    #: Not known yet.
    PENDING = "pending"


class RunStatus(str, enum.Enum):
    """Where a run stands, as its log says."""

    #: No ``RunStarted`` yet: the producer has not announced the run (consumers may well be early).
    PENDING = "pending"
    RUNNING = "running"
    #: dbt returned (with or without failing nodes): the run's ``RunFinished``.
    FINISHED = "finished"
    #: The producer recorded that dbt or the producer itself died: the run's ``RunCrashed``.
    CRASHED = "crashed"
    #: The producer's lease expired mid-run.
    LOST = "lost"
    #: The run was seen in progress and has since vanished from the backend (deleted, expired, flushed).
    GONE = "gone"
