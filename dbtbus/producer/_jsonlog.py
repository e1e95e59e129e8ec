"""dbt's ``--log-format json`` lines → the normaliser's input; replaying an existing JSON log.

Lines are handled one at a time (bounded: a line longer than ``max_line`` bytes is dropped with a warning),
so memory stays flat however long the log. Lines that are not JSON (adapter prints, tracebacks) go to the
``dbtbus.dbt`` logger at INFO — never fatal, never lost; JSON events at warn/error level are forwarded there
too.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import orjson

from .._bus import Bus, connect
from ..events import GraphNode, Heartbeat, Record, RunCrashed, RunFinished
from ._callback import Item
from ._normalise import WANTED, Normaliser, producer_info

logger = logging.getLogger("dbtbus.producer")
dbt_logger = logging.getLogger("dbtbus.dbt")

_LEVELS = {"warn": logging.WARNING, "error": logging.ERROR}


class LineParser:
    """Parses dbt JSON log lines and pushes the wanted events as ``(name, (data, info))``."""

    def __init__(self, push: Callable[[Item], None]) -> None:
        self.push = push
        self.lines = 0
        self.events = 0
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
        if not isinstance(info, dict):
            self._passthrough(line)
            return
        name = info.get("name")
        if name in WANTED:
            data = obj.get("data")
            self.events += 1
            self.push((name, (data if isinstance(data, dict) else {}, info)))
            return
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


def graph_from_manifest(path: str | Path) -> dict[str, GraphNode]:
    """The project's whole graph from a ``manifest.json`` (every executable node; ``depends_on`` edges)."""
    manifest = orjson.loads(Path(path).read_bytes())
    executable = {"model", "seed", "snapshot", "test", "unit_test", "analysis", "function"}
    graph: dict[str, GraphNode] = {}
    tables = [manifest.get("nodes") or {}, manifest.get("unit_tests") or {}, manifest.get("functions") or {}]
    for table in tables:
        for uid, node in table.items():
            rtype = node.get("resource_type") or uid.split(".", 1)[0]
            if rtype not in executable or rtype == "analysis":
                continue
            parents = (node.get("depends_on") or {}).get("nodes") or []
            graph[uid] = GraphNode(rtype, tuple(parents))
    for uid, node in list(graph.items()):
        graph[uid] = GraphNode(node.resource_type, tuple(sorted(p for p in node.parents if p in graph)))
    return graph


