"""A node's outcome as data: what :class:`dbtbus.RunState` decides and every consumer reads.

An :class:`Outcome` is a small frozen value with a stable :class:`OutcomeKind`. Exceptions are made from it
only at the API edge (``Bus.wait`` raises ``outcome.error()``), so the CLI's exit codes, the progress
display and the Airflow trigger's task states are tables keyed by ``kind`` rather than ``isinstance``
ladders, and an outcome crosses a process boundary (a trigger event, an NDJSON line) as
:meth:`Outcome.to_dict` / :meth:`Outcome.from_dict`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._exceptions import WaitError
    from .events import NodeResult, RunCrashed, RunFinished

__all__ = ["Outcome", "OutcomeKind", "RunStatus"]


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


@dataclass(frozen=True, slots=True)
class Outcome:
    """One node's outcome in one run.

    ``record`` is, for ``SUCCESS``, the node's result; for ``FAILED``, the failing result (the node's own,
    or its failing test's); for ``UPSTREAM_FAILED`` and ``NOT_RUN``, the node's own ``skipped`` /
    ``not_run`` record when one was published. ``cause`` / ``cause_record`` name the root ancestor of an
    ``UPSTREAM_FAILED``. ``ending`` is the run's ending for ``NOT_RUN``. ``attempt`` is the attempt whose
    records decided it; ``timeout`` the seconds a ``TIMEOUT`` waited.
    """

    kind: OutcomeKind
    run_id: str
    unique_id: str
    record: NodeResult | None = None
    cause: str | None = None
    cause_record: NodeResult | None = None
    ending: RunFinished | RunCrashed | None = None
    attempt: int = 1
    detail: str = ""
    timeout: float | None = None

    @property
    def ok(self) -> bool:
        return self.kind is OutcomeKind.SUCCESS

    @property
    def terminal(self) -> bool:
        """True when the run decided it (not pending, not the caller's timeout)."""
        return self.kind not in (OutcomeKind.PENDING, OutcomeKind.TIMEOUT)

    @property
    def message(self) -> str:
        """One line a person can read."""
        if self.kind is OutcomeKind.SUCCESS:
            assert self.record is not None
            status = self.record.status.value
            took = f" in {self.record.execution_time:.2f} s" if self.record.execution_time is not None else ""
            return f"{self.unique_id} {status}{took}"
        if self.kind is OutcomeKind.PENDING:
            return f"{self.unique_id} has no outcome yet in run {self.run_id!r}"
        return str(self.error())

    def error(self) -> WaitError:
        """The exception for this outcome (its class has the same ``kind``). Not for ``SUCCESS``/``PENDING``."""
        from ._exceptions import WAIT_ERRORS

        cls = WAIT_ERRORS.get(self.kind)
        if cls is None:
            raise ValueError(f"a {self.kind.value} outcome is not an error")
        return cls.from_outcome(self)

    def unwrap(self) -> NodeResult:
        """The node's result for ``SUCCESS``; otherwise raise :meth:`error`."""
        if self.kind is OutcomeKind.SUCCESS and self.record is not None:
            return self.record
        raise self.error()

    # ------------------------------------------------------------------------------------------ wire form

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able mapping (records in their wire form); :meth:`from_dict` reads it back."""
        from .events import to_dict

        out: dict[str, Any] = {"kind": self.kind.value, "run_id": self.run_id, "unique_id": self.unique_id}
        if self.record is not None:
            out["record"] = to_dict(self.record)
        if self.cause is not None:
            out["cause"] = self.cause
        if self.cause_record is not None:
            out["cause_record"] = to_dict(self.cause_record)
        if self.ending is not None:
            out["ending"] = to_dict(self.ending)
        out["attempt"] = self.attempt
        if self.detail:
            out["detail"] = self.detail
        if self.timeout is not None:
            out["timeout"] = self.timeout
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outcome:
        """Read :meth:`to_dict`'s form back; raises :class:`dbtbus.DecodeError` for anything else."""
        from ._exceptions import DecodeError
        from .events import NodeResult, RunCrashed, RunFinished, from_dict

        if not isinstance(data, Mapping):
            raise DecodeError(f"an outcome is a mapping, not {type(data).__name__}")
        try:
            kind = OutcomeKind(data.get("kind"))
        except ValueError:
            raise DecodeError(f"unknown outcome kind {data.get('kind')!r}") from None
        run_id, unique_id = data.get("run_id"), data.get("unique_id")
        if not isinstance(run_id, str) or not isinstance(unique_id, str):
            raise DecodeError("an outcome needs string 'run_id' and 'unique_id'")

        def record(key: str) -> Any:
            value = data.get(key)
            return None if value is None else from_dict(value)

        own, cause_record, ending = record("record"), record("cause_record"), record("ending")
        if own is not None and not isinstance(own, NodeResult):
            raise DecodeError("an outcome's 'record' must be a node_result")
        if cause_record is not None and not isinstance(cause_record, NodeResult):
            raise DecodeError("an outcome's 'cause_record' must be a node_result")
        if ending is not None and not isinstance(ending, (RunFinished, RunCrashed)):
            raise DecodeError("an outcome's 'ending' must be a run_finished or run_crashed record")
        if kind is OutcomeKind.SUCCESS and own is None:
            raise DecodeError("a success outcome carries its record")
        cause = data.get("cause")
        attempt = data.get("attempt", 1)
        timeout = data.get("timeout")
        return cls(
            kind,
            run_id,
            unique_id,
            record=own,
            cause=cause if isinstance(cause, str) else None,
            cause_record=cause_record,
            ending=ending,
            attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else 1,
            detail=str(data.get("detail") or ""),
            timeout=float(timeout) if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) else None,
        )
