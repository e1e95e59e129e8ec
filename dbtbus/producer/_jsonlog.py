"""dbt's ``--log-format json`` lines → the normaliser's input; replaying an existing JSON log.

Lines are handled one at a time (bounded: a line longer than ``max_line`` bytes is dropped with a warning),
so memory stays flat however long the log. Lines that are not JSON (adapter prints, tracebacks) go to the
``dbtbus.dbt`` logger at INFO — never fatal, never lost; JSON events at warn/error level are forwarded there
too.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import orjson

from .._bus import Bus, connect
from .._dbt.exit_codes import dbt_exit_code
from .._dbt.graph import graph_from_manifest
from .._limits import DEFAULT_MAX_RECORD_SIZE
from .._wakeup import capture_scheduler
from ..events import GraphNode
from ._callback import Item
from ._normalise import INFO_NODE_EVENTS, LOG_WANTED, Normaliser, producer_info
from ._publisher import Ending, Publisher

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


#: Why a replay without dbt's completion in it ends as crashed.
TRUNCATED = "the log ends before dbt completed the command"
NO_EVENTS = "the input has no dbt events (expected dbt's --log-format json output)"


async def apublish_log(
    lines: Iterable[bytes | str] | AsyncIterable[bytes | str],
    bus_or_url: Bus | str,
    *,
    run_id: str,
    graph: Mapping[str, GraphNode] | str | Path | None = None,
    args: Iterable[str] = (),
    batch: int = 500,
    heartbeat_interval: float = 5.0,
    attempt: int = 1,
    flush_timeout: float = 30.0,
    max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
) -> Any:
    """Replay a dbt JSON log (an exported ``dbt.log``, a pod log being followed) as a dbtbus run.

    A log at dbt's default info level is enough (its result lines carry status, timing and node info); a
    debug-level log adds dbt's exact skip causes and start events. ``graph`` is the selected graph when
    known, or a ``manifest.json`` path (the project's whole graph, with ``build``'s test edges added: it
    gives early upstream failures, but since the selection is unknown no ``not_run`` records are made
    from it), or ``None`` (the graph printed by the subprocess producer's bootstrap is used if the log has
    it). ``args`` default to the command line the log itself reports.

    The replay is a producer like the others (the same publishing engine): it announces the attempt at
    once, holds the run's liveness lease and heartbeats while it reads, so a log that pauses (a pod still
    running) does not look like a lost producer. Blocking line sources (files, pipes, ``sys.stdin``) are
    read on a worker thread, so a quiet source never stalls the heartbeats. The run ends with RunFinished
    when the log shows dbt completing (``CommandCompleted`` at debug level; the run summary, or dbt's
    "Encountered an error", at info level) and RunCrashed when it stops before that. The result's
    ``crashed`` / ``success`` / ``exit_code`` say which; input with no dbt events at all ends crashed too.
    """
    from ._producer import result_of

    selection_known = True
    graph_map: Mapping[str, GraphNode] | None
    ephemeral: frozenset[str] = frozenset()
    if isinstance(graph, (str, Path)):
        graph_map, ephemeral = _manifest_graph(graph)
        selection_known = False
    else:
        graph_map = graph
    normaliser = Normaliser(
        run_id, producer=producer_info("log"), args=tuple(args), graph=graph_map,
        heartbeat_interval=heartbeat_interval, attempt=attempt,
    )
    normaliser.selection_known = selection_known
    normaliser.add_test_edges = not selection_known
    normaliser.ephemeral = ephemeral
    publisher = Publisher(
        normaliser, heartbeat_interval=heartbeat_interval, batch_size=batch, flush_timeout=flush_timeout,
        max_record_size=max_record_size,
    )
    parser = LineParser(publisher.push)
    room = max(batch, 64)

    def ending() -> Ending:
        end = normaliser.end
        if parser.dbt_lines == 0:
            return Ending(crashed=True, error=NO_EVENTS)
        if not end.completed:
            return Ending(crashed=True, error=TRUNCATED, elapsed=end.elapsed or 0.0)
        if end.interrupted:
            return Ending(crashed=True, error="dbt was interrupted (KeyboardInterrupt)", elapsed=end.elapsed or 0.0)
        ok = bool(end.success)
        return Ending(
            crashed=False, success=ok, exit_code=dbt_exit_code(ok, end.exception), error=end.exception,
            elapsed=end.elapsed or 0.0,
        )

    async def feed_line(line: bytes | str) -> None:
        parser.feed(line)
        # Bounded: the reader waits while the backend catches up, so a long log never sits in memory.
        while publisher.backlog >= room and not publisher.stopped and not publisher.done.is_set():  # noqa: ASYNC110
            await anyio.sleep(0.002)  # polled: the publisher drains in bursts, an event per record costs more

    async def read_all() -> None:
        if isinstance(lines, AsyncIterable):
            async for line in lines:
                await feed_line(line)
                if publisher.rejected is not None:
                    return
        elif isinstance(lines, (list, tuple)):
            for i, line in enumerate(lines):
                await feed_line(line)
                if i % 256 == 255:
                    await anyio.lowlevel.checkpoint()
                if publisher.rejected is not None:
                    return
        else:
            await _read_on_a_thread(lines, feed_line, stop=lambda: publisher.rejected is not None)

    async def body(bus: Bus) -> None:
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(publisher.run, bus)
            try:
                await read_all()
            except Exception as exc:
                # The source failed, not dbt: what dbt did after the last line read is unknown, so the run
                # gets no end record (it would say the pending nodes never ran); its waiters see this
                # producer lost (a later attempt can resume the run).
                failure = exc
                publisher.abandon()
            finally:
                publisher.finish(ending)
        if failure is not None:
            raise failure

    if isinstance(bus_or_url, Bus):
        await body(bus_or_url)
    else:
        async with connect(bus_or_url) as bus:
            await body(bus)
    return result_of(publisher, publisher.ending or ending())


def _manifest_graph(path: str | Path) -> tuple[dict[str, GraphNode], frozenset[str]]:
    """The whole project's graph (test edges are added once the command is known) and its ephemeral models."""
    manifest = orjson.loads(Path(path).read_bytes())
    ephemeral = frozenset(
        uid for uid, node in (manifest.get("nodes") or {}).items()
        if ((node.get("config") or {}).get("materialized")) == "ephemeral"
    )
    return graph_from_manifest(manifest), ephemeral


async def _read_on_a_thread(
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


def publish_log(
    lines: Iterable[bytes | str],
    bus_or_url: str,
    *,
    run_id: str,
    graph: Mapping[str, GraphNode] | str | Path | None = None,
    args: Iterable[str] = (),
    heartbeat_interval: float = 5.0,
    **options: Any,
) -> Any:
    """Blocking :func:`apublish_log` (``bus_or_url`` must be a URL: a Bus belongs to its own loop)."""
    if isinstance(bus_or_url, Bus):
        if bus_or_url.url is None:
            raise TypeError("publish_log() needs a URL (or use 'await apublish_log(lines, bus, ...)')")
        bus_or_url = bus_or_url.url
    url = bus_or_url
    return anyio.run(
        lambda: apublish_log(
            lines, url, run_id=run_id, graph=graph, args=args, heartbeat_interval=heartbeat_interval, **options
        )
    )
