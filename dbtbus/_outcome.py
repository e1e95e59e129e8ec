"""A node's outcome as data: what :class:`dbtbus.RunState` decides and every consumer reads.

An :class:`Outcome` is a small frozen value with a stable :class:`OutcomeKind`, and the one place an outcome is
put into words (:attr:`Outcome.message`, :attr:`Outcome.label`, :meth:`Outcome.explain`). Exceptions are made
from it only at the API edge (``Bus.wait`` raises ``outcome.error()``), so the CLI's exit codes, the progress
display and the Airflow trigger's task states are tables keyed by ``kind`` rather than ``isinstance``
ladders (the :class:`WaitError` family, made from outcomes, lives here with them), and an outcome crosses a
process boundary (a trigger event, an NDJSON line) as
:meth:`Outcome.to_dict` / :meth:`Outcome.from_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from ._exceptions import DbtBusError, DecodeError
from ._kinds import OutcomeKind
from .events import NodeResult, RunCrashed, RunFinished, from_dict, to_dict

__all__ = [
    "NodeFailed",
    "NodeNotInRun",
    "NodeNotRun",
    "Outcome",
    "ProducerLost",
    "RunDataLost",
    "RunNotFound",
    "UpstreamFailed",
    "WaitError",
    "WaitTimeout",
]

#: A few words for each kind (progress lines, the demo's table, ``Outcome.label``).
LABELS: Final[Mapping[OutcomeKind, str]] = {
    OutcomeKind.SUCCESS: "ok",
    OutcomeKind.FAILED: "failed",
    OutcomeKind.UPSTREAM_FAILED: "upstream failed",
    OutcomeKind.PRODUCER_LOST: "producer lost",
    OutcomeKind.DATA_LOST: "data lost",
    OutcomeKind.RUN_NOT_FOUND: "run not found",
    OutcomeKind.NOT_RUN: "not run",
    OutcomeKind.NOT_IN_RUN: "not in run",
    OutcomeKind.TIMEOUT: "timeout",
    OutcomeKind.PENDING: "pending",
}


#: The kinds whose outcome always has its ``record`` (the result, the failing result).
_CARRY_A_RECORD: Final = frozenset({OutcomeKind.SUCCESS, OutcomeKind.FAILED})


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

    def __post_init__(self) -> None:
        if self.record is None and self.kind in _CARRY_A_RECORD:
            raise ValueError(f"a {self.kind.value} outcome carries its record")

    @property
    def ok(self) -> bool:
        return self.kind is OutcomeKind.SUCCESS

    @property
    def terminal(self) -> bool:
        """True when the run decided it (not pending, not the caller's timeout)."""
        return self.kind not in (OutcomeKind.PENDING, OutcomeKind.TIMEOUT)

    @property
    def message(self) -> str:
        """One line a person can read (for an error kind: the exception's text)."""
        kind, record = self.kind, self.record
        if kind is OutcomeKind.SUCCESS and record is not None:  # (never None: see __post_init__)
            status = record.status.value
            took = f" in {record.execution_time:.2f} s" if record.execution_time is not None else ""
            return f"{self.unique_id} {status}{took}"
        if kind is OutcomeKind.PENDING:
            return f"{self.unique_id} has no outcome yet in run {self.run_id!r}"
        if kind is OutcomeKind.FAILED and record is not None:
            what = record.unique_id if self.unique_id == record.unique_id else \
                f"{record.unique_id} (a test of {self.unique_id})"
            detail = f": {record.message}" if record.message else ""
            return f"{what} finished with status {record.status.value!r}{detail}"
        if kind is OutcomeKind.UPSTREAM_FAILED:
            cause = self.cause_record
            if self.cause is None:
                extra = f" ({self.detail})" if self.detail else ""
                return f"{self.unique_id} will not run: an upstream node failed{extra}"
            status = f" with status {cause.status.value!r}" if cause is not None else ""
            message = f": {cause.message}" if cause is not None and cause.message else ""
            return f"{self.unique_id} will not run: upstream {self.cause} failed{status}{message}"
        if kind is OutcomeKind.PRODUCER_LOST:
            extra = f" ({self.detail})" if self.detail else ""
            return f"the producer of run {self.run_id!r} stopped heartbeating before {self.unique_id} finished{extra}"
        if kind is OutcomeKind.DATA_LOST:
            extra = f" ({self.detail})" if self.detail else ""
            return (f"run {self.run_id!r} lost records of its log{extra}: {self.unique_id} has no record left, "
                    "so whether it ran, succeeded or failed is unknown")
        if kind is OutcomeKind.RUN_NOT_FOUND:
            extra = f" ({self.detail})" if self.detail else ""
            return (f"run {self.run_id!r} is no longer on the bus{extra}: it was deleted, expired or flushed "
                    f"before {self.unique_id} was decided")
        if kind is OutcomeKind.NOT_RUN:
            return f"run {self.run_id!r} ended without running {self.unique_id}{self._why_not_run()}"
        if kind is OutcomeKind.NOT_IN_RUN:
            return f"{self.unique_id} is not in the graph selected by run {self.run_id!r}"
        timeout = self.timeout if self.timeout is not None else 0.0
        return f"no outcome for {self.unique_id} in run {self.run_id!r} within {timeout:g} s"

    def _why_not_run(self) -> str:
        record, ending = self.record, self.ending
        if record is not None and record.message:
            return f": {record.message}"
        if isinstance(ending, RunCrashed):
            return f": the run crashed: {ending.error}"
        if ending is not None and ending.error:
            return f": dbt returned with an error: {ending.error}"
        return f": {self.detail}" if self.detail else ""

    @property
    def label(self) -> str:
        """A few words: ``ok``, ``failed``, ``upstream failed (model.x.a)``."""
        label = LABELS[self.kind]
        return f"{label} ({self.cause})" if self.cause is not None else label

    def explain(self) -> str:
        """:attr:`message` and what explains it: the root cause's own message, the run's error (a task log's
        line, where the reader has nothing else to go on)."""
        text = self.message
        cause = self.cause_record
        if self.kind is OutcomeKind.UPSTREAM_FAILED and cause is not None and cause.message:
            text += f" — root cause {cause.unique_id}: {cause.message}"
        error = getattr(self.ending, "error", None)
        if error and error not in text:
            text += f" — the run ended with: {error}"
        return text

    def error(self) -> WaitError:
        """The exception for this outcome (its class has the same ``kind``). Not for ``SUCCESS``/``PENDING``."""
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
        if kind in _CARRY_A_RECORD and own is None:
            raise DecodeError(f"a {kind.value} outcome carries its record")
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


# ---------------------------------------------------------------------------------------------- as exceptions


class WaitError(DbtBusError):
    """Base class of every outcome of ``wait`` that is not a usable node result.

    ``outcome`` is the :class:`dbtbus.Outcome` it was made from; ``run_id`` and ``unique_id`` name what was
    awaited.
    """

    kind: ClassVar[OutcomeKind]

    def __init__(self, outcome: Outcome, message: str | None = None) -> None:
        super().__init__(message if message is not None else outcome.message)
        self.outcome = outcome
        self.run_id = outcome.run_id
        self.unique_id = outcome.unique_id

    @classmethod
    def from_outcome(cls, outcome: Outcome) -> WaitError:
        return cls(outcome)

    def __reduce__(self) -> tuple[Any, ...]:  # pickles (across processes) rebuild from the outcome
        return (type(self).from_outcome, (self.outcome,))



class NodeFailed(WaitError):
    """The node (or, with ``include_tests=True``, one of its tests) finished with a failing status.

    ``record`` is the failing node's result: the awaited node itself, or the failing test.
    """

    kind = OutcomeKind.FAILED

    def __init__(self, outcome: Outcome) -> None:
        record = outcome.record
        if record is None:
            raise ValueError("NodeFailed is made from a failed outcome, which carries the failing record")
        super().__init__(outcome)
        self.record: NodeResult = record



class UpstreamFailed(WaitError):
    """An ancestor failed in a way dbt propagates, so dbt skips (or has skipped) this node.

    Raised as soon as the failing ancestor's result is published, not when dbt gets round to skipping the
    node. ``cause`` is the unique_id of the ancestor whose failure started the cascade (never an
    intermediate skipped node); ``cause_record`` is its result when the bus has seen it; ``record`` is this
    node's own ``skipped`` / ``not_run`` result when dbt has already published it.
    """

    kind = OutcomeKind.UPSTREAM_FAILED

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome)
        self.cause: str = outcome.cause or ""
        self.cause_record = outcome.cause_record
        self.record = outcome.record