async def apublish_log(
    lines: Iterable[bytes | str] | AsyncIterable[bytes | str],
    bus_or_url: Bus | str,
    *,
    run_id: str,
    graph: Mapping[str, GraphNode] | str | Path | None = None,
    args: Iterable[str] = (),
    batch: int = 500,
    heartbeat_interval: float = 5.0,
) -> Any:
    """Replay a dbt JSON log (an exported ``dbt.log``, a pod log being followed) as a dbtbus run.

    ``graph`` is the selected graph when known, or a ``manifest.json`` path (the project's whole graph, with
    ``build``'s test edges added: it gives early upstream failures, but since the selection is unknown no
    ``not_run`` records are made from it), or ``None`` (the graph printed by the subprocess producer's
    bootstrap is used if the log has it). ``args`` default to the command line the log itself reports.

    The replay holds the run's liveness lease and heartbeats while it reads, so a log that pauses (a pod
    still running) does not look like a lost producer. Blocking line sources (files, pipes, ``sys.stdin``)
    are read on a worker thread, so a quiet source never stalls the heartbeats. Ends the run with
    RunFinished when the log shows dbt completing, RunCrashed when it stops before that.
    """
    from . import ProducerResult

    selection_known = True
    graph_map: Mapping[str, GraphNode] | None
    if isinstance(graph, (str, Path)):
        graph_map = graph_from_manifest(graph)
        selection_known = False
    else:
        graph_map = graph
    normaliser = Normaliser(
        run_id, producer=producer_info("log"), args=tuple(args), graph=graph_map, heartbeat_interval=heartbeat_interval
    )
    normaliser.selection_known = selection_known
    normaliser.add_test_edges = not selection_known
    holder = normaliser.producer.id
    items: list[Item] = []
    parser = LineParser(items.append)
    pending: list[Record] = []
    flushing = anyio.Lock()  # the reader and the heartbeat both flush: one at a time keeps the order

    async def flush(bus: Bus) -> None:
        async with flushing:
            if pending:
                records = pending.copy()
                pending.clear()
                await bus.publish(records)

    async def feed_line(bus: Bus, line: bytes | str) -> None:
        parser.feed(line)
        for name, (data, info) in items:
            pending.extend(normaliser.feed(name, data, info))
        items.clear()
        if len(pending) >= batch:
            await flush(bus)

    async def heartbeats(bus: Bus) -> None:
        while True:
            await anyio.sleep(heartbeat_interval)
            try:
                await bus.renew_lease(run_id, holder, 1.5 * heartbeat_interval)
                if normaliser.started is not None:
                    await flush(bus)  # what is already parsed goes out with the heartbeat, however slow the source
                    n = normaliser
                    await bus.publish(Heartbeat(run_id=run_id, running=len(n.running), done=len(n.results)))
            except Exception as exc:
                logger.warning("dbtbus: heartbeat of replayed run %r failed: %r", run_id, exc)

    async def read_all(bus: Bus) -> None:
        if isinstance(lines, AsyncIterable):
            async for line in lines:
                await feed_line(bus, line)
        elif isinstance(lines, (list, tuple)):
            for line in lines:
                await feed_line(bus, line)
        else:
            await _read_on_a_thread(lines, lambda line: feed_line(bus, line))

    async def body(bus: Bus) -> None:
        await bus.renew_lease(run_id, holder, 1.5 * heartbeat_interval)
        async with anyio.create_task_group() as tg:
            tg.start_soon(heartbeats, bus)
            await read_all(bus)
            end = normaliser.end
            pending.extend(normaliser.start())  # a log with no node events still makes a run
            pending.extend(normaliser.not_run(end.results))
            if end.completed:
                ok = bool(end.success)
                pending.append(
                    RunFinished(
                        run_id=run_id,
                        success=ok,
                        exit_code=0 if ok else (2 if end.exception else 1),
                        counts=normaliser.counts(),
                        elapsed=end.elapsed or 0.0,
                        error=end.exception,
                    )
                )
            else:
                pending.append(RunCrashed(run_id=run_id, error="the log ends before dbt completed the command"))
            tg.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            await flush(bus)
            await bus.release_lease(run_id, holder)

    if isinstance(bus_or_url, Bus):
        await body(bus_or_url)
    else:
        async with connect(bus_or_url) as bus:
            await body(bus)
    end = normaliser.end
    return ProducerResult(
        run_id=run_id,
        success=bool(end.completed and end.success),
        exit_code=None,
        crashed=not end.completed,
        error=end.exception or (None if end.completed else "the log ends before dbt completed the command"),
        counts=normaliser.counts(),
        elapsed=end.elapsed or 0.0,
        peak_rss=None,
        results=dict(normaliser.results),
    )


async def _read_on_a_thread(
    source: Iterable[bytes | str], handle: Callable[[bytes | str], Awaitable[None]], buffer: int = 1000
) -> None:
    """Iterate a blocking source on a worker thread, handing lines to ``handle`` in this loop (bounded buffer)."""
    send, receive = anyio.create_memory_object_stream[bytes | str](buffer)

    def pump() -> None:
        with send:
            for line in source:
                try:
                    anyio.from_thread.run(send.send, line)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, RuntimeError):
                    return  # the reader is gone (cancelled or failed)

    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(anyio.to_thread.run_sync, pump, abandon_on_cancel=True))
        with receive:
            async for line in receive:
                await handle(line)


def publish_log(
    lines: Iterable[bytes | str],
    bus_or_url: str,
    *,
    run_id: str,
    graph: Mapping[str, GraphNode] | str | Path | None = None,
    args: Iterable[str] = (),
    heartbeat_interval: float = 5.0,
) -> Any:
    """Blocking :func:`apublish_log` (``bus_or_url`` must be a URL: a Bus belongs to its own loop)."""
    if isinstance(bus_or_url, Bus):
        if bus_or_url.url is None:
            raise TypeError("publish_log() needs a URL (or use 'await apublish_log(lines, bus, ...)')")
        bus_or_url = bus_or_url.url
    url = bus_or_url
    return anyio.run(
        lambda: apublish_log(
            lines, url, run_id=run_id, graph=graph, args=args, heartbeat_interval=heartbeat_interval
        )
    )
