"""The exceptions dbtbus raises.

Everything derives from :class:`DbtBusError`, so ``except dbtbus.DbtBusError`` catches all of them::

    DbtBusError
    ├── ConfigurationError (ValueError)      a URL, option or argument dbtbus cannot work with
    │   ├── UnknownBackend                    no backend registered for the URL's scheme
    │   └── MemrayUnavailable                 a memray profile was asked for and cannot be taken
    ├── DecodeError (ValueError)              bytes that are not a record this version understands
    ├── BackendError                          the storage failed
    │   ├── BackendUnavailable                transient: unreachable, timed out (retried)
    │   ├── BackendRejected                   permanent: never retried, handed to waiters at once
    │   │   ├── AuthenticationFailed          wrong password, unknown user
    │   │   ├── PermissionDenied              an ACL forbids a command or key
    │   │   ├── RunClaimed                    another producer holds this run and attempt
    │   │   └── RecordTooLarge                a record over the configured size limit
    │   └── InvalidCursor (ValueError)        a cursor the backend did not hand out
    ├── RunError                              about a whole run, not one node
    │   └── RunLost                           the run's producer stopped heartbeating (``subscribe``)
    └── WaitError                             a node's outcome that is not a usable result
        ├── NodeFailed                        kind FAILED
        ├── UpstreamFailed                    kind UPSTREAM_FAILED
        ├── NodeNotInRun                      kind NOT_IN_RUN
        ├── NodeNotRun                        kind NOT_RUN
        ├── ProducerLost                      kind PRODUCER_LOST
        └── WaitTimeout (TimeoutError)        kind TIMEOUT

Every :class:`WaitError` is made from an :class:`dbtbus.Outcome` (kept on ``.outcome``) and its class
carries the same :class:`dbtbus.OutcomeKind` on ``.kind``: handle outcomes with a table keyed by kind.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, ClassVar

from ._outcome import OutcomeKind

if TYPE_CHECKING:
    from ._outcome import Outcome
    from .events import NodeResult

__all__ = [
    "AuthenticationFailed",
    "BackendError",
    "BackendRejected",
    "BackendUnavailable",
    "ConfigurationError",
    "DbtBusError",
    "DecodeError",
    "InvalidCursor",
    "MemrayUnavailable",
    "NodeFailed",
    "NodeNotInRun",
    "NodeNotRun",
    "PermissionDenied",
    "ProducerLost",
    "RecordTooLarge",
    "RunClaimed",
    "RunError",
    "RunLost",
    "UnknownBackend",
    "UpstreamFailed",
    "WaitError",
    "WaitTimeout",
]


class DbtBusError(Exception):
    """Base class of every error dbtbus raises on purpose."""


class ConfigurationError(DbtBusError, ValueError):
    """A URL, option or argument that dbtbus cannot work with."""


class MemrayUnavailable(ConfigurationError):
    """A memray profile was asked for but cannot be taken (memray missing, no Python dbt, output exists)."""


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


class BackendRejected(BackendError):
    """The backend refused the request in a way retrying cannot fix (permissions, types, limits, fencing).

    Never retried by the bus, the producer or the CLI; waiters receive it at once.
    """


class AuthenticationFailed(BackendRejected):
    """The backend rejected the credentials (wrong password, unknown or disabled user)."""


class PermissionDenied(BackendRejected):
    """The backend's access control forbids a command or key this run needs (e.g. Redis ``NOPERM``)."""


class RunClaimed(BackendRejected):
    """Another live producer holds this run and attempt: a second producer may not publish into it."""


class RecordTooLarge(BackendRejected):
    """A record is over the configured maximum size even after its free-text fields were truncated."""


class InvalidCursor(BackendError, ValueError):
    """A cursor that the backend did not hand out."""