class ProducerLost(WaitError):
    """The producer's liveness lease expired before the node finished: it died, hung or lost its backend."""

    kind = OutcomeKind.PRODUCER_LOST



class NodeNotRun(WaitError):
    """The run ended without running the node.

    ``record`` is the node's ``not_run`` / ``skipped`` result when one was published; ``ending`` is the run's
    finished or crashed record when the bus saw it.
    """

    kind = OutcomeKind.NOT_RUN

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome)
        self.record = outcome.record
        self.ending = outcome.ending



class RunDataLost(WaitError):
    """The run's log lost records (a Redis restart without persistence, a flush, a trimmed stream) and this
    node has none left: it may have succeeded, failed or never run. Never answered as ``NodeNotRun``."""

    kind = OutcomeKind.DATA_LOST



class RunNotFound(WaitError):
    """The run was seen (its records were read) and has since vanished from the backend — deleted with
    ``dbtbus gc``, expired by its retention, flushed — before the node was decided. Never a timeout: the
    bus knows the run existed. (A waiter that never saw the run cannot tell a deleted run from one not
    started yet: it waits.)"""

    kind = OutcomeKind.RUN_NOT_FOUND



class NodeNotInRun(WaitError):
    """The run has started and the node is not in its selected graph: it will never get a result."""

    kind = OutcomeKind.NOT_IN_RUN



class WaitTimeout(WaitError, TimeoutError):
    """The timeout passed to ``wait`` elapsed before the node's outcome was known."""

    kind = OutcomeKind.TIMEOUT

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome)
        self.timeout: float = outcome.timeout if outcome.timeout is not None else 0.0



#: The exception class of each outcome kind that is an error.
WAIT_ERRORS: dict[OutcomeKind, type[WaitError]] = {
    cls.kind: cls
    for cls in (NodeFailed, UpstreamFailed, NodeNotInRun, NodeNotRun, ProducerLost, RunDataLost, RunNotFound,
                WaitTimeout)
}
