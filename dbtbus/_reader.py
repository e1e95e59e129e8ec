"""Reading a run's log: one read loop, the liveness rule, and the per-run reader that resolves waiters.

:class:`LogTail` is the only code that calls ``Backend.read``: it keeps the cursor, retries transient
failures with backoff, hands permanent ones (:class:`~dbtbus.BackendRejected`) up at once, skips entries
it cannot use while still advancing past them, and folds every record into a :class:`~dbtbus.RunState`.
``Bus.run_state``, ``Bus.history``, ``Bus.subscribe`` and :class:`RunReader` (which serves every waiter of
a run in one bus) are thin loops over it.

**Liveness.** A run's producer is lost when its lease is absent AND this reader, connected all along, has
seen no sign of life (a live lease, a record of the current attempt) for one more lease period after the
lease could have expired (a live lease counts from when it was renewed: its remaining time tells). A reader
that could not reach the backend restarts that clock when it reconnects:
it never concludes loss from a lease that lapsed during its own outage. The period is
:func:`dbtbus.events.lease_period` of the announced heartbeat — the heartbeat, at most 8 s whatever a
RunStarted claims (the producer renews that often) — so with the producer's lease of 1.5 periods and checks
every half period, a dead producer is noticed within 3 periods of its last renewal (24 s at most). A log that
lost its head (no RunStarted) is watched too, on the longest period.

**Gone.** When that rule would conclude loss, the reader first reads the log from its beginning: a log that
reads empty there — this reader saw records of it — was deleted (``dbtbus gc``), expired or flushed, and
the run is *gone* (``RUN_NOT_FOUND``), not merely lost.

**Tombstones.** A reader that finds a run's log empty from its very beginning asks the backend once
(:meth:`~dbtbus.backends.base.Backend.run_gone`) whether the run was deleted or expired: its tombstone then
makes the run gone at once (``RUN_NOT_FOUND``), where it would otherwise look not started yet and its
waiters would wait out their timeout. Any record read later takes that back (the run id used again).

**Snapshots.** A reader that reads a log once (``Bus.run_state``, ``dbtbus runs``, ``gc``) was not connected
while the producer lived: it starts the clock from the records themselves, at the producer's last record
(by the producer's clock) plus one heartbeat interval — a live producer writes a heartbeat at least that
often. So a snapshot calls a run lost once its lease is absent and its last record is more than one
heartbeat plus 2.5 lease periods old (3.5 s at a heartbeat of 1 s, 17.5 s at the default 5 s).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import anyio

from ._exceptions import BackendError, BackendRejected, DbtBusError, DecodeError, own_copy
from ._kinds import OutcomeKind
from ._outcome import Outcome
from ._state import RunState
from ._wakeup import capture_clock
from .backends.base import Backend, Entry
from .events import HEARTBEAT_RANGE, Record, decode, lease_period

__all__ = ["EVERYTHING", "Batch", "LogTail", "ReaderSettings", "RunReader"]

logger = logging.getLogger("dbtbus")


class _Everything:
    """The sentinel for "every node of the run may be affected" (the run started, ended, changed attempt)."""

    _instance: _Everything | None = None

    def __new__(cls) -> _Everything:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "EVERYTHING"


EVERYTHING: Final = _Everything()
Changed = dict[str, None] | _Everything

#: Longest pause between retries of a backend that keeps failing.
_MAX_BACKOFF: Final = 5.0


def decode_entry(run_id: str, entry: Entry, max_size: int) -> Record | None:
    """The record in ``entry``, or None (logged) for one that is oversized, undecodable or of another run."""
    where = entry.cursor or "(node key)"
    if len(entry.data) > max_size:
        logger.warning(
            "dbtbus: skipping entry %s of run %r: %d bytes is over the %d-byte record limit",
            where,
            run_id,
            len(entry.data),
            max_size,
        )
        return None
    try:
        record = decode(entry.data)
    except DecodeError as exc:
        logger.warning("dbtbus: skipping an undecodable entry %s of run %r: %s", where, run_id, exc)
        return None
    if record.run_id != run_id:
        logger.warning("dbtbus: skipping a record of run %r found in run %r", record.run_id, run_id)
        return None
    return record


class Liveness:
    """Decides when a run's producer is lost (see the module docstring for the rule)."""

    def __init__(self, backend: Backend, state: RunState) -> None:
        self.backend = backend
        self.state = state
        self.next_check = 0.0
        self.clock = capture_clock()
        #: When this reader last saw the producer alive, or last (re)connected to the backend.
        self.alive_at = self.clock()
        self._outage = False

    @property
    def period(self) -> float:
        """The lease period this run's producer keeps (the one rule: :func:`dbtbus.events.lease_period`)."""
        started = self.state.started
        return lease_period(started.heartbeat_interval if started is not None else None)

    @property
    def interval(self) -> float:
        return self.period / 2 if self.watching() else math.inf

    def watching(self) -> bool:
        state = self.state
        return (state.started is not None or bool(state.gap)) and state.ending is None and not state.lost

    def sign_of_life(self) -> None:
        self.alive_at = self.clock()

    def from_records(self, now: datetime) -> None:
        """A snapshot's clock (see the module docstring): the producer was last alive one heartbeat interval
        after its last record, by the producer's clock, at the latest. ``now``: the wall clock, aware."""
        last = self.state.last_activity
        if last is None:  # nothing to date the run by: the clock stays at "now" (not lost)
            return
        started = self.state.started
        announced = started.heartbeat_interval if started is not None else None
        heartbeat = HEARTBEAT_RANGE[1] if announced is None else min(max(announced, HEARTBEAT_RANGE[0]),
                                                                     HEARTBEAT_RANGE[1])
        silent = (now - last).total_seconds() - heartbeat
        self.alive_at = min(self.alive_at, self.clock() - max(0.0, silent))

    def outage(self) -> None:
        """This reader could not reach the backend: what it has not seen says nothing about the producer."""
        self._outage = True

    def reconnected(self) -> None:
        if self._outage:
            self._outage = False
            self.sign_of_life()

    async def check(self) -> bool:
        """Check the lease if it is time; return True when this check found the producer lost."""
        if not self.watching():
            return False
        now = self.clock()
        if now < self.next_check:
            return False
        self.next_check = now + self.interval
        try:
            lease = await self.backend.get_lease(self.state.run_id)
        except BackendRejected:
            raise
        except BackendError:
            self.outage()
            raise
        self.reconnected()
        if lease is not None and lease.alive:
            # The producer was alive when it last renewed the lease (1.5 periods long): that moment, not this
            # check's, starts the clock — so a dead producer is noticed within 3 periods of its last renewal.
            renewed_ago = max(0.0, 1.5 * self.period - lease.remaining)
            self.alive_at = max(self.alive_at, self.clock() - renewed_ago)
            return False
        # The lease is 1.5 periods long: absent now, yet seen (or reconnected) within the last 2.5 periods, it
        # may just be late — a starved producer, a slow network. One more period of grace.
        if self.clock() - self.alive_at < 2.5 * self.period:
            return False
        # Lost, or gone altogether? A log that reads empty from its beginning was deleted, expired or flushed.
        try:
            head = await self.backend.read(self.state.run_id, None, limit=1, timeout=0)
        except BackendRejected:
            raise
        except BackendError:
            self.outage()
            raise
        if not head:
            return self.state.mark_gone()
        return self.state.mark_lost()


