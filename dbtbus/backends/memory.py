"""The in-memory backend: ``memory://`` (the process-wide default store) and ``memory://<name>``.

Producer and consumers in one process share a store by name, whichever threads and event loops they run
on: dbt publishes from its worker threads (through the producer's own loop) while waiters sit in the
application's loop. State is guarded by one ``threading.Lock``; a blocked :meth:`MemoryBackend.read` is
woken through its own loop's thread-safe scheduler, so an append never blocks on a reader.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio

from .._exceptions import ConfigurationError, InvalidCursor
from .._wakeup import capture_scheduler
from .base import Append, Backend, Entry, Lease

__all__ = ["MemoryBackend", "MemoryStore", "get_store"]


@dataclass(eq=False)
class _Run:
    log: list[bytes] = field(default_factory=list)
    nodes: dict[str, bytes] = field(default_factory=dict)
    lease: tuple[str, float] | None = None  # holder, monotonic deadline
    expires_at: float | None = None  # monotonic
    # Readers blocked on this run: each is called (from any thread) once new entries exist.
    wakers: set[Callable[[], None]] = field(default_factory=set)


class MemoryStore:
    """One named store: the shared state behind every ``MemoryBackend`` opened on the same name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}

    def _live_run(self, run_id: str, now: float) -> _Run | None:
        run = self._runs.get(run_id)
        if run is not None and run.expires_at is not None and run.expires_at <= now:
            del self._runs[run_id]
            return None
        return run

    def append(self, run_id: str, items: Sequence[Append]) -> list[str]:
        with self._lock:
            run = self._live_run(run_id, time.monotonic())
            if run is None:
                run = self._runs[run_id] = _Run()
            run.expires_at = None
            cursors = []
            for item in items:
                run.log.append(item.data)
                if item.node is not None:
                    run.nodes[item.node] = item.data
                cursors.append(str(len(run.log)))
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

    def renew_lease(self, run_id: str, holder: str, ttl: float) -> None:
        with self._lock:
            now = time.monotonic()
            run = self._live_run(run_id, now)
            if run is None:
                run = self._runs[run_id] = _Run()
            run.lease = (holder, now + ttl)

    def get_lease(self, run_id: str) -> Lease | None:
        with self._lock:
            now = time.monotonic()
            run = self._live_run(run_id, now)
            if run is None or run.lease is None:
                return None
            holder, deadline = run.lease
            if deadline <= now:
                return None
            return Lease(holder, deadline - now)

    def release_lease(self, run_id: str, holder: str) -> None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is not None and run.lease is not None and run.lease[0] == holder:
                run.lease = None

    def expire_run(self, run_id: str, ttl: float) -> None:
        with self._lock:
            run = self._live_run(run_id, time.monotonic())
            if run is not None:
                run.expires_at = time.monotonic() + ttl

    def delete_run(self, run_id: str) -> None:
        with self._lock:
            run = self._runs.pop(run_id, None)
            wakers = list(run.wakers) if run is not None else []
        for wake in wakers:  # blocked readers re-read and find an empty log
            wake()

    def list_runs(self) -> list[str]:
        with self._lock:
            now = time.monotonic()
            return [run_id for run_id in list(self._runs) if self._live_run(run_id, now) is not None]

    def clear(self) -> None:
        """Forget every run (tests use this to isolate themselves)."""
        with self._lock:
            runs, self._runs = self._runs, {}
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

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryBackend:
        if options:
            raise ConfigurationError(f"memory:// takes no options, got {sorted(options)}")
        parts = urlsplit(url)
        if parts.scheme != "memory":
            raise ConfigurationError(f"not a memory:// URL: {url!r}")
        name = (parts.netloc + parts.path).strip("/")
        return cls(get_store(name))

    async def append(self, run_id: str, items: Sequence[Append]) -> list[str]:
        return self.store.append(run_id, items)

    async def read(
        self, run_id: str, after: str | None, *, limit: int = 1000, timeout: float | None = 0
    ) -> list[Entry]:
        start = _parse_cursor(after)
        entries = self.store.read_now(run_id, start, limit)
        if entries or timeout == 0:
            await anyio.lowlevel.checkpoint()
            return entries
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

    async def get_node(self, run_id: str, unique_id: str) -> bytes | None:
        return self.store.get_node(run_id, unique_id)

    async def renew_lease(self, run_id: str, holder: str, ttl: float) -> None:
        self.store.renew_lease(run_id, holder, ttl)

    async def get_lease(self, run_id: str) -> Lease | None:
        return self.store.get_lease(run_id)

    async def release_lease(self, run_id: str, holder: str) -> None:
        self.store.release_lease(run_id, holder)

    async def expire_run(self, run_id: str, ttl: float) -> None:
        self.store.expire_run(run_id, ttl)

    async def delete_run(self, run_id: str) -> None:
        self.store.delete_run(run_id)

    async def list_runs(self) -> list[str]:
        return self.store.list_runs()
