"""The publishing engine: drains the producer's FIFO, normalises, publishes in batches, keeps the lease, ends.

ONE engine for every producer — the dbtRunner callback, the subprocess's JSON log and the replay of an
existing log all push dbt events into a :class:`Publisher` and call :meth:`Publisher.finish` once.

It runs in an event loop — its own (a dedicated thread running ``anyio.run``) or the caller's (``ainvoke``,
the replay) — and is fed from any thread through :meth:`Publisher.push`, which only appends to a
``collections.deque`` and, when the publisher sleeps, schedules one wake-up on its loop. dbt never waits for
the publisher: a slow or failing backend makes records queue up (bounded by ``max_buffer``; overflow is
logged loudly), never dbt.

The rules it keeps:

* **The attempt is announced at once**: the first thing published is the attempt's ``RunStarted`` (graph
  ``None`` until dbt tells), and the lease and heartbeats start with it — before dbt is imported.
* **The lease is renewed the moment the backend answers again**: a failed publish or renewal makes the
  keep-alive task retry the renewal with a short backoff instead of waiting for the next heartbeat. It is
  renewed every :func:`~dbtbus.events.lease_period` (the heartbeat, at most 8 s) whatever the heartbeat
  interval: readers declare a producer lost on that period, not on the heartbeat it announced.
* **A vanished claim is told**: a renewal that finds the run's claim gone (the backend lost the run's keys:
  a restart without persistence, a flush, a deletion; or a Sentinel failover to a replica that may lack
  the latest writes) is logged, counted (``claims_lost``), and answered by
  claiming again and republishing, in one append, the attempt's ``RunStarted`` marked ``recovered`` and
  every terminal record published so far — before the next records and before the ending.
* **The ending is atomic**: the ``not_run`` records and ``RunFinished`` / ``RunCrashed`` go to the backend
  in ONE append, so no reader ever sees the ``not_run`` records without the ending.
* **Permanent backend errors stop it at once** (:class:`~dbtbus.BackendRejected`: authentication, ACL,
  a run claimed by another producer): never retried, one log line, the result says what was published.
* **A superseded producer publishes nothing more**: once its attempt is claimed, every append carries its
  holder, so a backend with fenced appends refuses the first one made after a later attempt (or a
  replacement of this one) claimed the run — with :class:`~dbtbus.RunClaimed`, the error its next renewal
  would get. Either way it is the permanent error above: one rule, whichever call learns it first (a
  process frozen past its lease that thaws flushes its pending batch before its overdue renewal runs).
  Before the claim succeeded, appends carry no holder (a producer whose first claim failed transiently must
  not be fenced by the claim it is about to take over).
* **An abandoned run expires too**: with a ``retention``, every append carries the expiry ``lease +
  retention`` and every lease renewal is followed by ``expire_run(lease + retention)``. A backend with
  expiring appends sets it in the append itself; on the others an append makes the run's keys permanent
  again, so one more call sets it after each append — a producer killed between the two leaves a run kept
  for good there, never on Redis or memory. A producer that dies (SIGKILL, OOM, host gone) leaves a run
  whose keys vanish ``retention`` after its lease lapsed, with no process alive to clean up; a producer that
  ends sets the plain ``retention`` as before.
* **Records fit** ``max_record_size``: oversized text fields are truncated with a visible marker; a record
  that still does not fit is counted and logged (``oversized``), never silently dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from .._bus import Bus, connect
from .._dbt.exit_codes import dbt_exit_code
from .._exceptions import BackendError, BackendRejected, RecordTooLarge, RunClaimed
from .._limits import DEFAULT_MAX_RECORD_SIZE, RecordFitter
from .._wakeup import capture_scheduler
from ..events import Heartbeat, NodeResult, Record, RunCrashed, RunFinished, RunStarted, lease_period
from ._callback import Item, extract
from ._normalise import Normaliser
from ._terminal import TerminalRecords

logger = logging.getLogger("dbtbus.producer")

#: A record fitted to ``max_record_size`` and its wire bytes: encoded once, published and kept as such.
Encoded = tuple[Record, bytes]

_BATCH = 1000
#: Renewal retries after a failure: quick at first (the backend may be back already), at most this apart.
_RENEW_BACKOFF_MAX = 0.5


def is_rejected(exc: BaseException) -> bool:
    """A permanent backend error (authentication, ACL, a claimed run, too large): never worth a retry."""
    return isinstance(exc, BackendRejected)


def _is_too_large(exc: BaseException) -> bool:
    return isinstance(exc, RecordTooLarge)


@dataclass
class Ending:
    """How the invocation ended, as the producer saw it."""

    crashed: bool
    success: bool = False
    exit_code: int | None = None
    error: str | None = None
    elapsed: float = 0.0
    peak_rss: int | None = None
    dbt_results: list[tuple[str, str, str]] | None = None
    #: Seconds to wait for nodes still running when dbt returned (in process, ``--fail-fast`` returns without
    #: joining its worker threads: nodes in flight finish, and fire NodeFinished, a moment later).
    grace: float = 0.0
    #: What ``peak_rss`` covers: "invocation" (this run's own peak) or "process" (the host's lifetime peak).
    peak_rss_scope: str | None = None
    #: dbt's own ``elapsed_time`` of the run, when dbt returned a result (in process).
    dbt_elapsed: float | None = None


@dataclass(frozen=True)
class PublisherStatistics:
    """A snapshot of a :class:`Publisher`: events handed over and not yet normalised (``queued``), records
    waiting for the backend (``pending``), and the counts so far."""

    queued: int
    pending: int
    published: int
    unpublished: int
    dropped: int
    oversized: int


class Publisher:
    def __init__(
        self,
        normaliser: Normaliser,
        *,
        heartbeat_interval: float = 5.0,
        batch_linger: float = 0.002,
        max_buffer: int = 100_000,
        flush_timeout: float = 30.0,
        retention: float | None = None,
        rss: Callable[[], int | None] | None = None,
        batch_size: int = _BATCH,
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
    ) -> None:
        self.normaliser = normaliser
        self.run_id = normaliser.run_id
        self.holder = normaliser.producer.id
        self.heartbeat_interval = heartbeat_interval
        self.batch_linger = batch_linger
        self.max_buffer = max_buffer
        self.flush_timeout = flush_timeout
        self.retention = retention
        self.rss = rss
        self.batch_size = max(1, batch_size)
        self.fitter = RecordFitter(max_record_size)
        self._fifo: deque[Item] = deque()
        self._pending: deque[Encoded] = deque()
        self._schedule: Callable[[Callable[[], Any]], None] | None = None
        self._wake: anyio.Event | None = None
        self._sleeping = False
        self._ending: Ending | Callable[[], Ending] | None = None
        self._abandoned = False
        #: How the run ended, once the publisher has closed it.
        self.ending: Ending | None = None
        self._closed = False
        self._dead = False
        self._failures = 0
        self._dropped = 0
        #: The lease may have lapsed (a publish or renewal failed): the keep-alive task retries at once.
        self._lease_doubtful = False
        self._trouble: anyio.Event | None = None
        self.published = 0
        #: Records of this run's log handed to the bus so far: the idempotency keys of the next batch follow
        #: on, so a batch retried after a lost reply carries the same keys and is stored once.
        self._sequence = 0
        self._claimed = False
        #: Times a renewal found the run's claim gone (its keys lost); each is answered by a republish.
        self.claims_lost = 0
        #: Records republished after a claim vanished.
        self.republished = 0
        self._recover = False
        #: Records that did not fit ``max_record_size`` even truncated (logged, not published).
        self.oversized = 0
        #: Records not published because the backend failed or rejected them (including the overflow).
        self.unpublished = 0
        #: The permanent backend error that stopped publishing, if any.
        self.rejected: BaseException | None = None
        #: Whether the run's ending reached the backend.
        self.ended = False
        #: Set once the announcement reached the backend, or publishing stopped for good.
        self.announced = threading.Event()
        self.done = threading.Event()
        self.thread: threading.Thread | None = None
        #: Each node's terminal record as published (the bytes the backend got), or as made if it never fit.
        self.results = TerminalRecords()

    # ------------------------------------------------------------------------------------------ any thread

    def statistics(self) -> PublisherStatistics:
        return PublisherStatistics(queued=len(self._fifo), pending=len(self._pending), published=self.published,
                                   unpublished=self.unpublished, dropped=self._dropped, oversized=self.oversized)

    def push(self, item: Item) -> None:
        """Hand one event over (called on dbt's threads: O(1), never blocks, never raises)."""
        if self._dead or self._closed:
            return
        self._fifo.append(item)
        if self._sleeping:
            self._wake_up()

    def _wake_up(self) -> None:
        self._sleeping = False
        schedule, event = self._schedule, self._wake
        if schedule is not None and event is not None:
            with contextlib.suppress(Exception):  # the loop is gone: nothing to wake
                schedule(event.set)

    def finish(self, ending: Ending | Callable[[], Ending]) -> None:
        """dbt returned (or died): drain, publish the end of the run, stop.

        ``ending`` may be a function, called once every event is drained (a replay learns how dbt ended
        from the log's last lines).
        """
        if self._ending is None:
            self._ending = ending
        self._wake_up()

    def abandon(self) -> None:
        """This producer cannot know how dbt's run ends (a replay's source failed): publish what was handed
        over, then stop with no end record and release the lease. Waiters on what is still pending learn the
        producer is lost, which is true, rather than that the run ended, which nobody knows."""
        if self._ending is None:
            self._abandoned = True
        self._wake_up()

    @property
    def _stopping(self) -> bool:
        """dbt returned (:meth:`finish`) or the run was given up (:meth:`abandon`): drain, then close."""
        return self._ending is not None or self._abandoned

    def wait_announced(self, timeout: float) -> bool:
        """Block until the attempt's RunStarted reached the backend (or publishing stopped); False on timeout."""
        return self.announced.wait(timeout)

    @property
    def stopped(self) -> bool:
        """Publishing stopped for good (a permanent backend error)."""
        return self.rejected is not None

    @property
    def backlog(self) -> int:
        """Events and records not yet published."""
        return len(self._fifo) + len(self._pending)

    # ------------------------------------------------------------------------------------------ own thread

    def start_thread(self, url: str, **options: Any) -> None:
        """Run the publisher on a dedicated thread with its own event loop and its own bus on ``url``."""

        async def main() -> None:
            bus = await self._connect(url, options)
            if bus is None:
                return
            try:
                await self.run(bus)
            finally:
                # Not under a shielding scope of its own: the bus's task group must be left in the scope it was
                # entered in (anyio refuses otherwise), and the bus shields its backend's close itself.
                await bus.__aexit__(None, None, None)

        def target() -> None:
            try:
                anyio.run(main)
            except BaseException:
                self._dead = True
                logger.exception("dbtbus: the publisher of run %r died; dbt runs on unpublished", self.run_id)
            finally:
                self.announced.set()
                self.done.set()

        self.thread = threading.Thread(target=target, name=f"dbtbus-publisher-{self.run_id}", daemon=True)
        self.thread.start()

    async def _connect(self, url: str, options: dict[str, Any]) -> Bus | None:
        """The bus, opened; ``None`` when it never opened (rejected, or still failing ``flush_timeout`` after dbt
        returned: what dbt handed over is then counted unpublished and dropped).

        Opening is retried like an append while it fails transiently: a Redis Cluster whose seed nodes are
        all down fails at connect (that is where the client learns the slot map), and for a producer that is
        an outage like any other — dbt runs on, and publishing starts when the bus answers.
        """
        give_up_at: float | None = None
        while True:
            bus = connect(url, **options)
            try:
                return await bus.__aenter__()
            except BackendError as exc:
                self._failed(exc, "connecting to the bus")
            if self.rejected is not None:
                return None
            if self._stopping:
                now = anyio.current_time()
                give_up_at = now + self.flush_timeout if give_up_at is None else give_up_at
                if now >= give_up_at:
                    self._dead = True
                    self.unpublished += len(self._fifo)
                    logger.error("dbtbus: gave up connecting to the bus for run %r after %.1fs; %d events dropped",
                                 self.run_id, self.flush_timeout, len(self._fifo))
                    self._fifo.clear()
                    return None
            await anyio.sleep(self._backoff())

    def join(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    # ------------------------------------------------------------------------------------------ the loop

    async def run(self, bus: Bus) -> None:
        """Publish until :meth:`finish` is called and everything is flushed (or ``flush_timeout`` passed)."""
        try:
            self._schedule = capture_scheduler()
            self._wake = anyio.Event()
            self._trouble = anyio.Event()
            self._pending.extend(self._fit(self.normaliser.announce()))
            await self._refuse_a_used_attempt(bus)
            if self.rejected is None:
                await self._renew(bus)
            if self.rejected is None and await self._flush(bus):
                self.announced.set()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep_alive, bus)
                while self.rejected is None:
                    self._drain()
                    if self._recover and not await self._republish(bus):
                        if self.stopped:
                            break
                        await anyio.sleep(self._backoff())
                        continue
                    if self._stopping and not self._fifo:
                        break
                    if self._pending and not await self._flush(bus):
                        if self.stopped:
                            break
                        await anyio.sleep(self._backoff())
                        continue
                    if self._pending:
                        continue
                    self.announced.set()
                    await self._sleep()
                # The lease (and heartbeats) go on while the run is ended: waiters must never see the
                # producer lost between dbt returning and the not_run / RunFinished records landing.
                if self.rejected is None:
                    with anyio.CancelScope(shield=True):
                        await (self._flush_abandoned(bus) if self._abandoned else self._close(bus))
                tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await self._release(bus)
        except BaseException:
            self._dead = True
            self._fifo.clear()
            raise
        finally:
            self.announced.set()
            self.done.set()

    async def _sleep(self) -> None:
        self._wake = anyio.Event()
        self._sleeping = True
        if self._fifo or self._stopping:
            self._sleeping = False
            return
        await self._wake.wait()
        if self.batch_linger > 0 and not self._stopping:
            await anyio.sleep(self.batch_linger)

    def _drain(self) -> None:
        fifo, feed = self._fifo, self.normaliser.feed
        while fifo:
            name, payload = fifo.popleft()
            try:
                data, info = payload if isinstance(payload, tuple) else extract(name, payload)
                records = feed(name, data, info)
            except Exception:
                logger.exception("dbtbus: could not normalise dbt event %s of run %r", name, self.run_id)
                continue
            if records:
                self._pending.extend(self._fit(records))
        overflow = len(self._pending) - self.max_buffer
        if overflow > 0:
            for _ in range(overflow):
                self._pending.popleft()
            self._dropped += overflow
            self.unpublished += overflow
            logger.error(
                "dbtbus: the backend is not keeping up; DROPPED %d records of run %r (%d so far, buffer %d)",
                overflow, self.run_id, self._dropped, self.max_buffer,
            )

    def _fit(self, records: Sequence[Record]) -> list[Encoded]:
        out: list[Encoded] = []
        for record in records:
            fit = self.fitter.fit_encoded(record)
            if fit is None:
                if isinstance(record, NodeResult):
                    self.results.keep(record, None)
                self.oversized += 1
                logger.error(
                    "dbtbus: a %s record of run %r does not fit max_record_size=%d even truncated; not published",
                    type(record).__name__, self.run_id, self.fitter.max_size,
                )
                continue
            fitted, data = fit
            if isinstance(fitted, NodeResult):
                self.results.keep(fitted, data)
            if isinstance(record, RunStarted) and record.graph and isinstance(fitted, RunStarted) and not fitted.graph:
                logger.warning(
                    "dbtbus: the graph of run %r (%d nodes) does not fit max_record_size=%d; RunStarted is "
                    "published without it (waiters learn of upstream failures only as dbt reports the skips)",
                    self.run_id, len(record.graph), self.fitter.max_size,
                )
            out.append(fit)
        return out

    def _backoff(self) -> float:
        return float(min(1.0, 0.05 * 2 ** min(self._failures, 6)))

    def _failed(self, exc: BaseException, what: str) -> None:
        """A backend call failed: stop for good on a permanent error, else doubt the lease and retry."""
        if is_rejected(exc):
            self._reject(exc)
            return
        self._lease_doubtful = True
        if self._trouble is not None:
            self._trouble.set()
        self._failures += 1
        if self._failures == 1 or self._failures % 20 == 0:
            logger.warning(
                "dbtbus: %s of run %r failed (attempt %d, %d buffered): %r",
                what, self.run_id, self._failures, len(self._pending), exc,
            )

    def _reject(self, exc: BaseException) -> None:
        if self.rejected is not None:
            return
        self.rejected = exc
        self._dead = True
        self.unpublished += len(self._pending) + len(self._fifo)
        self._pending.clear()
        self._fifo.clear()
        self.announced.set()
        logger.error(
            "dbtbus: the backend rejected run %r for good, publishing stopped (%d records published): %s: %s",
            self.run_id, self.published, type(exc).__name__, exc,
        )
        self._wake_up()

    def _keys(self, count: int, offset: int = 0) -> list[str]:
        start = self._sequence + offset
        return [f"{self.holder}:{n}" for n in range(start, start + count)]

    @property
    def _fence(self) -> str | None:
        """The holder the appends carry (fenced appends): this producer's, once it has claimed its attempt."""
        return self.holder if self._claimed else None

    async def _publish(self, bus: Bus, batch: list[Encoded], what: str) -> bool:
        try:
            await bus.publish_encoded(batch, keys=self._keys(len(batch)), holder=self._fence,
                                      expire_after=self._abandoned_expiry())
        except Exception as exc:
            if _is_too_large(exc):
                return await self._publish_one_by_one(bus, batch, what, exc)
            self._failed(exc, what)
            return False
        self.published += len(batch)
        self._sequence += len(batch)
        self._failures = 0
        await self._expire_after_append(bus)
        return True

    def _lease_ttl(self) -> float:
        return 1.5 * lease_period(self.heartbeat_interval)

    async def _expire_after_append(self, bus: Bus) -> None:
        """An append without an expiry keeps the run for ever: a backend that takes none with the append
        (no expiring appends) is given it right after."""
        if not bus.backend.expiring_appends:
            await self._expire_if_abandoned(bus)

    def _abandoned_expiry(self) -> float | None:
        """When the run's keys go if this process dies now (``None``: no retention, they are kept)."""
        return None if self.retention is None else self._lease_ttl() + self.retention

    async def _expire_if_abandoned(self, bus: Bus) -> None:
        """With a retention, the run's keys expire ``retention`` after the lease would lapse: if this process
        dies now, nobody is left to expire them (see the module's rules). A failure here is not a failed
        publish (the records are stored): the next renewal sets the expiry again."""
        expiry = self._abandoned_expiry()
        if expiry is None:
            return
        try:
            await bus.expire_run(self.run_id, expiry)
        except Exception as exc:
            if is_rejected(exc):
                self._failed(exc, "setting the run's retention")
            else:
                logger.debug("dbtbus: setting the retention of run %r failed: %r", self.run_id, exc)

    async def _publish_one_by_one(self, bus: Bus, batch: list[Encoded], what: str, refusal: Exception) -> bool:
        """The backend refused ``batch`` as too large (its limit is below ``max_record_size``): publish the
        records one at a time and count (and log) the ones it refuses. The ending's unit loses its
        atomicity on this path only. Each append is followed by the run's expiry where the backend takes none
        with it, as :meth:`_publish`'s is."""
        for offset, item in enumerate(batch):
            if len(batch) > 1:
                try:
                    await bus.publish_encoded([item], keys=self._keys(1, offset), holder=self._fence,
                                              expire_after=self._abandoned_expiry())
                except Exception as exc:
                    if not _is_too_large(exc):
                        self._failed(exc, what)
                        return False
                    refusal = exc
                else:
                    self.published += 1
                    await self._expire_after_append(bus)
                    continue
            self.oversized += 1
            logger.error("dbtbus: the backend refused a %s record of run %r as too large: %s",
                         type(item[0]).__name__, self.run_id, refusal)
        self._sequence += len(batch)
        self._failures = 0
        return True

    async def _flush(self, bus: Bus) -> bool:
        while self._pending:
            batch = [self._pending[i] for i in range(min(self.batch_size, len(self._pending)))]
            if not await self._publish(bus, batch, f"publishing {len(batch)} records"):
                return False
            for _ in batch:
                self._pending.popleft()
        return True

    async def _retrying(self, step: Callable[[], Any]) -> bool:
        while self.rejected is None:
            if await step():
                return True
            if self.stopped:
                return False
            await anyio.sleep(self._backoff())
        return False

    async def _refuse_a_used_attempt(self, bus: Bus) -> None:
        """A run id names one run: an attempt the bus already holds (its ``RunStarted`` is stored, say of a run
        that finished) is refused with :class:`~dbtbus.RunClaimed` before anything is published, rather than
        mixed into the old attempt's records. (A live producer of it is refused by the lease as well.) When
        the backend cannot answer now, the lease alone decides."""
        try:
            started = await bus.run_started(self.run_id)
        except Exception as exc:
            if is_rejected(exc):
                self._failed(exc, "reading the run")
            return
        attempt = self.normaliser.attempt
        if started is not None and started.attempt >= attempt:
            when = f" on {started.started_at:%Y-%m-%d %H:%M:%S %Z}" if started.started_at is not None else ""
            host = f" on {started.producer.host}" if started.producer.host else ""
            self._reject(
                RunClaimed(
                    f"run {self.run_id!r} already has attempt {started.attempt}, claimed by producer "
                    f"{started.producer.id!r}{host} (started{when}): a run id names one run, so attempt {attempt} "
                    "is not produced into it again; use a new run id, delete the old run (dbtbus gc), or continue "
                    "it as a later attempt (dbtbus run --resume)"
                )
            )

    async def _renew(self, bus: Bus) -> bool:
        ttl = self._lease_ttl()
        try:
            if self._claimed:
                held = await bus.renew_lease(self.run_id, self.holder, ttl)
                if held is False:
                    self._claim_vanished()
                    await self._claim(bus, ttl)
            else:  # the first renewal claims the run's attempt: a second producer of it fails fast
                await self._claim(bus, ttl)
                self._claimed = True
        except Exception as exc:
            self._failed(exc, "renewing the lease")
            return False
        self._lease_doubtful = False
        await self._expire_if_abandoned(bus)
        return True

    async def _claim(self, bus: Bus, ttl: float) -> None:
        """Claim the run's attempt, the claim expiring as this process's appends would make the run expire."""
        await bus.acquire_lease(
            self.run_id, self.holder, ttl, self.normaliser.attempt, expire_after=self._abandoned_expiry()
        )

    def _claim_vanished(self) -> None:
        """The run's claim is gone: the backend lost the run's keys, and with them records published."""
        self.claims_lost += 1
        self._recover = True
        logger.warning(
            "dbtbus: the claim of run %r vanished from the backend (a restart without persistence, a flush, a "
            "deletion, or a failover to a replica that may lack the latest writes): records published so far may "
            "be lost; claiming it again and republishing the run's "
            "start and its %d terminal records", self.run_id, len(self.results),
        )
        self._wake_up()

    async def _republish(self, bus: Bus) -> bool:
        """After a vanished claim: the attempt's RunStarted marked ``recovered`` and every terminal record
        published so far, in one append (readers close the gap on it). False when the backend failed."""
        started = self.normaliser.started
        unit: list[Encoded] = []
        if started is not None:
            unit.extend(self._fit([dataclasses.replace(started, recovered=True)]))
        for uid in list(self.results):
            record = self.results[uid]
            data = self.results.data(uid)
            if data is not None:
                unit.append((record, data))
        if not await self._publish(bus, unit, f"republishing {len(unit)} records"):
            return False
        self._recover = False
        self.republished += len(unit)
        return True

    async def _keep_alive(self, bus: Bus) -> None:
        """Renew the lease and publish a heartbeat every interval; after a failure, renew as soon as it works.

        A failed publish or renewal wakes this task at once, and it retries the renewal every 0.05-0.5 s
        until the backend answers: the lease lapses during an outage, and must be back the moment the
        backend is, not up to a heartbeat interval later, or waiters conclude the producer is lost.
        """
        period = lease_period(self.heartbeat_interval)
        next_beat = anyio.current_time() + self.heartbeat_interval
        next_renewal = anyio.current_time() + period
        retry = 0
        while self.rejected is None:
            wait = min(next_beat, next_renewal) - anyio.current_time()
            if self._lease_doubtful:
                await anyio.sleep(max(0.0, min(wait, 0.05 * 2**retry if retry else 0.0, _RENEW_BACKOFF_MAX)))
            else:
                trouble = self._trouble = anyio.Event()
                with anyio.move_on_after(max(0.0, wait)):
                    await trouble.wait()
            renewed = await self._renew(bus)
            retry = 0 if renewed else min(retry + 1, 8)
            if renewed:
                next_renewal = anyio.current_time() + period
            if anyio.current_time() < next_beat or self.rejected is not None:
                continue
            # Fixed rate (a late beat does not push the later ones back), never a burst after a stall.
            next_beat = max(next_beat + self.heartbeat_interval, anyio.current_time())
            if self._closed or not renewed:
                continue
            peak = None
            if self.rss is not None:
                try:
                    peak = self.rss()
                except Exception:
                    peak = None
            n = self.normaliser
            beat = Heartbeat(
                run_id=self.run_id, running=len(n.running), done=len(n.statuses), peak_rss=peak, attempt=n.attempt
            )
            try:
                # With the expiry its records' appends carry: an append without one keeps the run for ever, and
                # a producer killed after a beat would leave the run's keys behind for good.
                await bus.publish(beat, holder=self._fence, expire_after=self._abandoned_expiry())
            except Exception as exc:
                self._failed(exc, "publishing a heartbeat")
            else:
                self.published += 1
                await self._expire_after_append(bus)

    async def _close(self, bus: Bus) -> None:
        self._drain()
        assert self._ending is not None
        ending = self._ending() if callable(self._ending) else self._ending
        self.ending = ending
        normaliser = self.normaliser
        if ending.grace > 0 and normaliser.running:
            with anyio.move_on_after(ending.grace):
                while normaliser.running:
                    await anyio.sleep(0.02)
                    self._drain()
        self._closed = True
        self._drain()
        results = ending.dbt_results if ending.dbt_results is not None else normaliser.end.results
        # ONE append for the not_run records and the ending: a reader sees both or neither.
        unit = self._fit([*normaliser.not_run(results), self._end_record(ending)])
        unit_started = [item for item in unit if isinstance(item[0], RunStarted)]
        if unit_started:  # a run that never got to a node: its RunStarted goes ahead of the unit
            self._pending.extend(unit_started)
            unit = [item for item in unit if not isinstance(item[0], RunStarted)]
        with anyio.move_on_after(self.flush_timeout):
            # One more look at the claim right before the ending: records lost since the last renewal are
            # republished ahead of it, so no reader takes a lost node for one that did not run.
            await self._renew(bus)
            if await self._retrying(lambda: self._flush(bus)) and await self._retrying(self._recovered(bus)):
                self.ended = await self._retrying(lambda: self._publish(bus, unit, "publishing the run's end"))
        if not self.ended and self.rejected is None:
            self._give_up(len(unit))

    def _recovered(self, bus: Bus) -> Callable[[], Any]:
        async def step() -> bool:
            return not self._recover or await self._republish(bus)

        return step

    async def _flush_abandoned(self, bus: Bus) -> None:
        self._closed = True
        self._drain()
        with anyio.move_on_after(self.flush_timeout):
            if await self._retrying(lambda: self._flush(bus)):
                return
        if self.rejected is None:
            self._give_up()

    def _give_up(self, unsent: int = 0) -> None:
        """The backend kept failing past ``flush_timeout``: count and log what is left (``unsent`` records
        beside the pending ones), and drop it."""
        left = len(self._pending) + unsent
        self.unpublished += left
        logger.error(
            "dbtbus: gave up publishing the last %d records of run %r after %.1fs (backend failing)",
            left, self.run_id, self.flush_timeout,
        )
        self._pending.clear()

    def _end_record(self, ending: Ending) -> Record:
        normaliser = self.normaliser
        if ending.crashed:
            return RunCrashed(
                run_id=self.run_id,
                error=ending.error or "crashed",
                elapsed=ending.elapsed,
                peak_rss=ending.peak_rss,
                peak_rss_scope=ending.peak_rss_scope,
                exit_code=ending.exit_code,
                attempt=normaliser.attempt,
            )
        exit_code = ending.exit_code
        if exit_code is None:
            exit_code = dbt_exit_code(ending.success, ending.error)
        return RunFinished(
            run_id=self.run_id,
            success=ending.success,
            exit_code=exit_code,
            counts=normaliser.counts(),
            elapsed=ending.elapsed,
            peak_rss=ending.peak_rss,
            peak_rss_scope=ending.peak_rss_scope,
            error=ending.error,
            attempt=normaliser.attempt,
            dbt_elapsed=ending.dbt_elapsed if ending.dbt_elapsed is not None else normaliser.end.dbt_elapsed,
        )

    async def _release(self, bus: Bus) -> None:
        try:
            await bus.release_lease(self.run_id, self.holder)
            if self.retention is not None and self.rejected is None:
                await bus.expire_run(self.run_id, self.retention)
        except Exception as exc:
            if self.rejected is None:
                logger.warning("dbtbus: releasing the lease of run %r failed: %r", self.run_id, exc)

