"""The exceptions dbtbus raises.

Everything derives from :class:`DbtBusError`, so ``except dbtbus.DbtBusError`` catches all of them::

    DbtBusError
    ├── ConfigurationError (ValueError)      a URL, option or argument dbtbus cannot work with
    │   ├── UnknownBackend                    no backend registered for the URL's scheme
    │   ├── InvalidRunId                      a run id that is empty or holds control characters
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
    │   ├── RunLost                           the run's producer stopped heartbeating (``subscribe``)
    │   └── RunGone                           the run vanished from the backend mid-run (``subscribe``)
    └── WaitError                             a node's outcome that is not a usable result
        ├── NodeFailed                        kind FAILED
        ├── UpstreamFailed                    kind UPSTREAM_FAILED
        ├── NodeNotInRun                      kind NOT_IN_RUN
        ├── NodeNotRun                        kind NOT_RUN
        ├── ProducerLost                      kind PRODUCER_LOST
        ├── RunDataLost                       kind DATA_LOST
        ├── RunNotFound                       kind RUN_NOT_FOUND
        └── WaitTimeout (TimeoutError)        kind TIMEOUT

The :class:`WaitError` family lives beside :class:`dbtbus.Outcome` (``_outcome.py``): each is made from an
outcome, kept on ``.outcome``, its text the outcome's ``message``.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, TypeVar

__all__ = [
    "AuthenticationFailed",
    "BackendError",
    "BackendRejected",
    "BackendUnavailable",
    "ConfigurationError",
    "DbtBusError",
    "DecodeError",
    "InvalidCursor",
    "InvalidRunId",
    "MemrayUnavailable",
    "PermissionDenied",
    "RecordTooLarge",
    "RunClaimed",
    "RunError",
    "RunGone",
    "RunLost",
    "UnknownBackend",
]


_E = TypeVar("_E", bound=BaseException)


class DbtBusError(Exception):
    """Base class of every error dbtbus raises on purpose."""


def own_copy(error: _E) -> _E:
    """A new exception like ``error`` (type, message, attributes, cause) for one of the many waiters it is
    handed to: one object raised in many tasks would pile every task's frames onto its ``__traceback__`` and
    keep only the last task's ``__context__``."""
    fresh = copy.copy(error)  # through __reduce__: a new object, no traceback
    fresh.__cause__ = error.__cause__
    fresh.__suppress_context__ = error.__suppress_context__
    return fresh


class ConfigurationError(DbtBusError, ValueError):
    """A URL, option or argument that dbtbus cannot work with."""


class MemrayUnavailable(ConfigurationError):
    """A memray profile was asked for but cannot be taken (memray missing, no Python dbt, output exists)."""


class UnknownBackend(ConfigurationError):
    """No backend is registered for a URL's scheme."""


class InvalidRunId(ConfigurationError):
    """A run id dbtbus will not publish: not a non-empty string, or holding control characters (a newline
    would forge lines in logs, terminals and reports). Checked once, by :func:`dbtbus.events.check_run_id`."""


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
    """Another live producer holds this run and attempt, or the bus already holds that attempt (a finished run's
    id used again): a second producer may not publish into it."""


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


class RunGone(RunError):
    """The run, read in progress, has vanished from the backend — deleted (``dbtbus gc``), expired by its
    retention or flushed — before it ended (raised by ``Bus.subscribe``; waiters get ``RunNotFound``).
    ``tombstone``: never read in progress, the backend's tombstone says it was deleted or expired."""

    def __init__(self, *, run_id: str, tombstone: bool = False) -> None:
        if tombstone:
            text = f"run {run_id!r} is no longer on the bus: it was deleted or expired (a tombstone says so)"
        else:
            text = f"run {run_id!r} vanished from the bus before it ended: it was deleted, expired or flushed"
        super().__init__(text, run_id=run_id)
        self.tombstone = tombstone

    def __reduce__(self) -> tuple[Any, ...]:
        return (functools.partial(RunGone, run_id=self.run_id, tombstone=self.tombstone), ())
