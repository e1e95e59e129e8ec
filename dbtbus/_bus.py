"""The bus: publishing, waiting, subscribing — one implementation above every backend."""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import anyio
import anyio.abc
import sniffio

from ._exceptions import BackendError, DbtBusError, DecodeError, NodeNotRun, ProducerLost, WaitError, WaitTimeout
from ._state import ALL, Outcome, RunState
from .backends import backend_from_url
from .backends.base import Append, Backend, Entry
from .events import NodeResult, Record, decode, encode

__all__ = ["Bus", "LogEntry", "NodeOutcome", "connect"]

logger = logging.getLogger("dbtbus")

#: Concurrent direct node-key lookups per run before new waiters just join the run's reader.
_MAX_PROBES: Final = 16


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A record as ``subscribe`` yields it, with the cursor to resume just after it."""

    cursor: str
    record: Record


@dataclass(frozen=True, slots=True)
class NodeOutcome:
    """One node's outcome as ``as_completed`` yields it: exactly one of ``result`` and ``error`` is set."""

    unique_id: str
    result: NodeResult | None = None
    error: WaitError | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None

    def unwrap(self) -> NodeResult:
        """Return the result, or raise the error."""
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class _Waiter:
    """One pending ``wait``; resolved by the run's reader. Kept small: 10,000 of them must stay cheap."""

    __slots__ = ("include_tests", "outcome", "unique_id")

    def __init__(self, unique_id: str, include_tests: bool) -> None:
        self.unique_id = unique_id
        self.include_tests = include_tests
        self.outcome: Outcome | None = None

    def resolve(self, outcome: Outcome) -> None:
        raise NotImplementedError

    async def settled(self) -> None:
        raise NotImplementedError


class _FutureWaiter(_Waiter):
    """On asyncio a bare future is a third of an ``anyio.Event`` (which wraps an ``asyncio.Event`` and a deque)."""

    __slots__ = ("future",)

    def __init__(self, unique_id: str, include_tests: bool, future: asyncio.Future[None]) -> None:
        super().__init__(unique_id, include_tests)
        self.future = future

    def resolve(self, outcome: Outcome) -> None:
        self.outcome = outcome
        if not self.future.done():
            self.future.set_result(None)

    async def settled(self) -> None:
        await self.future


