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

:mod:`dbtbus.testing.backend_contract` holds the behaviour every backend must show; run it against yours
(see ``docs/backends.md``).

Five guarantees are opt-in, declared by class attributes, because they need atomic storage:

* :attr:`Backend.idempotent_appends` — :attr:`Append.key` is honoured: an append whose key the run
  already stored is not stored again, and the cursor of the stored entry is returned. A producer that
  retries an append after a lost reply then never stores a record twice.
* :attr:`Backend.fenced_leases` — :meth:`Backend.acquire_lease` and :meth:`Backend.renew_lease` are
  atomic and fence: one producer per run and attempt; a producer superseded by another holder (the same
  attempt after its lease lapsed, or a later attempt) gets :class:`dbtbus.RunClaimed` on its next renewal.
* :attr:`Backend.fenced_appends` — :attr:`Append.holder` is honoured: an append carrying a holder that is
  not the holder of the run's latest claim is refused as a whole with :class:`dbtbus.RunClaimed`, in the
  same atomic step as the writes it refuses. A superseded producer's appends do not land, even before its
  next renewal tells it that it was superseded (a run whose claim vanished with its keys is not fenced until
  its producer claims it again: see :meth:`Backend.append`).
* :attr:`Backend.tombstones` — :meth:`Backend.delete_run` and :meth:`Backend.expire_run` leave a small
  marker that outlives the run's keys by :attr:`Backend.tombstone_period`, and :meth:`Backend.run_gone`
  reads it: a waiter that arrives after a run was deleted or expired gets ``RunNotFound`` at once instead
  of waiting for a run that will never start. An append removes it (a run id used again).
* :attr:`Backend.expiring_appends` — :attr:`Append.expire_after` is honoured: the append sets the run's
  expiry (as :meth:`Backend.expire_run` would) in the same atomic step as its writes, instead of keeping the
  run for ever, and :meth:`Backend.acquire_lease` gives the claim it creates the same expiry. A producer
  killed between an append (or its claim) and the expiry it would have set next then never leaves a run
  that stays for good.

The defaults keep a backend that declares none of them working: ``acquire_lease`` checks the lease and then
renews it (two calls, so two producers racing within one round trip can both win), append keys and holders
are ignored, an append's expiry is set by a separate :meth:`Backend.expire_run` call that follows it, and
:meth:`Backend.run_gone` always says ``False`` (a deleted run looks like one not started yet,
and its waiters wait out their timeout). The contract suite checks the declared behaviour either way.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .._exceptions import ConfigurationError, RecordTooLarge, RunClaimed

__all__ = ["DEFAULT_TOMBSTONE_PERIOD", "Append", "Backend", "Entry", "Lease", "append_expiry", "append_holders",
           "check_record_sizes", "claimed_message", "tombstone_period_option"]

