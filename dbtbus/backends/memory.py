"""The in-memory backend: ``memory://`` (the process-wide default store) and ``memory://<name>``.

Producer and consumers in one process share a store by name, whichever threads and event loops they run
on: dbt publishes from its worker threads (through the producer's own loop) while waiters sit in the
application's loop. State is guarded by one ``threading.Lock``; a blocked :meth:`MemoryBackend.read` is
woken through its own loop's thread-safe scheduler, so an append never blocks on a reader.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio
import sniffio

from .._exceptions import ConfigurationError, InvalidCursor, RunClaimed
from .._wakeup import capture_scheduler
from .base import (
    DEFAULT_TOMBSTONE_PERIOD,
    Append,
    Backend,
    Entry,
    Lease,
    append_expiry,
    append_holders,
    check_record_sizes,
    claimed_message,
    tombstone_period_option,
)

#: The default cap on one record (bytes), as for Redis: a record is a node's result, not a data set.
DEFAULT_MAX_RECORD_BYTES = 8 * 1024 * 1024

__all__ = ["MemoryBackend", "MemoryStore", "get_store"]


class _KeyIndex:
    """Idempotency key → the log's length once its entry was stored (the entry's cursor), for every key.

    A producer numbers its keys (``<holder>:0``, ``<holder>:1``, …), so keys that continue a holder's
    sequence are kept as one array of positions per holder: 8 bytes a record instead of ~170 for the key's
    string, the cursor's and the dict slot. Any other key (foreign, out of order, after a gap) goes to a
    plain dict; the two never hold the same key, so a lookup is exact either way.
    """

    __slots__ = ("_numbered", "_other")

    def __init__(self) -> None:
        self._numbered: dict[str, tuple[int, array[int]]] = {}  # holder -> (first number, positions)
        self._other: dict[str, int] = {}

    def setdefault(self, key: str, position: int) -> int:
        """The position stored for ``key``, storing ``position`` first where it has none (as dict's)."""
        holder, sep, tail = key.rpartition(":")
        if not (sep and tail.isdigit() and tail.isascii() and (len(tail) == 1 or tail[0] != "0")):
            return self._other.setdefault(key, position)  # not <text>:<a decimal without leading zeros>
        number = int(tail)
        run = self._numbered.get(holder)
        if run is None:  # a holder's first key: the dict only takes its keys once its array exists
            self._numbered[holder] = (number, array("q", (position,)))
            return position
        first, positions = run
        offset = number - first
        if 0 <= offset < len(positions):
            return positions[offset]
        if offset == len(positions) and key not in self._other:
            positions.append(position)
            return position
        return self._other.setdefault(key, position)  # stored there earlier, or out of sequence

    def __len__(self) -> int:
        return sum(len(positions) for _, positions in self._numbered.values()) + len(self._other)


@dataclass(eq=False)
class _Run:
    log: list[bytes] = field(default_factory=list)
    nodes: dict[str, bytes] = field(default_factory=dict)
    lease: tuple[str, float] | None = None  # holder, monotonic deadline
    claim: tuple[str, int] | None = None  # the latest acquire_lease: holder, attempt
    appended: _KeyIndex = field(default_factory=_KeyIndex)  # idempotency key -> log length
    expires_at: float | None = None  # monotonic
    # Readers blocked on this run: each is called (from any thread) once new entries exist.
    wakers: set[Callable[[], None]] = field(default_factory=set)


class MemoryStore:
    """One named store: the shared state behind every ``MemoryBackend`` opened on the same name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        #: A deleted or expired run → when its tombstone lapses (monotonic); an append removes it.
        self._tombstones: dict[str, float] = {}

    def _live_run(self, run_id: str, now: float) -> _Run | None:
        run = self._runs.get(run_id)
        if run is not None and run.expires_at is not None and run.expires_at <= now:
            del self._runs[run_id]
            return None
        return run

    def append(self, run_id: str, items: Sequence[Append], tombstone: float = 0.0) -> list[str]:
        holders = append_holders(items)
        expire_after = append_expiry(items)
        with self._lock:
            now = time.monotonic()
            run = self._live_run(run_id, now)
            if run is not None and run.claim is not None:  # fenced appends: checked before anything changes
                for holder in holders:
                    if holder != run.claim[0]:
                        raise RunClaimed(claimed_message(run_id, holder, None, *run.claim))
            if run is None:
                run = self._runs[run_id] = _Run()
            self._tombstones.pop(run_id, None)  # the run id is in use again: it is not gone
            self._set_expiry(run, run_id, now, expire_after, tombstone)
            cursors = []
            for item in items:
                position = len(run.log) + 1
                if item.key is not None:
                    stored = run.appended.setdefault(item.key, position)
                    if stored != position:  # stored before: positions only grow
                        cursors.append(str(stored))
                        continue
                run.log.append(item.data)
                if item.node is not None:
                    run.nodes[item.node] = item.data
                cursors.append(str(position))
            wakers = list(run.wakers)
            run.wakers.clear()
        for wake in wakers:
            wake()
        return cursors

    def read_now(self, run_id: str, start: int, limit: int) -> list[Entry]:
        with self._lock:
            run = self._live_run(run_id, time.monotonic())
            if run is None:
                return []
            chunk = run.log[start : start + limit]
        return [Entry(str(start + i + 1), data) for i, data in enumerate(chunk)]

    def register_waker(self, run_id: str, start: int, wake: Callable[[], None]) -> bool:
        """Register ``wake`` unless entries past ``start`` already exist (then return False)."""
        with self._lock:
            run = self._live_run(run_id, time.monotonic())
            if run is None:
                run = self._runs[run_id] = _Run()
            if len(run.log) > start:
                return False
            run.wakers.add(wake)
            return True

    def unregister_waker(self, run_id: str, wake: Callable[[], None]) -> None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is not None:
                run.wakers.discard(wake)

    def get_node(self, run_id: str, unique_id: str) -> bytes | None:
        with self._lock:
            run = self._live_run(run_id, time.monotonic())
            return None if run is None else run.nodes.get(unique_id)

    def _run_for_lease(self, run_id: str, now: float) -> _Run:
        run = self._live_run(run_id, now)
        if run is None:
            run = self._runs[run_id] = _Run()
        if run.lease is not None and run.lease[1] <= now:
            run.lease = None
        return run

    def acquire_lease(
        self, run_id: str, holder: str, ttl: float, attempt: int, expire_after: float | None = None
    ) -> None:
        with self._lock:
            now = time.monotonic()
            run = self._run_for_lease(run_id, now)
            owner, owner_attempt = run.claim if run.claim is not None else (None, None)
            live = run.lease[0] if run.lease is not None else None
            if live is not None and live != holder and live != owner:  # an unclaimed (legacy) live lease
                raise RunClaimed(claimed_message(run_id, holder, attempt, live, None))
            superseded = owner_attempt is not None and (
                owner_attempt > attempt or (live == owner and owner_attempt >= attempt)
            )
            if owner is not None and owner != holder and superseded:
                raise RunClaimed(claimed_message(run_id, holder, attempt, owner, owner_attempt))
            if owner == holder and owner_attempt is not None:
                attempt = max(attempt, owner_attempt)
            run.claim = (holder, attempt)
            run.lease = (holder, now + ttl) if ttl > 0 else None
            if expire_after is not None:  # the claim expires as the appends will (Redis's claim key does)
                self._set_expiry(run, run_id, now, expire_after, 0.0)

    def renew_lease(self, run_id: str, holder: str, ttl: float) -> bool:
        with self._lock:
            now = time.monotonic()
            run = self._run_for_lease(run_id, now)
            if run.claim is not None and run.claim[0] != holder:
                raise RunClaimed(claimed_message(run_id, holder, None, *run.claim))
            run.lease = (holder, now + ttl) if ttl > 0 else None
            return run.claim is not None

    def get_lease(self, run_id: str) -> Lease | None:
        with self._lock:
            now = time.monotonic()
            run = self._live_run(run_id, now)
            if run is None or run.lease is None:
                return None
            holder, deadline = run.lease
            if deadline <= now:
                return None
            attempt = run.claim[1] if run.claim is not None and run.claim[0] == holder else None
            return Lease(holder, deadline - now, attempt)

    def release_lease(self, run_id: str, holder: str) -> None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is not None and run.lease is not None and run.lease[0] == holder:
                run.lease = None

    def _bury(self, run_id: str, until: float) -> None:
        """Keep (or lengthen) ``run_id``'s tombstone until ``until``; the caller holds the lock."""
        self._tombstones[run_id] = max(until, self._tombstones.get(run_id, until))

    def _set_expiry(self, run: _Run, run_id: str, now: float, ttl: float | None, tombstone: float) -> None:
        """Expire ``run`` ``ttl`` seconds from ``now`` (``None``: keep it); the caller holds the lock."""
        if ttl is None:
            run.expires_at = None
            return
        run.expires_at = now + ttl
        if tombstone > 0:
            # Set now, while the run is still there: once it expires, no call is left to set it.
            self._tombstones[run_id] = now + max(ttl, 0) + tombstone

    def expires_in(self, run_id: str) -> float | None:
        """Seconds until ``run_id``'s keys expire, as Redis's PTTL tells (``None``: kept for ever, or no run)."""
        with self._lock:
            now = time.monotonic()
            run = self._live_run(run_id, now)
            return None if run is None or run.expires_at is None else run.expires_at - now

    def expire_run(self, run_id: str, ttl: float, tombstone: float = 0.0) -> None:
        with self._lock:
            now = time.monotonic()
            run = self._live_run(run_id, now)
            if run is not None:
                self._set_expiry(run, run_id, now, ttl, tombstone)

    def delete_run(self, run_id: str, tombstone: float = 0.0) -> None:
        with self._lock:
            now = time.monotonic()
            run = self._live_run(run_id, now)
            self._runs.pop(run_id, None)
            # Only a run with keys, as in Redis: a blocked reader's placeholder (an empty _Run) is not a run.
            if run is not None and (run.log or run.nodes or run.claim or run.lease) and tombstone > 0:
                self._bury(run_id, now + tombstone)
            wakers = list(run.wakers) if run is not None else []
        for wake in wakers:  # blocked readers re-read and find an empty log
            wake()

    def run_gone(self, run_id: str) -> bool:
        with self._lock:
            now = time.monotonic()
            until = self._tombstones.get(run_id)
            if until is not None and until <= now:
                del self._tombstones[run_id]
                until = None
            if until is None:
                return False
            # A tombstone set by expire_run stands while the run's keys are still there (its expiry pending):
            # only a run with nothing left in its log is gone. (Readers blocked on it keep an empty _Run.)
            run = self._live_run(run_id, now)
            return run is None or not run.log

    def list_runs(self) -> list[str]:
        with self._lock:
            now = time.monotonic()
            return [run_id for run_id in list(self._runs) if self._live_run(run_id, now) is not None]

    def clear(self) -> None:
        """Forget every run (tests use this to isolate themselves)."""
        with self._lock:
            runs, self._runs = self._runs, {}
            self._tombstones = {}  # as FLUSHDB: nothing of the store is left, tombstones included
        for run in runs.values():
            for wake in run.wakers:
                wake()


_stores: dict[str, MemoryStore] = {}
_stores_lock = threading.Lock()


def get_store(name: str = "") -> MemoryStore:
    """Return the process-wide store called ``name`` (``""`` is the default store of ``memory://``)."""
    with _stores_lock:
        store = _stores.get(name)
        if store is None:
            store = _stores[name] = MemoryStore(name)
        return store


def drop_store(name: str) -> None:
    """Forget the store called ``name`` entirely."""
    with _stores_lock:
        store = _stores.pop(name, None)
    if store is not None:
        store.clear()


def _parse_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.isdigit():
        raise InvalidCursor(f"not a memory-backend cursor: {cursor!r}")
    return int(cursor)


class MemoryBackend(Backend):
    """Runs kept in this process's memory, shared by name. The embedded default.

    ``memory://`` is the process-wide default store, ``memory://name`` (or ``memory:///name``) a named one.
    """

    schemes: tuple[str, ...] = ("memory",)
    idempotent_appends = True
    fenced_leases = True
    fenced_appends = True
    expiring_appends = True
    tombstones = True

    def __init__(
        self,
        store: MemoryStore,
        *,
        max_record_bytes: int | None = DEFAULT_MAX_RECORD_BYTES,
        tombstone_period: float = DEFAULT_TOMBSTONE_PERIOD,
    ) -> None:
        self.store = store
        self.max_record_bytes = max_record_bytes
        self.tombstone_period = tombstone_period

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryBackend:
        parts = urlsplit(url)
        if parts.scheme != "memory":
            raise ConfigurationError(f"not a memory:// URL: {url!r}")
        # The query string is not read (it never was): options come as keyword arguments only.
        merged = dict(options)
        limit = merged.pop("max_record_bytes", DEFAULT_MAX_RECORD_BYTES)
        period = merged.pop("tombstone_period", DEFAULT_TOMBSTONE_PERIOD)
        if merged:
            raise ConfigurationError(
                f"memory:// takes no options but max_record_bytes and tombstone_period, got {sorted(merged)}"
            )
        tombstone_period = tombstone_period_option(period)
        try:
            max_record_bytes = int(limit)
        except (TypeError, ValueError):
            raise ConfigurationError(f"max_record_bytes must be an integer, got {limit!r}") from None
        if max_record_bytes < 1:
            raise ConfigurationError(f"max_record_bytes must be >= 1, got {limit!r}")
        name = (parts.netloc + parts.path).strip("/")
        return cls(get_store(name), max_record_bytes=max_record_bytes, tombstone_period=tombstone_period)

    async def append(self, run_id: str, items: Sequence[Append]) -> list[str]:
        check_record_sizes(run_id, items, self.max_record_bytes)
        return self.store.append(run_id, items, self.tombstone_period)

    async def acquire_lease(
        self, run_id: str, holder: str, ttl: float, attempt: int = 1, *, expire_after: float | None = None
    ) -> None:
        self.store.acquire_lease(run_id, holder, ttl, attempt, expire_after)

    async def read(
        self, run_id: str, after: str | None, *, limit: int = 1000, timeout: float | None = 0
    ) -> list[Entry]:
        start = _parse_cursor(after)
        entries = self.store.read_now(run_id, start, limit)
        if entries or timeout == 0:
            await anyio.lowlevel.checkpoint()
            return entries
        if sniffio.current_async_library() == "asyncio":
            return await self._read_asyncio(run_id, start, limit, timeout)
        event = anyio.Event()
        schedule = capture_scheduler()

        def wake() -> None:
            schedule(event.set)

        if self.store.register_waker(run_id, start, wake):
            try:
                with anyio.move_on_after(timeout):
                    await event.wait()
            finally:
                self.store.unregister_waker(run_id, wake)
        return self.store.read_now(run_id, start, limit)

    async def _read_asyncio(self, run_id: str, start: int, limit: int, timeout: float | None) -> list[Entry]:
        """A blocking read on asyncio: one future and one timer handle — no cancel scope, no anyio.Event, the
        two costs of every wake-up of a run's reader."""
        import asyncio

        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        thread = threading.get_ident()

        def done() -> None:
            if not future.done():
                future.set_result(None)

        def wake() -> None:
            if threading.get_ident() == thread:
                done()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(done)

        if self.store.register_waker(run_id, start, wake):
            expiry = None if timeout is None or timeout == float("inf") else loop.call_later(timeout, done)
            try:
                await future  # a cancellation (the reader's read scope) lands here
            finally:
                if expiry is not None:
                    expiry.cancel()
                self.store.unregister_waker(run_id, wake)
        return self.store.read_now(run_id, start, limit)

    async def get_node(self, run_id: str, unique_id: str) -> bytes | None:
        return self.store.get_node(run_id, unique_id)

    async def renew_lease(self, run_id: str, holder: str, ttl: float) -> bool:
        return self.store.renew_lease(run_id, holder, ttl)

    async def get_lease(self, run_id: str) -> Lease | None:
        return self.store.get_lease(run_id)

    async def release_lease(self, run_id: str, holder: str) -> None:
        self.store.release_lease(run_id, holder)

    async def expire_run(self, run_id: str, ttl: float) -> None:
        self.store.expire_run(run_id, ttl, self.tombstone_period)

    async def delete_run(self, run_id: str) -> None:
        self.store.delete_run(run_id, self.tombstone_period)

    async def run_gone(self, run_id: str) -> bool:
        return self.store.run_gone(run_id)

    async def list_runs(self) -> list[str]:
        return self.store.list_runs()