@dataclass(slots=True)
class Batch:
    """What one read of a log brought: the decoded records (already folded in) and what they changed."""

    records: list[tuple[str, Record]] = field(default_factory=list)
    #: Node ids whose outcome may have changed, in log order (an ordered set), or EVERYTHING.
    changed: Changed = field(default_factory=dict)
    #: The backend returned a full batch (or failed): read again before concluding the log is exhausted.
    more: bool = False


class LogTail:
    """A cursor on one run's log that folds what it reads into a :class:`RunState`."""

    def __init__(
        self, backend: Backend, run_id: str, *, batch: int, max_record_size: int, cursor: str | None = None
    ) -> None:
        self.backend = backend
        self.run_id = run_id
        self.batch = batch
        self.max_record_size = max_record_size
        self.cursor = cursor
        self.state = RunState(run_id, from_start=cursor is None)
        self.liveness = Liveness(backend, self.state)
        self._backoff = 0.0
        self._asked_tombstone = False

    async def read(self, timeout: float) -> Batch:
        """Read once and fold what came in.

        Transient backend errors are logged and paused on here, with a growing backoff, and come back as an
        empty batch with ``more`` set (the caller's loop reads again before concluding anything);
        :class:`~dbtbus.BackendRejected` propagates at once.
        """
        try:
            entries = await self.backend.read(self.run_id, self.cursor, limit=self.batch, timeout=timeout)
        except BackendRejected:
            raise
        except BackendError as exc:
            self.liveness.outage()
            self._backoff = min(max(self._backoff * 2, 0.05), _MAX_BACKOFF)
            logger.warning("dbtbus: reading run %r failed (%s); retrying in %.2f s", self.run_id, exc, self._backoff)
            await anyio.sleep(self._backoff)
            return Batch(more=True)
        self._backoff = 0.0
        self.liveness.reconnected()
        batch = Batch(more=len(entries) >= self.batch)
        changed: Changed = batch.changed
        state = self.state
        for entry in entries:
            self.cursor = entry.cursor  # advance past every entry, used or not
            record = decode_entry(self.run_id, entry, self.max_record_size)
            if record is None:
                continue
            stored_at = self.backend.stored_at(entry.cursor)
            if stored_at is not None:
                state.note_stored_at(record, stored_at)
            result = state.apply(record)
            if result is None or isinstance(changed, _Everything):
                changed = EVERYTHING
            else:
                changed.update(dict.fromkeys(result))
            batch.records.append((entry.cursor, record))
        batch.changed = changed
        if batch.records:
            self.liveness.sign_of_life()
        return batch

    async def check_tombstone(self) -> bool:
        """Is the run, whose log reads empty from its start, gone under a tombstone? True when that made it gone
        now. Asked of the backend once per tail (again only after a transient failure, which is logged), and
        only while nothing has been read: a log with anything in it is not a deleted run's."""
        if self._asked_tombstone or self.cursor is not None or not self.state.may_be_tombstoned:
            return False
        try:
            gone = await self.backend.run_gone(self.run_id)
        except BackendRejected:
            raise
        except BackendError as exc:
            logger.warning("dbtbus: asking whether run %r was deleted failed: %s", self.run_id, exc)
            return False
        self._asked_tombstone = True
        return gone and self.state.mark_tombstoned()

    async def check_liveness(self) -> bool:
        """True when the producer was found lost now; transient errors of the check are logged, not raised."""
        try:
            return await self.liveness.check()
        except BackendRejected:
            raise
        except BackendError as exc:
            logger.warning("dbtbus: checking the lease of run %r failed: %s", self.run_id, exc)
            return False