class _EventWaiter(_Waiter):
    __slots__ = ("event",)

    def __init__(self, unique_id: str, include_tests: bool) -> None:
        super().__init__(unique_id, include_tests)
        self.event = anyio.Event()

    def resolve(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.event.set()

    async def settled(self) -> None:
        await self.event.wait()


class _CollectingWaiter(_Waiter):
    """A waiter of ``as_completed``: many of them feed one collector instead of owning an event each."""

    __slots__ = ("collector",)

    def __init__(self, unique_id: str, include_tests: bool, collector: _Collector) -> None:
        super().__init__(unique_id, include_tests)
        self.collector = collector

    def resolve(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.collector.done.append(self)
        self.collector.event.set()


class _Collector:
    __slots__ = ("done", "event")

    def __init__(self) -> None:
        self.done: deque[_Waiter] = deque()
        self.event = anyio.Event()


class _Liveness:
    """Decides when a run's producer is lost, from the backend's lease. Shared by readers and subscribers."""

    def __init__(self, backend: Backend, state: RunState) -> None:
        self.backend = backend
        self.state = state
        self.next_check = 0.0

    @property
    def interval(self) -> float:
        started = self.state.started
        # Half the heartbeat: a producer whose lease (1.5 × heartbeat) lapsed is noticed within 2 × heartbeat.
        return max(started.heartbeat_interval / 2, 0.01) if started is not None else math.inf

    def watching(self) -> bool:
        return self.state.started is not None and self.state.ending is None and not self.state.lost

    async def check(self) -> bool:
        """Check the lease if it is time; return True when this check found the producer lost."""
        if not self.watching():
            return False
        now = anyio.current_time()
        if now < self.next_check:
            return False
        self.next_check = now + self.interval
        lease = await self.backend.get_lease(self.state.run_id)
        if lease is not None and lease.alive:
            return False
        return self.state.mark_lost()


class _RunReader:
    """The one reader of a run in this bus: reads its log once and resolves every waiter on it."""

    def __init__(self, bus: Bus, run_id: str) -> None:
        self.bus = bus
        self.run_id = run_id
        self.state = RunState(run_id)
        self.liveness = _Liveness(bus.backend, self.state)
        self.waiters: dict[str, set[_Waiter]] = {}
        self.count = 0
        self.cursor: str | None = None
        self.caught_up = False
        self.idle_since: float | None = anyio.current_time()
        self.scope = anyio.CancelScope()
        self.read_scope: anyio.CancelScope | None = None
        self.recheck: dict[str, None] = {}

    # ------------------------------------------------------------------------------------------ waiters

    def add(self, waiter: _Waiter) -> None:
        if self.caught_up:
            outcome = self.state.outcome(waiter.unique_id, include_tests=waiter.include_tests)
            if outcome is not None and not _run_level(outcome):
                waiter.resolve(outcome)
                return
            if outcome is not None:
                # "The run ended" / "the producer is lost" can be overtaken by a retry's new attempt already
                # in the log: answer only after one more read.
                self.recheck[waiter.unique_id] = None
                self._interrupt_read()
        self.waiters.setdefault(waiter.unique_id, set()).add(waiter)
        self.count += 1
        self.idle_since = None

    def discard(self, waiter: _Waiter) -> None:
        bucket = self.waiters.get(waiter.unique_id)
        if bucket is not None and waiter in bucket:
            bucket.remove(waiter)
            if not bucket:
                del self.waiters[waiter.unique_id]
            self._one_less()

    def _one_less(self) -> None:
        self._fewer(1)

    def _fewer(self, n: int) -> None:
        self.count -= n
        if self.count == 0:
            self.idle_since = anyio.current_time()
            if self.read_scope is not None:  # do not sit in a long blocking read past the linger
                self.read_scope.deadline = min(self.read_scope.deadline, self.idle_since + self.bus.linger)

    def _interrupt_read(self) -> None:
        if self.read_scope is not None:
            self.read_scope.cancel()

    def dispatch(self, changed: dict[str, None] | None) -> None:
        uids = list(self.waiters) if changed is ALL else [uid for uid in changed if uid in self.waiters]
        for uid in uids:
            bucket = self.waiters[uid]
            # Decide once per node (and include_tests flag), not once per waiter: 10,000 waiters on one node
            # must not mean 10,000 evaluations before the first of them runs.
            decided: dict[bool, Outcome | None] = {}
            still: set[_Waiter] = set()
            for waiter in bucket:
                flag = waiter.include_tests
                if flag not in decided:
                    decided[flag] = self.state.outcome(uid, include_tests=flag)
                outcome = decided[flag]
                if outcome is None:
                    still.add(waiter)
                else:
                    waiter.resolve(_own_copy(outcome))
            resolved = len(bucket) - len(still)
            if still:
                self.waiters[uid] = still
            else:
                del self.waiters[uid]
            if resolved:
                self._fewer(resolved)

    def fail_all(self, error: DbtBusError) -> None:
        for bucket in self.waiters.values():
            for waiter in bucket:
                waiter.resolve(
                    WaitError(
                        f"the reader of run {self.run_id!r} failed: {error}",
                        run_id=self.run_id,
                        unique_id=waiter.unique_id,
                    )
                )
        self.waiters.clear()
        self.count = 0

    # ------------------------------------------------------------------------------------------ reading

    async def run(self) -> None:
        try:
            with self.scope:
                await self._loop()
        except Exception as exc:  # a bug or a broken backend must never leave waiters hanging
            logger.exception("dbtbus: the reader of run %r failed", self.run_id)
            self.fail_all(DbtBusError(repr(exc)))
        finally:
            if self.bus._readers.get(self.run_id) is self:
                del self.bus._readers[self.run_id]
            if self.waiters:  # closed under waiters' feet (bus shutting down)
                self.fail_all(DbtBusError("the bus was closed"))

    async def _loop(self) -> None:
        bus = self.bus
        # Node ids whose outcome may have changed, in log order (an ordered set), or ALL.
        changed: dict[str, None] | None = {}
        backoff = 0.0
        while True:
            timeout = 0.0 if not self.caught_up or self.recheck else min(bus.read_block, self.liveness.interval)
            if self.count == 0 and self.idle_since is not None:
                timeout = min(timeout, max(self.idle_since + bus.linger - anyio.current_time(), 0.0))
            entries: list[Entry] = []
            try:
                with anyio.CancelScope() as self.read_scope:
                    entries = await bus.backend.read(self.run_id, self.cursor, limit=bus.read_batch, timeout=timeout)
                self.read_scope = None
                backoff = 0.0
            except BackendError as exc:
                self.read_scope = None
                backoff = min(max(backoff * 2, 0.05), 5.0)
                logger.warning("dbtbus: reading run %r failed (%s); retrying in %.2f s", self.run_id, exc, backoff)
                await anyio.sleep(backoff)
                continue
            if entries:
                batch_changed = self._fold(entries)
                changed = ALL if changed is ALL or batch_changed is ALL else {**changed, **batch_changed}
            if len(entries) < bus.read_batch:
                if not self.caught_up:
                    self.caught_up = True
                    changed = ALL
                if self.recheck and changed is not ALL:
                    changed.update(self.recheck)
                self.recheck = {}
                if changed is ALL or changed:
                    self.dispatch(changed)
                changed = {}
                try:
                    if await self.liveness.check():
                        self.dispatch(ALL)
                except BackendError as exc:
                    logger.warning("dbtbus: checking the lease of run %r failed: %s", self.run_id, exc)
            if self.count == 0 and self.idle_since is not None and anyio.current_time() - self.idle_since >= bus.linger:
                return

    def _fold(self, entries: Sequence[Entry]) -> dict[str, None] | None:
        changed: dict[str, None] | None = {}
        for entry in entries:
            self.cursor = entry.cursor
            record = self.bus._decode_entry(self.run_id, entry)
            if record is None:
                continue
            result = self.state.apply(record)
            if result is ALL or changed is ALL:
                changed = ALL
            else:
                changed.update(dict.fromkeys(result))
        return changed


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
        url: str | None = None,
    ) -> None:
        self.backend = backend
        self.url = url
        self.read_block = read_block
        self.read_batch = read_batch
        self.linger = linger
        self._readers: dict[str, _RunReader] = {}
        self._probes: dict[str, int] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        self._asyncio_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<dbtbus.Bus {self.url or type(self.backend).__name__}>"

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

    async def publish(self, records: Record | Iterable[Record]) -> list[str]:
        """Append records to their runs' logs (a node's terminal record also under its node key).

        Records of one call may belong to several runs; each run's records keep their order. Returns the
        cursors, in the order given.
        """
        batch = [records] if not isinstance(records, Iterable) else list(records)
        by_run: dict[str, list[tuple[int, Append]]] = {}
        for index, record in enumerate(batch):
            node = record.unique_id if isinstance(record, NodeResult) else None
            by_run.setdefault(record.run_id, []).append((index, Append(encode(record), node)))
        cursors = [""] * len(batch)
        for run_id, items in by_run.items():
            appended = await self.backend.append(run_id, [item for _, item in items])
            for (index, _), cursor in zip(items, appended, strict=True):
                cursors[index] = cursor
        return cursors

    async def renew_lease(self, run_id: str, holder: str, ttl: float) -> None:
        await self.backend.renew_lease(run_id, holder, ttl)

    async def release_lease(self, run_id: str, holder: str) -> None:
        await self.backend.release_lease(run_id, holder)

    # ------------------------------------------------------------------------------------------ waiting

    async def wait(
        self, run_id: str, unique_id: str, *, timeout: float | None = None, include_tests: bool = False
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
        * :class:`~dbtbus.WaitTimeout` — ``timeout`` seconds passed first (``None``: wait forever).

        A waiter may arrive before the run starts (it waits) or after the node finished (it returns at once).
        """
        self._require_open()
        outcome: Outcome | None = None
        if timeout is None:  # no cancel scope to keep alive for each of thousands of waiters
            outcome = await self._outcome(run_id, unique_id, include_tests)
        else:
            with anyio.move_on_after(_deadline(timeout)):
                outcome = await self._outcome(run_id, unique_id, include_tests)
        if outcome is None:
            raise WaitTimeout(run_id=run_id, unique_id=unique_id, timeout=_deadline(timeout))
        if isinstance(outcome, WaitError):
            raise outcome
        return outcome

    async def _outcome(self, run_id: str, unique_id: str, include_tests: bool) -> Outcome:
        if run_id not in self._readers and not include_tests and self._probes.get(run_id, 0) < _MAX_PROBES:
            # A late waiter usually wants a node that already succeeded: one key lookup, no log replay.
            record = await self._probe(run_id, unique_id)
            if record is not None and record.status.is_success:
                return record
        reader = self._reader(run_id)
        loop = self._asyncio_loop
        waiter: _Waiter
        if loop is not None:
            waiter = _FutureWaiter(unique_id, include_tests, loop.create_future())
        else:
            waiter = _EventWaiter(unique_id, include_tests)
        reader.add(waiter)
        try:
            await waiter.settled()
        finally:
            reader.discard(waiter)
        assert waiter.outcome is not None
        return waiter.outcome

    async def _probe(self, run_id: str, unique_id: str) -> NodeResult | None:
        self._probes[run_id] = self._probes.get(run_id, 0) + 1
        try:
            data = await self.backend.get_node(run_id, unique_id)
        except BackendError as exc:
            logger.warning("dbtbus: looking up %s in run %r failed: %s", unique_id, run_id, exc)
            return None
        finally:
            self._probes[run_id] -= 1
            if not self._probes[run_id]:
                del self._probes[run_id]
        if data is None:
            return None
        record = self._decode_entry(run_id, Entry("", data))
        return record if isinstance(record, NodeResult) and record.unique_id == unique_id else None

    def _reader(self, run_id: str) -> _RunReader:
        reader = self._readers.get(run_id)
        if reader is None:
            reader = self._readers[run_id] = _RunReader(self, run_id)
            self._require_open().start_soon(reader.run, name=f"dbtbus reader {run_id}")
        return reader

    async def as_completed(
        self,
        run_id: str,
        unique_ids: Iterable[str],
        *,
        timeout: float | None = None,
        include_tests: bool = False,
    ) -> AsyncIterator[NodeOutcome]:
        """Yield one :class:`NodeOutcome` per node, in the order the outcomes become known.

        Every node is yielded exactly once; nodes still pending when ``timeout`` passes are yielded with a
        :class:`~dbtbus.WaitTimeout` error. All the nodes share the run's one reader.
        """
        self._require_open()
        wanted = list(dict.fromkeys(unique_ids))
        deadline = anyio.current_time() + _deadline(timeout)
        reader = self._reader(run_id)
        collector = _Collector()
        waiters = [_CollectingWaiter(uid, include_tests, collector) for uid in wanted]
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
                    yield _to_node_outcome(done.unique_id, done.outcome)
            for waiter in waiters:
                if waiter.outcome is None:
                    reader.discard(waiter)
                    remaining -= 1
                    yield NodeOutcome(
                        waiter.unique_id,
                        error=WaitTimeout(run_id=run_id, unique_id=waiter.unique_id, timeout=_deadline(timeout)),
                    )
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
        return_exceptions: bool = False,
    ) -> dict[str, NodeResult | WaitError]:
        """Wait for several nodes of a run; return ``{unique_id: result}``.

        The first error is raised as soon as it is known, unless ``return_exceptions=True``, in which case
        every node maps to its result or its error.
        """
        results: dict[str, NodeResult | WaitError] = {}
        iterator = self.as_completed(run_id, unique_ids, timeout=timeout, include_tests=include_tests)
        try:
            async for item in iterator:
                if item.error is not None and not return_exceptions:
                    raise item.error
                results[item.unique_id] = item.result if item.result is not None else item.error  # type: ignore[assignment]
        finally:
            await iterator.aclose()  # type: ignore[attr-defined]
        return results

    # ------------------------------------------------------------------------------------------ reading

    async def subscribe(
        self, run_id: str, from_cursor: str | None = None, *, follow_attempts: bool = False
    ) -> AsyncIterator[LogEntry]:
        """Yield every record of a run, in order, from the start (or just after ``from_cursor``).

        Ends after the run's finished or crashed record (with ``follow_attempts=True`` it keeps following,
        for a producer that retries the run). Raises :class:`~dbtbus.ProducerLost` when the producer's lease
        expires mid-run. Undecodable entries are logged and skipped; they stay in the backend.
        """
        self._require_open()
        state = RunState(run_id)
        liveness = _Liveness(self.backend, state)
        cursor = from_cursor
        backoff = 0.0
        while True:
            try:
                entries = await self.backend.read(
                    run_id, cursor, limit=self.read_batch, timeout=min(self.read_block, liveness.interval)
                )
                lost = not entries and await liveness.check()
                backoff = 0.0
            except BackendError as exc:  # an outage pauses the subscription; it resumes from the cursor
                backoff = min(max(backoff * 2, 0.05), 5.0)
                logger.warning("dbtbus: reading run %r failed (%s); retrying in %.2f s", run_id, exc, backoff)
                await anyio.sleep(backoff)
                continue
            for entry in entries:
                cursor = entry.cursor
                record = self._decode_entry(run_id, entry)
                if record is None:
                    continue
                state.apply(record)
                yield LogEntry(entry.cursor, record)
                if state.ending is not None and not follow_attempts:
                    return
            if lost:
                raise ProducerLost(run_id=run_id, unique_id="")

    async def run_state(self, run_id: str) -> RunState:
        """Read a run's whole log once and return what it says (a snapshot, for status displays)."""
        self._require_open()
        state = RunState(run_id)
        cursor: str | None = None
        while True:
            entries = await self.backend.read(run_id, cursor, limit=self.read_batch, timeout=0)
            for entry in entries:
                cursor = entry.cursor
                record = self._decode_entry(run_id, entry)
                if record is not None:
                    state.apply(record)
            if len(entries) < self.read_batch:
                break
        if await _Liveness(self.backend, state).check():
            pass  # state.lost is now set
        return state

    def _decode_entry(self, run_id: str, entry: Entry) -> Record | None:
        try:
            record = decode(entry.data)
        except DecodeError as exc:
            logger.warning(
                "dbtbus: skipping an undecodable entry %s of run %r: %s", entry.cursor or "(node key)", run_id, exc
            )
            return None
        if record.run_id != run_id:
            logger.warning("dbtbus: skipping a record of run %r found in run %r", record.run_id, run_id)
            return None
        return record

    # ------------------------------------------------------------------------------------------ retention

    async def list_runs(self) -> list[str]:
        return sorted(await self.backend.list_runs())

    async def expire_run(self, run_id: str, ttl: float) -> None:
        await self.backend.expire_run(run_id, ttl)

    async def delete_run(self, run_id: str) -> None:
        await self.backend.delete_run(run_id)


def _own_copy(outcome: Outcome) -> Outcome:
    """Each waiter raises its own exception object: a shared one would collect every task's traceback."""
    if not isinstance(outcome, WaitError):
        return outcome  # records are immutable and safely shared
    copy = outcome.__class__.__new__(outcome.__class__)
    copy.__dict__.update(outcome.__dict__)
    copy.args = outcome.args
    return copy


def _run_level(outcome: Outcome) -> bool:
    """True for outcomes that come from the run's state rather than from a record of the node itself."""
    return isinstance(outcome, ProducerLost) or (isinstance(outcome, NodeNotRun) and outcome.record is None)


def _deadline(timeout: float | None) -> float:
    if timeout is None:
        return math.inf
    if timeout < 0 or math.isnan(timeout):
        raise ValueError(f"timeout must be a non-negative number of seconds or None, got {timeout!r}")
    return float(timeout)


def _to_node_outcome(unique_id: str, outcome: Outcome | None) -> NodeOutcome:
    if isinstance(outcome, WaitError):
        return NodeOutcome(unique_id, error=outcome)
    assert outcome is not None
    return NodeOutcome(unique_id, result=outcome)


def connect(url: str | Backend = "memory://", **options: Any) -> Bus:
    """Return a :class:`Bus` on the backend a URL names; use it with ``async with``.

    ``url`` is ``memory://[name]``, ``redis://…``, ``rediss://…``, ``unix://…``, ``xcom://`` or the scheme of
    a backend registered under the ``dbtbus.backends`` entry-point group (or a ready Backend instance).
    Options for the bus itself (``read_block``, ``read_batch``, ``linger``) are taken out; the rest go to
    the backend.
    """
    bus_options = {key: options.pop(key) for key in ("read_block", "read_batch", "linger") if key in options}
    if isinstance(url, Backend):
        if options:
            raise TypeError(f"unexpected options for a ready backend: {sorted(options)}")
        return Bus(url, **bus_options)
    return Bus(backend_from_url(url, **options), url=url, **bus_options)
