"""The exceptions dbtbus raises.

Everything derives from :class:`DbtBusError`, so ``except dbtbus.DbtBusError`` catches all of them. The wait
outcomes (:class:`NodeFailed`, :class:`UpstreamFailed`, ...) derive from :class:`WaitError` and carry the
``run_id`` and ``unique_id`` that was awaited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .events import NodeResult, RunCrashed, RunFinished

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "ConfigurationError",
    "DbtBusError",
    "DecodeError",
    "InvalidCursor",
    "NodeFailed",
    "NodeNotInRun",
    "NodeNotRun",
    "ProducerLost",
    "UnknownBackend",
    "UpstreamFailed",
    "WaitError",
    "WaitTimeout",
]


class DbtBusError(Exception):
    """Base class of every error dbtbus raises on purpose."""


class ConfigurationError(DbtBusError, ValueError):
    """A URL, option or argument that dbtbus cannot work with."""


class UnknownBackend(ConfigurationError):
    """No backend is registered for a URL's scheme."""


class DecodeError(DbtBusError, ValueError):
    """Bytes that are not a dbtbus record this version understands.

    The message says what is wrong (not JSON, not an object, unknown record type, a newer schema version, a
    missing or mistyped field). The offending bytes are kept, truncated, on ``.data``.
    """

    def __init__(self, message: str, data: bytes | None = None) -> None:
        super().__init__(message)
        self.data = data[:200] if data is not None else None


class BackendError(DbtBusError):
    """A backend failed to store or deliver records."""


class BackendUnavailable(BackendError):
    """The backend's server cannot be reached (after the backend's own retries)."""


class InvalidCursor(BackendError, ValueError):
    """A cursor that the backend did not hand out."""


class WaitError(DbtBusError):
    """Base class of every outcome of ``wait`` that is not a usable node result."""

    def __init__(self, message: str, *, run_id: str, unique_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.unique_id = unique_id


class NodeFailed(WaitError):
    """The node (or, with ``include_tests=True``, one of its tests) finished with a failing status.

    ``record`` is the failing node's result: the awaited node itself, or the failing test.
    """

    def __init__(self, record: NodeResult, *, unique_id: str | None = None) -> None:
        awaited = unique_id or record.unique_id
        what = record.unique_id if awaited == record.unique_id else f"{record.unique_id} (a test of {awaited})"
        detail = f": {record.message}" if record.message else ""
        super().__init__(
            f"{what} finished with status {record.status.value!r}{detail}",
            run_id=record.run_id,
            unique_id=awaited,
        )
        self.record = record


class UpstreamFailed(WaitError):
    """An ancestor failed in a way dbt propagates, so dbt skips (or has skipped) this node.

    Raised as soon as the failing ancestor's result is published, not when dbt gets round to skipping the
    node. ``cause`` is the unique_id of the ancestor whose failure started the cascade (never an
    intermediate skipped node); ``cause_record`` is its result when the bus has seen it; ``record`` is this
    node's own ``skipped`` result when dbt has already published it.
    """

    def __init__(
        self,
        *,
        run_id: str,
        unique_id: str,
        cause: str,
        cause_record: NodeResult | None = None,
        record: NodeResult | None = None,
    ) -> None:
        status = f" with status {cause_record.status.value!r}" if cause_record is not None else ""
        super().__init__(
            f"{unique_id} will not run: upstream {cause} failed{status}", run_id=run_id, unique_id=unique_id
        )
        self.cause = cause
        self.cause_record = cause_record
        self.record = record


class ProducerLost(WaitError):
    """The producer's liveness lease expired before the run finished: it died, hung or lost its backend."""

    def __init__(self, *, run_id: str, unique_id: str, detail: str = "") -> None:
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"the producer of run {run_id!r} stopped heartbeating before {unique_id} finished{extra}",
            run_id=run_id,
            unique_id=unique_id,
        )


class NodeNotRun(WaitError):
    """The run ended without running the node.

    ``record`` is the node's ``not_run`` / ``skipped`` result when one was published; ``ending`` is the run's
    finished or crashed record when the bus saw it.
    """

    def __init__(
        self,
        *,
        run_id: str,
        unique_id: str,
        record: NodeResult | None = None,
        ending: RunFinished | RunCrashed | None = None,
    ) -> None:
        reason = ""
        if record is not None and record.message:
            reason = f": {record.message}"
        elif ending is not None and getattr(ending, "error", None):
            reason = f": the run crashed: {getattr(ending, 'error', '')}"
        super().__init__(
            f"run {run_id!r} ended without running {unique_id}{reason}", run_id=run_id, unique_id=unique_id
        )
        self.record = record
        self.ending = ending


class NodeNotInRun(WaitError):
    """The run has started and the node is not in its selected graph: it will never get a result."""

    def __init__(self, *, run_id: str, unique_id: str) -> None:
        super().__init__(
            f"{unique_id} is not in the graph selected by run {run_id!r}", run_id=run_id, unique_id=unique_id
        )


class WaitTimeout(WaitError, TimeoutError):
    """The timeout passed to ``wait`` elapsed before the node's outcome was known."""

    def __init__(self, *, run_id: str, unique_id: str, timeout: float) -> None:
        super().__init__(
            f"no outcome for {unique_id} in run {run_id!r} within {timeout:g} s", run_id=run_id, unique_id=unique_id
        )
        self.timeout = timeout