#: How long (seconds) a deleted or expired run's tombstone outlives its keys by default: 7 days.
DEFAULT_TOMBSTONE_PERIOD = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Append:
    """One record to append to a run's log.

    ``node`` is set for a node's terminal record: the backend then also stores ``data`` as the node's
    durable record (replacing an earlier one), so a late waiter can fetch it with one lookup. ``key``
    makes the append idempotent (see :attr:`Backend.idempotent_appends`).
    """

    data: bytes
    node: str | None = None
    #: Idempotency key, unique within the run (the producer uses ``"<holder>:<sequence>"``). A backend with
    #: :attr:`Backend.idempotent_appends` stores an item whose key the run already holds only once.
    key: str | None = None
    #: The producer appending (its lease holder). A backend with :attr:`Backend.fenced_appends` refuses the
    #: whole call when it is not the holder of the run's latest claim; ``None``: not fenced (as before).
    holder: str | None = None
    #: Seconds from this append until the run's keys expire (its retention, counted as
    #: :meth:`Backend.expire_run` counts it); ``None``: the append keeps the run for ever (as before). A
    #: backend with :attr:`Backend.expiring_appends` sets it in the same atomic step as the writes; the
    #: items of one call carry the same value.
    expire_after: float | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One record read back from a run's log, with the cursor that points just past it."""

    cursor: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Lease:
    """A producer's liveness lease as the backend holds it: who holds it, for how many more seconds, and
    for which attempt of the run (``None`` when it was taken with :meth:`Backend.renew_lease` alone or the
    backend does not store attempts)."""

    holder: str
    remaining: float
    attempt: int | None = None

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
    #: True when :meth:`append` honours :attr:`Append.key` (a retried append never stores a record twice).
    idempotent_appends: ClassVar[bool] = False
    #: True when :meth:`acquire_lease` / :meth:`renew_lease` are atomic and fence superseded holders out.
    fenced_leases: ClassVar[bool] = False
    #: True when :meth:`append` honours :attr:`Append.holder`: a superseded holder's append is refused whole
    #: with :class:`dbtbus.RunClaimed`, atomically with the writes (it needs :attr:`fenced_leases`' claim).
    fenced_appends: ClassVar[bool] = False
    #: True when :meth:`append` honours :attr:`Append.expire_after`: the run's expiry is set atomically with
    #: the writes, never left at "never" by an append whose caller dies before its next call.
    expiring_appends: ClassVar[bool] = False
    #: The largest ``Append.data`` (bytes) :meth:`append` accepts (``None``: no limit of its own). Larger
    #: items make the whole call fail with :class:`dbtbus.RecordTooLarge`, storing nothing; a backend may
    #: also skip stored entries over its limit when reading (with a warning; the cursor still advances).
    max_record_bytes: int | None = None
    #: True when :meth:`delete_run` and :meth:`expire_run` leave a tombstone that :meth:`run_gone` reads.
    tombstones: ClassVar[bool] = False
    #: Seconds a tombstone outlives the run's keys (a backend option; ``0``: leave none). Read at each
    #: deletion or expiry, so changing it affects the tombstones left from then on.
    tombstone_period: float = DEFAULT_TOMBSTONE_PERIOD

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

    def stored_at(self, cursor: str) -> float | None:
        """When the entry at ``cursor`` was stored, on the backend's own clock (seconds since the epoch), or
        ``None`` when the backend does not say (the default). No I/O: it must be readable from the cursor.

        A producer stamps its records with its own clock, which may be minutes off; a backend whose cursors
        carry its clock (Redis stream ids) lets readers measure that skew and show every time on one clock.
        """
        return None

    @abc.abstractmethod
    async def append(self, run_id: str, items: Sequence[Append]) -> list[str]:
        """Append ``items`` to the end of ``run_id``'s log, in order, and return one cursor per item.

        The items of one call are appended atomically with respect to readers where the backend can (a
        reader sees all or none of them) and, for every item with ``node`` set, the node's durable record
        is replaced by ``item.data`` in the same step — a reader that sees the log entry can also fetch the
        record. Appending to a run that does not exist creates it; appending extends the run's expiry
        back to "never" until :meth:`expire_run` is called again — or, with :attr:`expiring_appends` and
        items carrying :attr:`Append.expire_after`, sets it to that many seconds from now, exactly as
        :meth:`expire_run` with that ``ttl`` would (tombstone included), in the same atomic step.

        Must be safe to call concurrently; items of concurrent calls do not interleave within a call.

        With :attr:`idempotent_appends`, an item whose ``key`` the run already stored (by an earlier call or
        earlier in this one) is not appended again: its cursor is the stored entry's. An item larger than
        :attr:`max_record_bytes` fails the whole call with :class:`dbtbus.RecordTooLarge`; nothing is stored.

        With :attr:`fenced_appends`, when the run has a claim (:meth:`acquire_lease`) and an item carries a
        ``holder`` other than the claim's holder, the whole call fails with :class:`dbtbus.RunClaimed` (worded
        by :func:`claimed_message`, as a fenced renewal): nothing is stored, no node record replaced, the run's
        expiry and tombstone untouched. The check and the writes are one atomic step: a claim taken by another
        producer just before is always seen. Items without a holder are not checked. A run without a claim —
        never claimed, or whose claim vanished with its keys (a restart without persistence, a flush, a
        deletion) — accepts every holder: the backend cannot tell a lost claim from one never taken, and a
        lost claim must not lock its own producer out. Such a producer learns of the loss at its next renewal
        (``False``) and claims the run again, which fences the run again from then on.
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

        * Entries the backend cannot hand out (foreign writers' junk, entries over its size limit) are
          skipped with a warning, and the next read resumes past them: a log whose tail is junk must not
          make the caller's loop spin.

        Concurrency: many readers, on the same or different runs, may block at once. The bus runs one
        reader per run, so a backend needs no fan-out of its own.
        """

    @abc.abstractmethod
    async def get_node(self, run_id: str, unique_id: str) -> bytes | None:
        """Return the durable terminal record stored for ``unique_id`` in ``run_id``, or ``None``."""

    async def acquire_lease(
        self, run_id: str, holder: str, ttl: float, attempt: int = 1, *, expire_after: float | None = None
    ) -> None:
        """Claim ``run_id``'s attempt ``attempt`` for ``holder`` and hold its lease for ``ttl`` seconds.

        Raises :class:`dbtbus.RunClaimed` when another holder's lease is live and it holds the same or a
        later attempt (or, with :attr:`fenced_leases`, when a later attempt has claimed the run at all, even
        if its lease has lapsed). A later attempt takes the run over from a live earlier one; the earlier
        holder's next :meth:`renew_lease` then fails. The same holder acquiring again just renews.

        The default (for backends without :attr:`fenced_leases`) checks :meth:`get_lease` and then calls
        :meth:`renew_lease`: two calls, so two producers racing within one round trip may both succeed.

        ``expire_after`` is what the producer's appends carry (:attr:`Append.expire_after`); :class:`Bus`
        passes it only to a backend with :attr:`expiring_appends`. Such a backend gives the claim that
        expiry (``None``: kept for ever, as a plain append keeps the run), so a producer killed after its claim
        and before its first append leaves nothing behind for good.
        """
        lease = await self.get_lease(run_id)
        if (
            lease is not None
            and lease.alive
            and lease.holder != holder
            and (lease.attempt is None or lease.attempt >= attempt)
        ):
            raise RunClaimed(claimed_message(run_id, holder, attempt, lease.holder, lease.attempt))
        await self.renew_lease(run_id, holder, ttl)

    @abc.abstractmethod
    async def renew_lease(self, run_id: str, holder: str, ttl: float) -> bool | None:
        """Set ``run_id``'s liveness lease to ``holder`` for ``ttl`` seconds from now (creating it if absent).

        Renewing after the lease lapsed (the backend was unreachable for a while) takes it again. With
        :attr:`fenced_leases`, once a run was claimed with :meth:`acquire_lease`, only the holder of the
        latest claim may renew: anyone else gets :class:`dbtbus.RunClaimed` (it has been superseded and
        must stop publishing). A run never claimed accepts any holder (the unfenced, legacy path).

        A fenced backend returns ``False`` when the run has no claim at all (the lease is set anyway): for a
        producer that claimed it, the run's keys were lost — a restart without persistence, a flush, a
        deletion — and with them records it published. A backend that knows it switched to a copy that may
        lack its latest writes (Redis behind Sentinel, after a failover) returns ``False`` too, once: the
        producer republishes as for lost keys. ``True`` (or ``None`` from a backend that cannot tell): the
        claim is there.
        """

    @abc.abstractmethod
    async def get_lease(self, run_id: str) -> Lease | None:
        """Return the current lease, or ``None`` when there is none or it has expired."""

    @abc.abstractmethod
    async def release_lease(self, run_id: str, holder: str) -> None:
        """Drop the lease if ``holder`` still holds it (a clean shutdown of the producer).

        The claim stays: a stale earlier attempt cannot come back after a later one released its lease.
        """

    @abc.abstractmethod
    async def expire_run(self, run_id: str, ttl: float) -> None:
        """Make every key of ``run_id`` disappear ``ttl`` seconds from now (retention after a run ends).

        With :attr:`tombstones`, a run that exists also gets (or keeps) a tombstone lasting ``ttl`` plus
        :attr:`tombstone_period`: once the keys are gone, :meth:`run_gone` says so.
        """

    @abc.abstractmethod
    async def delete_run(self, run_id: str) -> None:
        """Delete ``run_id``'s log, node records and lease at once. Deleting an unknown run is not an error.

        With :attr:`tombstones`, deleting a run that exists leaves a tombstone for :attr:`tombstone_period`
        seconds (deleting an unknown run leaves none: a mistyped id must not make a future run look gone).
        """

    async def run_gone(self, run_id: str) -> bool:
        """True when ``run_id`` was deleted or expired (within :attr:`tombstone_period`), and nothing was
        appended to it since: its log reads empty because it is gone, not because it has not started.

        Only meaningful with :attr:`tombstones`; the default (a backend without them) is always ``False``.
        The bus asks once, when it starts reading a run whose log is empty.
        """
        return False

    @abc.abstractmethod
    async def list_runs(self) -> list[str]:
        """Return the ids of the runs this backend stores (in no particular order)."""


