"""The bus: publishing, waiting, subscribing — one implementation above every backend.

The bus delivers what :class:`~dbtbus.RunState` decides. Reading lives in ``_reader.py`` (one read loop,
the liveness rule, one reader per run serving every waiter); the rules live in ``_state.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Final

import anyio
import anyio.abc
import sniffio

from ._exceptions import BackendError, BackendRejected, DbtBusError, RecordTooLarge, RunGone, RunLost
from ._format import redact_url
from ._kinds import OutcomeKind
from ._limits import DEFAULT_MAX_RECORD_SIZE, MIN_RECORD_SIZE, RecordFitter
from ._outcome import Outcome, WaitError
from ._reader import (
    CollectingWaiter,
    Collector,
    EventWaiter,
    FutureWaiter,
    LogTail,
    ReaderSettings,
    RunReader,
    Waiter,
    decode_entry,
)
from ._state import RunState
from .backends import backend_from_url
from .backends.base import Append, Backend, Entry
from .events import NodeResult, Record, RunStarted, check_run_id

__all__ = ["Bus", "BusStatistics", "LogEntry", "connect"]

logger = logging.getLogger("dbtbus")

#: Concurrent direct node-key lookups per run before new waiters just join the run's reader.
_MAX_PROBES: Final = 16
#: The node key under which the latest ``RunStarted`` is also kept, so a probe finds the graph in one lookup
#: (unique ids never start with "@").
RUN_KEY: Final = "@run"



@dataclass(frozen=True, slots=True)
class BusStatistics:
    """A snapshot of what a :class:`Bus` holds: ``readers`` maps each run it is reading to its pending waiters
    (one reader per run, however many waiters)."""

    readers: Mapping[str, int]

    @property
    def waiters(self) -> int:
        return sum(self.readers.values())


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A record as ``subscribe`` yields it, with the cursor to resume just after it."""

    cursor: str
    record: Record


