"""The publisher: drains the producer's FIFO, normalises, publishes in batches, heartbeats, ends the run.

It runs in an event loop — its own (a dedicated thread running ``anyio.run``) or the caller's (``ainvoke``) —
and is fed from any thread through :meth:`Publisher.push`, which only appends to a ``collections.deque`` and,
when the publisher sleeps, schedules one wake-up on its loop. dbt never waits for the publisher: a slow or
failing backend makes records queue up (bounded by ``max_buffer``; overflow is logged loudly), never dbt.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import anyio

from .._bus import Bus, connect
from .._wakeup import capture_scheduler
from ..events import Heartbeat, Record, RunCrashed, RunFinished
from ._callback import Item, extract
from ._normalise import Normaliser

logger = logging.getLogger("dbtbus.producer")

_BATCH = 1000


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
    extra: dict[str, Any] = field(default_factory=dict)


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
        self._fifo: deque[Item] = deque()
        self._pending: deque[Record] = deque()
        self._schedule: Callable[[Callable[[], Any]], None] | None = None
        self._wake: anyio.Event | None = None
        self._sleeping = False
        self._ending: Ending | None = None
        self._closed = False
        self._dead = False
        self._failures = 0
        self._dropped = 0
        self.published = 0
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ any thread

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

    def finish(self, ending: Ending) -> None:
        """dbt returned (or died): drain, publish the end of the run, stop."""
        if self._ending is None:
            self._ending = ending
        self._wake_up()

    # ------------------------------------------------------------------------------------------ own thread

    def start_thread(self, url: str, **options: Any) -> None:
        """Run the publisher on a dedicated thread with its own event loop and its own bus on ``url``."""

        async def main() -> None:
            async with connect(url, **options) as bus:
                await self.run(bus)

        def target() -> None:
            try:
                anyio.run(main)
            except BaseException:
                self._dead = True
                logger.exception("dbtbus: the publisher of run %r died; dbt runs on unpublished", self.run_id)
            finally:
                self.done.set()

        self.thread = threading.Thread(target=target, name=f"dbtbus-publisher-{self.run_id}", daemon=True)
        self.thread.start()

    def join(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    # ------------------------------------------------------------------------------------------ the loop

    async def run(self, bus: Bus) -> None:
        """Publish until :meth:`finish` is called and everything is flushed (or ``flush_timeout`` passed)."""
        try:
            self._schedule = capture_scheduler()
            self._wake = anyio.Event()
            await self._renew(bus)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeats, bus)
                while True:
                    self._drain()
                    if self._ending is not None and not self._fifo:
                        break
                    if self._pending and not await self._flush(bus):
                        await anyio.sleep(self._backoff())
                        continue
                    await self._sleep()
                # Heartbeats (and the lease) go on while the run is ended: waiters must never see the producer
                # lost between dbt returning and the not_run / RunFinished records landing.
                with anyio.CancelScope(shield=True):
                    await self._close(bus)
                tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await self._release(bus)
        except BaseException:
            self._dead = True
            self._fifo.clear()
            raise
        finally:
            self.done.set()

    async def _sleep(self) -> None:
        self._wake = anyio.Event()
        self._sleeping = True
        if self._fifo or self._ending is not None:
            self._sleeping = False
            return
        await self._wake.wait()
        if self.batch_linger > 0 and self._ending is None:
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
                self._pending.extend(records)
        overflow = len(self._pending) - self.max_buffer
        if overflow > 0:
            for _ in range(overflow):
                self._pending.popleft()
            self._dropped += overflow
            logger.error(
                "dbtbus: the backend is not keeping up; DROPPED %d records of run %r (%d so far, buffer %d)",
                overflow, self.run_id, self._dropped, self.max_buffer,
            )

    def _backoff(self) -> float:
        return float(min(2.0, 0.05 * 2 ** min(self._failures, 6)))

    async def _flush(self, bus: Bus) -> bool:
        while self._pending:
            batch = list(islice(self._pending, 0, _BATCH))
            try:
                await bus.publish(batch)
            except Exception as exc:
                self._failures += 1
                if self._failures == 1 or self._failures % 20 == 0:
                    logger.warning(
                        "dbtbus: publishing %d records of run %r failed (attempt %d, %d buffered): %r",
                        len(batch), self.run_id, self._failures, len(self._pending), exc,
                    )
                return False
            for _ in batch:
                self._pending.popleft()
            self.published += len(batch)
            self._failures = 0
        return True

    async def _flush_retrying(self, bus: Bus) -> None:
        for _ in range(1_000_000):
            if await self._flush(bus):
                return
            await anyio.sleep(self._backoff())

    async def _renew(self, bus: Bus) -> None:
        try:
            await bus.renew_lease(self.run_id, self.holder, 1.5 * self.heartbeat_interval)
        except Exception as exc:
            logger.warning("dbtbus: renewing the lease of run %r failed: %r", self.run_id, exc)

    async def _heartbeats(self, bus: Bus) -> None:
        while True:
            await anyio.sleep(self.heartbeat_interval)
            await self._renew(bus)
            if self.normaliser.started is None or self._closed:
                continue
            peak = None
            if self.rss is not None:
                try:
                    peak = self.rss()
                except Exception:
                    peak = None
            n = self.normaliser
            beat = Heartbeat(run_id=self.run_id, running=len(n.running), done=len(n.results), peak_rss=peak)
            try:
                await bus.publish(beat)
            except Exception as exc:
                logger.warning("dbtbus: publishing a heartbeat of run %r failed: %r", self.run_id, exc)

    async def _close(self, bus: Bus) -> None:
        ending = self._ending
        assert ending is not None
        self._drain()
        normaliser = self.normaliser
        if ending.grace > 0 and normaliser.running:
            with anyio.move_on_after(ending.grace):
                while normaliser.running:
                    await anyio.sleep(0.02)
                    self._drain()
        self._closed = True
        self._drain()
        results = ending.dbt_results if ending.dbt_results is not None else normaliser.end.results
        self._pending.extend(normaliser.not_run(results))
        end: Record
        if ending.crashed:
            end = RunCrashed(
                run_id=self.run_id,
                error=ending.error or "crashed",
                elapsed=ending.elapsed,
                peak_rss=ending.peak_rss,
                peak_rss_scope=ending.extra.get("peak_rss_scope"),
                exit_code=ending.exit_code,
            )
        else:
            end = RunFinished(
                run_id=self.run_id,
                success=ending.success,
                exit_code=ending.exit_code if ending.exit_code is not None else (0 if ending.success else 1),
                counts=normaliser.counts(),
                elapsed=ending.elapsed,
                peak_rss=ending.peak_rss,
                peak_rss_scope=ending.extra.get("peak_rss_scope"),
                error=ending.error,
            )
        self._pending.append(end)
        with anyio.move_on_after(self.flush_timeout):
            await self._flush_retrying(bus)
        if self._pending:
            logger.error(
                "dbtbus: gave up publishing the last %d records of run %r after %.1fs (backend failing)",
                len(self._pending), self.run_id, self.flush_timeout,
            )
            self._pending.clear()

    async def _release(self, bus: Bus) -> None:
        try:
            await bus.release_lease(self.run_id, self.holder)
            if self.retention is not None:
                await bus.expire_run(self.run_id, self.retention)
        except Exception as exc:
            logger.warning("dbtbus: releasing the lease of run %r failed: %r", self.run_id, exc)