class RunError(DbtBusError):
    """An error about a whole run rather than one node."""

    def __init__(self, message: str, *, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (functools.partial(type(self), str(self), run_id=self.run_id), ())


class RunLost(RunError):
    """The run's producer stopped heartbeating before the run ended (raised by ``Bus.subscribe``)."""

    def __init__(self, *, run_id: str) -> None:
        super().__init__(f"the producer of run {run_id!r} stopped heartbeating before the run ended", run_id=run_id)

    def __reduce__(self) -> tuple[Any, ...]:
        return (functools.partial(RunLost, run_id=self.run_id), ())


class WaitError(DbtBusError):
    """Base class of every outcome of ``wait`` that is not a usable node result.

    ``outcome`` is the :class:`dbtbus.Outcome` it was made from; ``run_id`` and ``unique_id`` name what was
    awaited.
    """

    kind: ClassVar[OutcomeKind]

    def __init__(self, outcome: Outcome, message: str | None = None) -> None:
        super().__init__(message if message is not None else self.describe(outcome))
        self.outcome = outcome
        self.run_id = outcome.run_id
        self.unique_id = outcome.unique_id

    @classmethod
    def from_outcome(cls, outcome: Outcome) -> WaitError:
        return cls(outcome)

    def __reduce__(self) -> tuple[Any, ...]:  # pickles (across processes) rebuild from the outcome
        return (type(self).from_outcome, (self.outcome,))

    @staticmethod
    def describe(outcome: Outcome) -> str:
        return f"waiting for {outcome.unique_id} in run {outcome.run_id!r} failed"


class NodeFailed(WaitError):
    """The node (or, with ``include_tests=True``, one of its tests) finished with a failing status.

    ``record`` is the failing node's result: the awaited node itself, or the failing test.
    """

    kind = OutcomeKind.FAILED

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome)
        assert outcome.record is not None
        self.record: NodeResult = outcome.record

    @staticmethod
    def describe(outcome: Outcome) -> str:
        record = outcome.record
        assert record is not None
        awaited = outcome.unique_id
        what = record.unique_id if awaited == record.unique_id else f"{record.unique_id} (a test of {awaited})"
        detail = f": {record.message}" if record.message else ""
        return f"{what} finished with status {record.status.value!r}{detail}"


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

    @staticmethod
    def describe(outcome: Outcome) -> str:
        cause_record = outcome.cause_record
        status = f" with status {cause_record.status.value!r}" if cause_record is not None else ""
        message = f": {cause_record.message}" if cause_record is not None and cause_record.message else ""
        if outcome.cause is None:
            extra = f" ({outcome.detail})" if outcome.detail else ""
            return f"{outcome.unique_id} will not run: an upstream node failed{extra}"
        return f"{outcome.unique_id} will not run: upstream {outcome.cause} failed{status}{message}"


class ProducerLost(WaitError):
    """The producer's liveness lease expired before the node finished: it died, hung or lost its backend."""

    kind = OutcomeKind.PRODUCER_LOST

    @staticmethod
    def describe(outcome: Outcome) -> str:
        extra = f" ({outcome.detail})" if outcome.detail else ""
        return (
            f"the producer of run {outcome.run_id!r} stopped heartbeating before {outcome.unique_id} "
            f"finished{extra}"
        )


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

    @staticmethod
    def describe(outcome: Outcome) -> str:
        from .events import RunCrashed

        record, ending = outcome.record, outcome.ending
        reason = ""
        if record is not None and record.message:
            reason = f": {record.message}"
        elif isinstance(ending, RunCrashed):
            reason = f": the run crashed: {ending.error}"
        elif ending is not None and ending.error:
            reason = f": dbt returned with an error: {ending.error}"
        elif outcome.detail:
            reason = f": {outcome.detail}"
        return f"run {outcome.run_id!r} ended without running {outcome.unique_id}{reason}"


class NodeNotInRun(WaitError):
    """The run has started and the node is not in its selected graph: it will never get a result."""

    kind = OutcomeKind.NOT_IN_RUN

    @staticmethod
    def describe(outcome: Outcome) -> str:
        return f"{outcome.unique_id} is not in the graph selected by run {outcome.run_id!r}"


class WaitTimeout(WaitError, TimeoutError):
    """The timeout passed to ``wait`` elapsed before the node's outcome was known."""

    kind = OutcomeKind.TIMEOUT

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome)
        self.timeout: float = outcome.timeout if outcome.timeout is not None else 0.0

    @staticmethod
    def describe(outcome: Outcome) -> str:
        timeout = outcome.timeout if outcome.timeout is not None else 0.0
        return f"no outcome for {outcome.unique_id} in run {outcome.run_id!r} within {timeout:g} s"


#: The exception class of each outcome kind that is an error.
WAIT_ERRORS: dict[OutcomeKind, type[WaitError]] = {
    cls.kind: cls for cls in (NodeFailed, UpstreamFailed, NodeNotInRun, NodeNotRun, ProducerLost, WaitTimeout)
}