class Bus:
    """A connection to a backend that publishes and awaits per-node results of dbt runs.

    Use it as an async context manager (``async with dbtbus.connect(url) as bus``): it owns the readers
    that serve waiters, one per run however many waiters that run has.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        read_block: float = 1.0,
        read_batch: int = 1000,
        linger: float = 5.0,
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
        url: str | None = None,
    ) -> None:
        if max_record_size < MIN_RECORD_SIZE:
            raise ValueError(f"max_record_size must be at least {MIN_RECORD_SIZE} bytes, got {max_record_size!r}")
        self.backend = backend
        self.url = url
        self.read_block = read_block
        self.read_batch = read_batch
        self.linger = linger
        self.max_record_size = max_record_size
        self._fitter = RecordFitter(max_record_size)
        #: Idempotency keys of this bus's appends: a backend retry after a lost reply stores nothing twice.
        self._key_prefix = f"{os.getpid()}-{secrets.token_hex(6)}"
        self._key_count = itertools.count()
        self._readers: dict[str, RunReader] = {}
        self._reader_settings = ReaderSettings(backend, read_block, read_batch, linger, max_record_size)
        self._probes: dict[str, int] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        self._asyncio_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<dbtbus.Bus {redact_url(self.url) if self.url else type(self.backend).__name__}>"

    # ------------------------------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Bus:
        if self._task_group is not None or self._closed:
            raise DbtBusError("a Bus can be entered only once")
        await self.backend.open()
        self._asyncio_loop = asyncio.get_running_loop() if sniffio.current_async_library() == "asyncio" else None
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        task_group, self._task_group = self._task_group, None
        self._closed = True
        try:
            if task_group is not None:
                task_group.cancel_scope.cancel()
                # The readers never raise; the caller's own exception (if any) propagates unwrapped.
                await task_group.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                await self.backend.aclose()
        return None

    def _require_open(self) -> anyio.abc.TaskGroup:
        if self._task_group is None:
            state = "closed" if self._closed else "not open"
            raise DbtBusError(f"the bus is {state}: use 'async with dbtbus.connect(url) as bus:'")
        return self._task_group

    # ------------------------------------------------------------------------------------------ publishing

    async def publish(
        self,
        records: Record | Iterable[Record],
        *,
        keys: Sequence[str] | None = None,
        holder: str | None = None,
        expire_after: float | None = None,
    ) -> list[str]:
        """Append records to their runs' logs (a node's terminal record also under its node key).

        Records of one call may belong to several runs; each run's records are appended in one call to the
        backend, in order (a reader sees all of them or none, where the backend can). Returns the cursors,
        in the order given.

        A record over ``max_record_size`` encoded bytes has its free text (message, compiled code, error)
        truncated with a visible marker until it fits; one that still does not fit raises
        :class:`~dbtbus.RecordTooLarge` before anything of the call is stored. ``keys`` (one per record,
        unique within its run) make the appends idempotent on backends that honour them: a caller that
        retries after a lost reply passes the same keys again. Without them the bus makes its own, which
        covers the backend's own retries. ``holder`` (a producer's lease holder, the one it claimed the run
        with) fences the appends on backends that honour it: once another producer has claimed the run, they
        are refused whole with :class:`~dbtbus.RunClaimed` (see :attr:`~dbtbus.backends.base.Backend.fenced_appends`).
        ``expire_after`` (seconds) has the runs' keys expire that long after this append instead of being kept
        for ever, in the same atomic step on backends that honour it
        (:attr:`~dbtbus.backends.base.Backend.expiring_appends`); on the others, call :meth:`expire_run` after.
        """
        batch = [records] if not isinstance(records, Iterable) else list(records)
        return await self.publish_encoded(
            [(record, None) for record in batch], keys=keys, holder=holder, expire_after=expire_after
        )

    def _fit(self, record: Record, data: bytes | None = None) -> tuple[Record, bytes]:
        """``record`` and its wire bytes within ``max_record_size`` (``data``, its encoding, is reused if it fits)."""
        if data is not None and len(data) <= self.max_record_size:
            return record, data
        fit = self._fitter.fit_encoded(record)
        if fit is None:
            what = getattr(record, "unique_id", type(record).__name__)
            raise RecordTooLarge(
                f"a record of run {record.run_id!r} ({what}) does not fit the {self.max_record_size}-byte "
                "record limit even with its text truncated; nothing of this call was stored"
            )
        return fit

    async def publish_encoded(
        self,
        batch: Sequence[tuple[Record, bytes | None]],
        *,
        keys: Sequence[str] | None = None,
        holder: str | None = None,
        expire_after: float | None = None,
    ) -> list[str]:
        """:meth:`publish`, where each record may come with its wire bytes (:func:`dbtbus.events.encode`).

        The producer's door into the bus (as ``handle_request`` is an httpx client's into its transport): the
        publisher fits each record to its size limit once and keeps the bytes it published, so they are not
        encoded twice. Bytes that are not the record's encoding store a different record than the one given:
        pass ``None`` when unsure. A record without bytes, or over this bus's ``max_record_size``, is fitted
        here, as :meth:`publish` does."""
        if keys is not None and len(keys) != len(batch):
            raise ValueError(f"publish got {len(batch)} records and {len(keys)} keys")
        fits = [self._fit(record, data) for record, data in batch]
        by_run: dict[str, list[tuple[int, Append]]] = {}
        for index, (fitted, data) in enumerate(fits):
            node = fitted.unique_id if isinstance(fitted, NodeResult) else None
            if isinstance(fitted, RunStarted):
                node = RUN_KEY
            key = keys[index] if keys is not None else f"{self._key_prefix}:{next(self._key_count)}"
            by_run.setdefault(fitted.run_id, []).append((index, Append(data, node, key, holder, expire_after)))
        for run_id in by_run:
            check_run_id(run_id)
        cursors = [""] * len(batch)
        for run_id, items in by_run.items():
            appended = await self.backend.append(run_id, [item for _, item in items])
            for (index, _), cursor in zip(items, appended, strict=True):
                cursors[index] = cursor
        return cursors

    async def acquire_lease(
        self, run_id: str, holder: str, ttl: float, attempt: int = 1, *, expire_after: float | None = None
    ) -> None:
        """Claim the run's ``attempt`` for ``holder`` (a second producer of it gets :class:`~dbtbus.RunClaimed`).

        ``expire_after`` is the expiry the producer's appends carry: a backend with expiring appends gives the
        claim the same one (a backend without them is called as before).
        """
        if self.backend.expiring_appends:
            await self.backend.acquire_lease(run_id, holder, ttl, attempt, expire_after=expire_after)
        else:
            await self.backend.acquire_lease(run_id, holder, ttl, attempt)

    async def renew_lease(self, run_id: str, holder: str, ttl: float) -> bool | None:
        return await self.backend.renew_lease(run_id, holder, ttl)

    async def release_lease(self, run_id: str, holder: str) -> None:
        await self.backend.release_lease(run_id, holder)

    # ------------------------------------------------------------------------------------------ waiting

    async def wait(
        self,
        run_id: str,
        unique_id: str,
        *,
        timeout: float | None = None,
        include_tests: bool = False,
        min_attempt: int | None = None,
    ) -> NodeResult:
        """Wait for a node of a run and return its result, or raise why it will never have a usable one.

        Returns the node's :class:`~dbtbus.events.NodeResult` when its status is success-like (success,
        pass, warn, no-op, reused). Otherwise raises, as soon as the outcome is certain:

        * :class:`~dbtbus.NodeFailed` — the node failed (error, fail, runtime error, partial success); with
          ``include_tests=True`` also when one of the tests attached to it fails;
        * :class:`~dbtbus.UpstreamFailed` — an ancestor failed in a way dbt propagates (``.cause``);
        * :class:`~dbtbus.NodeNotInRun` — the run started and its selected graph lacks the node;
        * :class:`~dbtbus.NodeNotRun` — the run ended without running it;
        * :class:`~dbtbus.ProducerLost` — the producer's lease expired before the run finished;
        * :class:`~dbtbus.WaitTimeout` — ``timeout`` seconds passed first (``None``: wait forever; ``0``:
          answer only what is known now);
        * :class:`~dbtbus.BackendRejected` — the backend refused (permissions, authentication): at once.

        ``min_attempt=N`` answers only from attempt ``N`` of the run on (a retry's waiter never gets an
        earlier attempt's answer). A waiter may arrive before the run starts (it waits) or after the node
        finished (it returns at once).
        """
        return (
            await self.outcome(
                run_id, unique_id, timeout=timeout, include_tests=include_tests, min_attempt=min_attempt
            )
        ).unwrap()

    async def outcome(
        self,
        run_id: str,
        unique_id: str,
        *,
        timeout: float | None = None,
        include_tests: bool = False,
        min_attempt: int | None = None,
    ) -> Outcome:
        """Like :meth:`wait`, but return the :class:`~dbtbus.Outcome` as data instead of raising it.

        A timeout gives an outcome of kind ``TIMEOUT``. Only errors that are not about the node (the bus is
        closed, the backend rejected the read) are raised.
        """
        self._require_open()
        deadline = _deadline(timeout)
        result: Outcome | DbtBusError | None = None
        if timeout is None:  # no cancel scope to keep alive for each of thousands of waiters
            result = await self._settle(run_id, unique_id, include_tests, min_attempt)
        elif deadline == 0:  # what is known now: a look at the stored records, no waiting (and no cancel scope)
            result = await self._settle(run_id, unique_id, include_tests, min_attempt, answer_now=True)
        elif self._asyncio_loop is not None:
            # On asyncio a timer handle on the waiter's future replaces a cancel scope per waiter: half the
            # CPU to register 10,000 timed waiters and ~800 B less memory each.
            result = await self._settle(
                run_id, unique_id, include_tests, min_attempt, expires_at=anyio.current_time() + deadline
            )
        else:
            with anyio.move_on_after(deadline):
                result = await self._settle(run_id, unique_id, include_tests, min_attempt)
        if result is None:
            return Outcome(OutcomeKind.TIMEOUT, run_id, unique_id, timeout=deadline)
        if isinstance(result, DbtBusError):
            raise result
        return result

    async def _settle(
        self,
        run_id: str,
        unique_id: str,
        include_tests: bool,
        min_attempt: int | None,
        answer_now: bool = False,
        expires_at: float | None = None,
    ) -> Outcome | DbtBusError | None:
        if run_id not in self._readers and min_attempt is None and self._probes.get(run_id, 0) < _MAX_PROBES:
            # A late waiter usually wants a node that already succeeded: a few key lookups, no log replay.
            if expires_at is None:
                probed = await self._probe_quietly(run_id, unique_id, include_tests)
            else:
                probed = None
                with anyio.move_on_after(expires_at - anyio.current_time()):  # at most _MAX_PROBES of these
                    probed = await self._probe_quietly(run_id, unique_id, include_tests)
            if probed is not None:
                return probed
        if answer_now:
            # timeout=0: what the log says now, without waiting for anything more to be appended.
            state = await self.run_state(run_id)
            outcome = state.outcome(unique_id, include_tests=include_tests, min_attempt=min_attempt)
            return outcome if outcome.terminal else None
        reader = self._reader(run_id)
        loop = self._asyncio_loop
        waiter: Waiter
        expiry: asyncio.TimerHandle | None = None
        if loop is not None:
            future: asyncio.Future[None] = loop.create_future()
            waiter = FutureWaiter(unique_id, include_tests, min_attempt, future)
            if expires_at is not None:  # the waiter's outcome stays None: the caller's TIMEOUT
                expiry = loop.call_at(expires_at, _expire, future)
        else:
            waiter = EventWaiter(unique_id, include_tests, min_attempt)
        reader.add(waiter)
        try:
            if loop is not None:
                await future  # (not waiter.settled(): a coroutine frame less for each of thousands of waiters)
            else:
                await waiter.settled()
        finally:
            if expiry is not None:
                expiry.cancel()
            reader.discard(waiter)
        return waiter.outcome

    async def probe(self, run_id: str, unique_id: str, *, include_tests: bool = False) -> Outcome | None:
        """Is the node already done? A few key lookups on any backend, no log replay.

        Returns a ``SUCCESS`` outcome when the node's stored record (and, with ``include_tests``, every test
        of it in the run's latest graph) succeeded — a success stands whatever attempt comes next — and
        ``None`` for anything else (pending, failed, unknown): ask :meth:`outcome` for the full answer.
        """
        self._require_open()
        record = await self._node_record(run_id, unique_id)
        if record is None or not record.ok:
            return None
        if include_tests:
            started = await self._stored(run_id, RUN_KEY)
            if not isinstance(started, RunStarted) or started.graph is None:
                return None
            tests = [uid for uid, node in started.graph.items() if unique_id in node.parents and _is_test(node)]
            for test in tests:
                test_record = await self._node_record(run_id, test)
                if test_record is None or not test_record.ok:
                    return None
        return Outcome(OutcomeKind.SUCCESS, run_id, unique_id, record=record, attempt=record.attempt)

    async def _probe_quietly(self, run_id: str, unique_id: str, include_tests: bool) -> Outcome | None:
        self._probes[run_id] = self._probes.get(run_id, 0) + 1
        try:
            return await self.probe(run_id, unique_id, include_tests=include_tests)
        except BackendRejected:
            raise
        except BackendError as exc:
            logger.warning("dbtbus: looking up %s in run %r failed: %s", unique_id, run_id, exc)
            return None
        finally:
            self._probes[run_id] -= 1
            if not self._probes[run_id]:
                del self._probes[run_id]

    async def run_started(self, run_id: str) -> RunStarted | None:
        """The run's latest ``RunStarted`` as stored (one key lookup, no log replay), or ``None`` when the run
        has never been started on this bus."""
        self._require_open()
        record = await self._stored(run_id, RUN_KEY)
        return record if isinstance(record, RunStarted) else None

    async def _stored(self, run_id: str, key: str) -> Record | None:
        data = await self.backend.get_node(run_id, key)
        return None if data is None else decode_entry(run_id, Entry("", data), self.max_record_size)

    async def _node_record(self, run_id: str, unique_id: str) -> NodeResult | None:
        record = await self._stored(run_id, unique_id)
        return record if isinstance(record, NodeResult) and record.unique_id == unique_id else None

    def _reader(self, run_id: str) -> RunReader:
        reader = self._readers.get(run_id)
        if reader is None:
            reader = self._readers[run_id] = RunReader(self._reader_settings, run_id, self._forget_reader)
            self._require_open().start_soon(reader.run, name=f"dbtbus reader {run_id}")
        return reader

    def _forget_reader(self, reader: RunReader) -> None:
        if self._readers.get(reader.run_id) is reader:
            del self._readers[reader.run_id]

    def statistics(self) -> BusStatistics:
        """What the bus holds right now: each run it reads and its pending waiters (anyio's ``statistics()``)."""
        return BusStatistics(readers={run_id: reader.count for run_id, reader in self._readers.items()})

    async def as_completed(
        self,
        run_id: str,
        unique_ids: Iterable[str],
        *,
        timeout: float | None = None,
        include_tests: bool = False,
        min_attempt: int | None = None,
    ) -> AsyncIterator[Outcome]:
        """Yield one :class:`~dbtbus.Outcome` per node, in the order the outcomes become known.

        Every node is yielded exactly once; nodes still pending when ``timeout`` passes are yielded as
        ``TIMEOUT`` outcomes. All the nodes share the run's one reader. As with :meth:`outcome`, only errors
        that are not about a node (the bus is closed, the backend rejected the read) are raised.
        """
        self._require_open()
        wanted = list(dict.fromkeys(unique_ids))
        limit = _deadline(timeout)
        deadline = anyio.current_time() + limit
        reader = self._reader(run_id)
        collector = Collector()
        waiters = [CollectingWaiter(uid, include_tests, min_attempt, collector) for uid in wanted]
        remaining = len(waiters)
        try:
            for waiter in waiters:
                reader.add(waiter)
            while remaining:
                if not collector.done:
                    with anyio.move_on_after(deadline - anyio.current_time()):
                        await collector.event.wait()
                    collector.event = anyio.Event()
                    if not collector.done:  # the deadline passed
                        break
                while collector.done:
                    done = collector.done.popleft()
                    remaining -= 1
                    yield _settled(done.outcome)
            for waiter in waiters:
                if waiter.outcome is None:
                    reader.discard(waiter)
                    remaining -= 1
                    yield Outcome(OutcomeKind.TIMEOUT, run_id, waiter.unique_id, timeout=limit)
        finally:
            for waiter in waiters:
                if waiter.outcome is None:
                    reader.discard(waiter)

    async def wait_many(
        self,
        run_id: str,
        unique_ids: Iterable[str],
        *,
        timeout: float | None = None,
        include_tests: bool = False,
        min_attempt: int | None = None,
        return_exceptions: bool = False,
    ) -> dict[str, NodeResult | WaitError]:
        """Wait for several nodes of a run; return ``{unique_id: result}``.

        The first error is raised as soon as it is known, unless ``return_exceptions=True``, in which case
        every node maps to its result or its error.
        """
        results: dict[str, NodeResult | WaitError] = {}
        iterator = self.as_completed(
            run_id, unique_ids, timeout=timeout, include_tests=include_tests, min_attempt=min_attempt
        )
        try:
            async for outcome in iterator:
                if outcome.ok:
                    results[outcome.unique_id] = outcome.unwrap()
                    continue
                error = outcome.error()
                if not return_exceptions:
                    raise error
                results[outcome.unique_id] = error
        finally:
            await iterator.aclose()  # type: ignore[attr-defined]
        return results

    # ------------------------------------------------------------------------------------------ reading

    def _tail(self, run_id: str, cursor: str | None = None) -> LogTail:
        return LogTail(self.backend, run_id, batch=self.read_batch, max_record_size=self.max_record_size, cursor=cursor)

    async def history(self, run_id: str, from_cursor: str | None = None) -> AsyncIterator[LogEntry]:
        """Yield every record the run's log holds now (after ``from_cursor``), in order, then stop."""
        self._require_open()
        tail = self._tail(run_id, from_cursor)
        while True:
            batch = await tail.read(0)
            for cursor, record in batch.records:
                yield LogEntry(cursor, record)
            if not batch.more:
                return

    async def subscribe(
        self, run_id: str, from_cursor: str | None = None, *, follow_attempts: bool = False
    ) -> AsyncIterator[LogEntry]:
        """Yield every record of a run, in order, from the start (or just after ``from_cursor``), live.

        Ends after the run's finished or crashed record (with ``follow_attempts=True`` it keeps following,
        for a producer that retries the run). Raises :class:`~dbtbus.RunLost` when the producer's lease
        expires mid-run, and :class:`~dbtbus.RunGone` when the run vanished (deleted, expired, flushed) — at
        once, when its log is empty and the backend's tombstone says it was deleted or expired. Undecodable
        entries are logged and skipped; they stay in the backend.
        """
        self._require_open()
        tail = self._tail(run_id, from_cursor)
        while True:
            batch = await tail.read(min(self.read_block, tail.liveness.interval))
            for cursor, record in batch.records:
                yield LogEntry(cursor, record)
                if record is tail.state.ending and not follow_attempts:
                    return
            if not batch.records and not batch.more and await tail.check_tombstone():
                raise RunGone(run_id=run_id, tombstone=True)
            if not batch.records and not batch.more and await tail.check_liveness():
                if tail.state.gone:
                    raise RunGone(run_id=run_id)
                raise RunLost(run_id=run_id)

    async def run_state(self, run_id: str) -> RunState:
        """Read a run's whole log once and return what it says (a snapshot; the lease is checked).

        A snapshot was not watching while the producer lived, so it dates the producer's last sign of life by
        its records: a run whose lease is absent and whose last record is older than one heartbeat plus 2.5
        lease periods (17.5 s at the default heartbeat) is ``lost``, not forever ``running``.
        """
        self._require_open()
        tail = self._tail(run_id)
        while (await tail.read(0)).more:
            pass
        await tail.check_tombstone()  # an empty log: deleted or expired (status GONE), or not started yet
        tail.liveness.from_records(datetime.now(timezone.utc))
        await tail.check_liveness()
        return tail.state

    # ------------------------------------------------------------------------------------------ retention

    async def list_runs(self) -> list[str]:
        return sorted(await self.backend.list_runs())

    async def expire_run(self, run_id: str, ttl: float) -> None:
        await self.backend.expire_run(run_id, ttl)

    async def delete_run(self, run_id: str) -> None:
        await self.backend.delete_run(run_id)


def _is_test(node: Any) -> bool:
    from ._dbt.graph import is_test

    return is_test(node)


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _deadline(timeout: float | None) -> float:
    if timeout is None:
        return math.inf
    if timeout < 0 or math.isnan(timeout):
        raise ValueError(f"timeout must be a non-negative number of seconds or None, got {timeout!r}")
    return float(timeout)


def _settled(outcome: Outcome | DbtBusError | None) -> Outcome:
    """A resolved waiter's outcome; the error it was resolved with (not about its node) is raised."""
    if isinstance(outcome, DbtBusError):
        raise outcome
    if outcome is None:  # pragma: no cover - a collected waiter is always resolved
        raise DbtBusError("a waiter was reported done without an outcome")
    return outcome


def connect(url: str | Backend = "memory://", **options: Any) -> Bus:
    """Return a :class:`Bus` on the backend a URL names; use it with ``async with``.

    ``url`` is ``memory://[name]``, ``redis://…``, ``rediss://…``, ``unix://…``, ``xcom://`` or the scheme of
    a backend registered under the ``dbtbus.backends`` entry-point group (or a ready Backend instance).
    Options for the bus itself (``read_block``, ``read_batch``, ``linger``, ``max_record_size``) are taken
    out; the rest go to the backend.
    """
    bus_options = {
        key: options.pop(key) for key in ("read_block", "read_batch", "linger", "max_record_size") if key in options
    }
    if isinstance(url, Backend):
        if options:
            raise TypeError(f"unexpected options for a ready backend: {sorted(options)}")
        return Bus(url, **bus_options)
    return Bus(backend_from_url(url, **options), url=url, **bus_options)