def merge(a: Changed, b: Changed) -> Changed:
    if isinstance(a, _Everything) or isinstance(b, _Everything):
        return EVERYTHING
    return {**a, **b} if a else b


# ---------------------------------------------------------------------------------------------- waiters


class Waiter:
    """One pending wait; resolved by the run's reader. Kept small: 10,000 of them must stay cheap."""

    __slots__ = ("include_tests", "min_attempt", "outcome", "unique_id")

    def __init__(self, unique_id: str, include_tests: bool, min_attempt: int | None) -> None:
        self.unique_id = unique_id
        self.include_tests = include_tests
        self.min_attempt = min_attempt
        self.outcome: Outcome | DbtBusError | None = None

    def resolve(self, outcome: Outcome | DbtBusError) -> None:
        raise NotImplementedError

    async def settled(self) -> None:
        raise NotImplementedError


class FutureWaiter(Waiter):
    """On asyncio a bare future is a third of an ``anyio.Event`` (which wraps an ``asyncio.Event`` and a deque)."""

    __slots__ = ("future",)

    def __init__(
        self, unique_id: str, include_tests: bool, min_attempt: int | None, future: asyncio.Future[None]
    ) -> None:
        super().__init__(unique_id, include_tests, min_attempt)
        self.future = future

    def resolve(self, outcome: Outcome | DbtBusError) -> None:
        self.outcome = outcome
        if not self.future.done():
            self.future.set_result(None)

    async def settled(self) -> None:
        await self.future


class EventWaiter(Waiter):
    __slots__ = ("event",)

    def __init__(self, unique_id: str, include_tests: bool, min_attempt: int | None) -> None:
        super().__init__(unique_id, include_tests, min_attempt)
        self.event = anyio.Event()

    def resolve(self, outcome: Outcome | DbtBusError) -> None:
        self.outcome = outcome
        self.event.set()

    async def settled(self) -> None:
        await self.event.wait()


