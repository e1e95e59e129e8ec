"""The storage and transport interface every backend implements.

A backend is deliberately dumb: it stores opaque bytes in a run's ordered log, keeps the latest terminal
record of each node under its own key, and holds a producer's liveness lease. It knows nothing of dbt,
statuses, waiting or failure propagation — all of that lives once, in :class:`dbtbus.Bus`, above every
backend. A backend that stores and delivers bytes faithfully gets every semantic for free.

Writing a backend: subclass :class:`Backend`, implement the abstract methods, give it a ``from_url``
classmethod, and register it under the entry-point group ``dbtbus.backends`` with the URL scheme as the
name::

    [project.entry-points."dbtbus.backends"]
    mybackend = "mypackage.backend:MyBackend"

``tests/backends/contract.py`` holds the behaviour every backend must show; run it against yours.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Append", "Backend", "Entry", "Lease"]


@dataclass(frozen=True, slots=True)
class Append:
    """One record to append to a run's log.

    ``node`` is set for a node's terminal record: the backend then also stores ``data`` as the node's
    durable record (replacing an earlier one), so a late waiter can fetch it with one lookup.
    """

    data: bytes
    node: str | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One record read back from a run's log, with the cursor that points just past it."""

    cursor: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Lease:
    """A producer's liveness lease as the backend holds it: who holds it and for how many more seconds."""

    holder: str
    remaining: float

    @property
    def alive(self) -> bool:
        return self.remaining > 0


class Backend(abc.ABC):
    """Stores runs' logs, nodes' terminal records and producers' leases.

    Every method is a coroutine that may be called concurrently from many tasks of the event loop the
    backend was opened in. Methods raise :class:`dbtbus.BackendError` (or a subclass) for failures of the
    storage itself, :class:`dbtbus.InvalidCursor` for a cursor the backend did not hand out, and never
    anything that encodes meaning about dbt.
    """

    #: The URL schemes this backend serves (``connect`` uses the entry-point name; this is informative).
    schemes: tuple[str, ...] = ()

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: str, **options: Any) -> Backend:
        """Build an (unopened) backend from a URL such as ``memory://demo`` or ``redis://host:6379/0``.

        Must not do I/O: connecting happens in :meth:`open`. ``options`` are keyword arguments given to
        :func:`dbtbus.connect`; unknown ones raise :class:`dbtbus.ConfigurationError`.
        """

    async def open(self) -> None:  # noqa: B027 - optional hook, deliberately not abstract
        """Acquire connections. Called once by the bus before any other method."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, deliberately not abstract
        """Release connections. Called once by the bus; the backend is unusable afterwards."""

    @abc.abstractmethod
    async def append(self, run_id: str, items: Sequence[Append]) -> list[str]:
        """Append ``items`` to the end of ``run_id``'s log, in order, and return one cursor per item.

        The items of one call are appended atomically with respect to readers where the backend can (a
        reader sees all or none of them) and, for every item with ``node`` set, the node's durable record
        is replaced by ``item.data`` in the same step — a reader that sees the log entry can also fetch the
        record. Appending to a run that does not exist creates it; appending extends the run's expiry
        back to "never" until :meth:`expire_run` is called again.

        Must be safe to call concurrently; items of concurrent calls do not interleave within a call.
        """

    @abc.abstractmethod
    async def read(
        self, run_id: str, after: str | None, *, limit: int = 1000, timeout: float | None = 0
    ) -> list[Entry]:
        """Return up to ``limit`` entries of ``run_id``'s log that come after cursor ``after``, oldest first.

        This is the one method the whole bus is built on, so its contract is exact:

        * ``after=None`` reads from the very beginning of the log; otherwise ``after`` is a cursor this
          backend returned (from :meth:`append` or an :class:`Entry`) and reading resumes just past it,
          with nothing skipped and nothing repeated. Each entry's ``cursor`` is the value to pass next.
        * Entries come back in append order; cursors of one run compare in that order only through the
          backend (treat them as opaque strings).
        * If no entry is available, wait up to ``timeout`` seconds for one to be appended and return as
          soon as at least one is (``timeout=None``: wait indefinitely; ``0``: do not wait). Return ``[]``
          when the timeout passes. A backend that cannot block (it polls) must still honour the timeout
          and should wake promptly; the bus keeps timeouts short (seconds) and loops.
        * A run that does not exist (yet) reads as an empty log: waiting on it is normal, since consumers
          often start before the producer.
        * Cancellation (the caller's cancel scope) must leave the backend usable and lose nothing: the
          caller simply reads again from the same cursor.
        * A cursor this backend cannot have produced raises :class:`dbtbus.InvalidCursor`. A cursor that
          points before entries trimmed by retention resumes at the oldest entry still stored.

        Concurrency: many readers, on the same or different runs, may block at once. The bus runs one
        reader per run, so a backend needs no fan-out of its own.
        """

    @abc.abstractmethod
    async def get_node(self, run_id: str, unique_id: str) -> bytes | None:
        """Return the durable terminal record stored for ``unique_id`` in ``run_id``, or ``None``."""

    @abc.abstractmethod
    async def renew_lease(self, run_id: str, holder: str, ttl: float) -> None:
        """Set ``run_id``'s liveness lease to ``holder`` for ``ttl`` seconds from now (creating it if absent)."""

    @abc.abstractmethod
    async def get_lease(self, run_id: str) -> Lease | None:
        """Return the current lease, or ``None`` when there is none or it has expired."""

    @abc.abstractmethod
    async def release_lease(self, run_id: str, holder: str) -> None:
        """Drop the lease if ``holder`` still holds it (a clean shutdown of the producer)."""

    @abc.abstractmethod
    async def expire_run(self, run_id: str, ttl: float) -> None:
        """Make every key of ``run_id`` disappear ``ttl`` seconds from now (retention after a run ends)."""

    @abc.abstractmethod
    async def delete_run(self, run_id: str) -> None:
        """Delete ``run_id``'s log, node records and lease at once. Deleting an unknown run is not an error."""

    @abc.abstractmethod
    async def list_runs(self) -> list[str]:
        """Return the ids of the runs this backend stores (in no particular order)."""