def tombstone_period_option(value: Any) -> float:
    """The ``tombstone_period`` backend option as seconds (``>= 0``, finite), or :class:`~dbtbus.ConfigurationError`."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"option 'tombstone_period' must be a number of seconds, got {value!r}") from None
    if isinstance(value, bool) or not 0 <= seconds < float("inf"):
        raise ConfigurationError(
            f"option 'tombstone_period' must be a number of seconds >= 0 (0: no tombstones), got {value!r}"
        )
    return seconds


def claimed_message(run_id: str, holder: str, attempt: int | None, owner: str, owner_attempt: int | None) -> str:
    """The one wording of :class:`dbtbus.RunClaimed` (``attempt=None``: a renewal that was fenced out)."""
    held = f"attempt {owner_attempt}" if owner_attempt is not None else "the run"
    if attempt is None:
        return f"producer {holder!r} was superseded on run {run_id!r}: {owner!r} holds {held}"
    return f"run {run_id!r} is claimed by producer {owner!r} ({held}): {holder!r} cannot produce attempt {attempt}"


def append_holders(items: Sequence[Append]) -> list[str]:
    """The distinct :attr:`Append.holder` values of ``items``, in order (``None`` left out): what a backend with
    :attr:`Backend.fenced_appends` checks against the run's claim."""
    return list(dict.fromkeys(item.holder for item in items if item.holder is not None))


def append_expiry(items: Sequence[Append]) -> float | None:
    """The :attr:`Append.expire_after` of ``items`` (the first one set; ``None``: keep the run): what a backend
    with :attr:`Backend.expiring_appends` sets the run's expiry to."""
    return next((item.expire_after for item in items if item.expire_after is not None), None)


def check_record_sizes(run_id: str, items: Sequence[Append], limit: int | None) -> None:
    """Raise :class:`dbtbus.RecordTooLarge` when an item is over ``limit`` bytes (before anything is stored)."""
    if limit is None:
        return
    for item in items:
        if len(item.data) > limit:
            what = f"the record of {item.node}" if item.node else "a record"
            raise RecordTooLarge(
                f"{what} in run {run_id!r} is {len(item.data):,} bytes, over the backend's limit of "
                f"{limit:,} bytes (max_record_bytes); nothing of this append was stored"
            )
