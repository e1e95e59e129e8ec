"""dbt's ``--log-format json`` lines → the normaliser's input, read from a stream or a blocking source.

Lines are handled one at a time (bounded: a line longer than ``max_line`` bytes is dropped with a warning),
so memory stays flat however long the log. Lines that are not JSON (adapter prints, tracebacks) go to the
``dbtbus.dbt`` logger at INFO — never fatal, never lost; JSON events at warn/error level are forwarded there
too.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import orjson

from .._wakeup import capture_scheduler
from ._callback import Item
from ._normalise import INFO_NODE_EVENTS, LOG_WANTED

__all__ = ["LineParser", "read_lines", "read_on_a_thread"]

logger = logging.getLogger("dbtbus.producer")
dbt_logger = logging.getLogger("dbtbus.dbt")

_LEVELS = {"warn": logging.WARNING, "error": logging.ERROR}


class LineParser:
    """Parses dbt JSON log lines and pushes the wanted events as ``(name, (data, info))``.

    A log at debug level carries NodeStart / NodeFinished (and MarkSkippedChildren, the exact skip causes);
    at dbt's default info level it carries only the result lines (``LogModelResult``, ``LogTestResult``,
    ``SkippingDetails``, ...). The first debug-level line (dbt writes ``MainReportArgs`` right after its
    version, long before any node) tells which: from then on the info-level node lines are left out, so
    each node gets its one terminal record from NodeFinished.
    """

    def __init__(self, push: Callable[[Item], None]) -> None:
        self.push = push
        self.lines = 0
        self.events = 0
        #: JSON lines from dbt itself (any event, wanted or not): none means the input is not a dbt log.
        self.dbt_lines = 0
        self.debug = False
        self.last_error: str | None = None

    def feed(self, raw: bytes | str) -> None:
        self.lines += 1
        line = raw.strip()
        if not line:
            return
        first = line[:1]
        if first not in (b"{", "{"):
            self._passthrough(line)
            return
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            self._passthrough(line)
            return
        info = obj.get("info") if isinstance(obj, dict) else None
        name = info.get("name") if isinstance(info, dict) else None
        if not isinstance(info, dict) or not isinstance(name, str):
            self._passthrough(line)
            return
        ours = name.startswith("Dbtbus")
        if not ours:
            self.dbt_lines += 1
            if info.get("level") == "debug":
                self.debug = True
        if name in LOG_WANTED and not (self.debug and name in INFO_NODE_EVENTS):
            data = obj.get("data")
            self.events += 1
            self.push((name, (data if isinstance(data, dict) else {}, info)))
        level = _LEVELS.get(info.get("level", ""))
        if level is not None:
            msg = info.get("msg") or ""
            if level >= logging.ERROR and msg:
                self.last_error = str(msg)
            if dbt_logger.isEnabledFor(level):
                dbt_logger.log(level, "%s", msg)

    def _passthrough(self, line: bytes | str) -> None:
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        dbt_logger.info("%s", text)


def read_lines(stream: Any, feed: Callable[[bytes], None], max_line: int = 1 << 20) -> None:
    """Read a binary stream line by line (bounded) until EOF, feeding complete lines."""
    skipping = False
    while True:
        chunk = stream.readline(max_line)
        if not chunk:
            return
        complete = chunk.endswith(b"\n")
        if skipping:
            skipping = not complete
            continue
        if not complete and len(chunk) >= max_line:
            logger.warning("dbtbus: dropped a dbt log line longer than %d bytes", max_line)
            skipping = True
            continue
        feed(chunk)


async def read_on_a_thread(
    source: Iterable[bytes | str],
    handle: Callable[[bytes | str], Awaitable[None]],
    buffer: int = 1000,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Iterate a blocking source on a worker thread, handing lines to ``handle`` in this loop (bounded buffer).

    The thread appends to a deque and wakes this loop only when it sleeps, as the publisher's FIFO does: a
    round trip through the loop per line (``anyio.from_thread.run``) cost ~100 µs, 4.5 s of a 45,000-line
    log. The thread waits while ``buffer`` lines are unread, so a fast file never fills memory. An error of
    the source is raised as itself once every line read before it has been handled.
    """
    lines: deque[bytes | str] = deque()
    schedule = capture_scheduler()
    room = threading.Event()
    room.set()
    gone = threading.Event()
    state = {"sleeping": False, "done": False}
    failure: list[Exception] = []
    arrived = anyio.Event()

    def wake() -> None:
        if state["sleeping"]:
            state["sleeping"] = False
            schedule(arrived.set)

    def pump() -> None:
        try:
            for line in source:
                if gone.is_set():
                    return  # the reader is gone (cancelled or failed)
                lines.append(line)
                wake()
                if len(lines) >= buffer:
                    room.clear()
                    if len(lines) >= buffer:  # re-checked: the reader may have drained it meanwhile
                        room.wait()
        except Exception as exc:  # raised in the loop once the lines read before it are handled
            failure.append(exc)
        finally:
            state["done"] = True
            wake()

    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(anyio.to_thread.run_sync, pump, abandon_on_cancel=True))
        try:
            while True:
                while lines:
                    await handle(lines.popleft())
                    if not room.is_set() and len(lines) < buffer:
                        room.set()
                    if stop():
                        tg.cancel_scope.cancel()
                        return
                if state["done"]:  # set after the last append: whatever was read is in ``lines`` now
                    if lines:
                        continue
                    break
                arrived = anyio.Event()
                state["sleeping"] = True
                if lines or state["done"]:  # appended between the check and the flag: no wake-up is coming
                    state["sleeping"] = False
                    continue
                await arrived.wait()
        finally:
            gone.set()
            room.set()
    if failure:  # the source's own error, not a task group's wrapping of it
        raise failure[0]