class Collector:
    """Where the waiters of one ``as_completed`` report, instead of owning an event each."""

    __slots__ = ("done", "event")

    def __init__(self) -> None:
        self.done: deque[Waiter] = deque()
        self.event = anyio.Event()


class CollectingWaiter(Waiter):
    __slots__ = ("collector",)

    def __init__(self, unique_id: str, include_tests: bool, min_attempt: int | None, collector: Collector) -> None:
        super().__init__(unique_id, include_tests, min_attempt)
        self.collector = collector

    def resolve(self, outcome: Outcome | DbtBusError) -> None:
        self.outcome = outcome
        self.collector.done.append(self)
        self.collector.event.set()


def _run_level(outcome: Outcome) -> bool:
    """True for outcomes that come from the run's state rather than from a record of the node itself."""
    return outcome.kind in _RUN_LEVEL or (outcome.kind is OutcomeKind.NOT_RUN and outcome.record is None)


_RUN_LEVEL: Final = frozenset({OutcomeKind.PRODUCER_LOST, OutcomeKind.DATA_LOST, OutcomeKind.RUN_NOT_FOUND})


@dataclass(frozen=True)
class ReaderSettings:
    """What a :class:`RunReader` needs of its bus: the backend and how to read it."""

    backend: Backend
    #: The longest blocking read (seconds).
    read_block: float
    #: Entries per read.
    read_batch: int
    #: How long a reader without waiters lingers before it stops (seconds).
    linger: float
    max_record_size: int


class RunReader:
    """The one reader of a run in a bus: reads its log once and resolves every waiter on it.

    ``on_done`` is called with the reader when it stops (its bus then forgets it).
    """

    def __init__(self, settings: ReaderSettings, run_id: str, on_done: Callable[[RunReader], None]) -> None:
        self.settings = settings
        self.on_done = on_done
        self.run_id = run_id
        self.tail = LogTail(settings.backend, run_id, batch=settings.read_batch,
                            max_record_size=settings.max_record_size)
        self.state = self.tail.state
        #: Pending waiters by node, then by what they ask (include_tests, min_attempt): one decision per group.
        #: A group of one is the waiter itself (a triggerer holds thousands of those: no set for each).
        self.waiters: dict[str, dict[tuple[bool, int | None], Waiter | set[Waiter]]] = {}
        self.count = 0
        self.caught_up = False
        self.clock = self.tail.liveness.clock
        self.idle_since: float | None = self.clock()
        self.scope = anyio.CancelScope()
        self.read_scope: anyio.CancelScope | None = None
        self.recheck: dict[str, None] = {}
        self.failed: DbtBusError | None = None

    # ------------------------------------------------------------------------------------------ waiters

    def add(self, waiter: Waiter) -> None:
        if self.failed is not None:
            waiter.resolve(own_copy(self.failed))
            return
        if self.caught_up:
            outcome = self._decide(waiter.unique_id, waiter.include_tests, waiter.min_attempt)
            if outcome.terminal and not _run_level(outcome):
                waiter.resolve(outcome)
                return
            if outcome.terminal:
                # "The run ended" / "the producer is lost" can be overtaken by a retry's new attempt already
                # in the log: answer only after one more read.
                self.recheck[waiter.unique_id] = None
                self._interrupt_read()
        groups = self.waiters.get(waiter.unique_id)
        if groups is None:
            groups = self.waiters[waiter.unique_id] = {}
        key = (waiter.include_tests, waiter.min_attempt)
        group = groups.get(key)
        if group is None:
            groups[key] = waiter
        elif isinstance(group, Waiter):
            groups[key] = {group, waiter}
        else:
            group.add(waiter)
        self.count += 1
        self.idle_since = None

    def discard(self, waiter: Waiter) -> None:
        if waiter.outcome is not None:  # resolved: dispatch already took it out
            return
        groups = self.waiters.get(waiter.unique_id)
        if groups is None:
            return
        key = (waiter.include_tests, waiter.min_attempt)
        group = groups.get(key)
        if group is waiter:
            del groups[key]
        elif isinstance(group, set) and waiter in group:
            group.remove(waiter)
            if not group:
                del groups[key]
        else:
            return
        if not groups:
            del self.waiters[waiter.unique_id]
        self._fewer(1)

    def _fewer(self, n: int) -> None:
        self.count -= n
        if self.count == 0:
            self.idle_since = self.clock()
            if self.read_scope is not None:  # do not sit in a long blocking read past the linger
                self.read_scope.deadline = min(self.read_scope.deadline, self.idle_since + self.settings.linger)

    def _interrupt_read(self) -> None:
        if self.read_scope is not None:
            self.read_scope.cancel()

    def _decide(self, unique_id: str, include_tests: bool, min_attempt: int | None) -> Outcome:
        return self.state.outcome(unique_id, include_tests=include_tests, min_attempt=min_attempt)

    def dispatch(self, changed: Changed) -> int:
        """Resolve every waiter whose outcome ``changed`` made terminal; return how many."""
        if isinstance(changed, _Everything):
            uids = list(self.waiters)
        else:
            uids = [uid for uid in changed if uid in self.waiters]
        resolved = 0
        for uid in uids:
            groups = self.waiters[uid]
            # One decision per node and question, then a bare loop: 10,000 waiters on one node must not mean
            # 10,000 evaluations before the first of them runs.
            for key in list(groups):
                outcome = self._decide(uid, *key)
                if not outcome.terminal:
                    continue
                group = groups.pop(key)
                if isinstance(group, Waiter):
                    group.resolve(outcome)
                    resolved += 1
                    continue
                for waiter in group:
                    waiter.resolve(outcome)
                resolved += len(group)
            if not groups:
                del self.waiters[uid]
        if resolved:
            self._fewer(resolved)
        return resolved

    def fail_all(self, error: DbtBusError) -> None:
        """Resolve every waiter with ``error``: each with its own copy, as each raises it in its own task."""
        self.failed = error
        for groups in self.waiters.values():
            for group in groups.values():
                for waiter in [group] if isinstance(group, Waiter) else group:
                    waiter.resolve(own_copy(error))
        self.waiters.clear()
        self.count = 0

    # ------------------------------------------------------------------------------------------ reading

    async def run(self) -> None:
        try:
            with self.scope:
                await self._loop()
        except BackendRejected as exc:  # permanent: every waiter learns it now, none waits out its timeout
            logger.error("dbtbus: the backend rejected reading run %r: %s", self.run_id, exc)
            self.fail_all(exc)
        except Exception as exc:  # a bug or a broken backend must never leave waiters hanging
            logger.exception("dbtbus: the reader of run %r failed", self.run_id)
            self.fail_all(DbtBusError(f"the reader of run {self.run_id!r} failed: {exc!r}"))
        finally:
            self.on_done(self)
            if self.waiters:  # closed under waiters' feet (bus shutting down)
                self.fail_all(DbtBusError("the bus was closed"))

    async def _loop(self) -> None:
        settings = self.settings
        tail = self.tail
        changed: Changed = {}
        while True:
            timeout = 0.0 if not self.caught_up or self.recheck else min(settings.read_block, tail.liveness.interval)
            if self.count == 0 and self.idle_since is not None:
                timeout = min(timeout, max(self.idle_since + settings.linger - self.clock(), 0.0))
            batch = Batch(more=True)
            with anyio.CancelScope() as self.read_scope:
                batch = await tail.read(timeout)
            self.read_scope = None
            changed = merge(changed, batch.changed)
            if not batch.more:
                if not self.caught_up:
                    self.caught_up = True
                    changed = EVERYTHING
                if await tail.check_tombstone():  # an empty log: deleted or expired, or not started yet?
                    changed = EVERYTHING
                if self.recheck and not isinstance(changed, _Everything):
                    changed.update(self.recheck)
                self.recheck = {}
                resolved = self.dispatch(changed) if changed is EVERYTHING or changed else 0
                changed = {}
                if await tail.check_liveness():
                    resolved += self.dispatch(EVERYTHING)
                if resolved:
                    # The waiters just resolved run before this reader sets up its next read: that setup is
                    # not theirs to wait for (a third of a memory:// wake-up).
                    await anyio.lowlevel.checkpoint()
            if self.count == 0 and self.idle_since is not None and self.clock() - self.idle_since >= settings.linger:
                return
