"""Replaying an existing dbt JSON log (a file, a pipe, a pod log being followed) as a dbtbus run.

The replay is a producer like the others: the same normaliser and publishing engine, fed by :mod:`._lines`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import orjson

from .._bus import Bus, connect
from .._dbt.exit_codes import dbt_exit_code
from .._dbt.graph import extras_of_manifest, graph_from_manifest
from .._limits import DEFAULT_MAX_RECORD_SIZE
from ..events import GraphNode
from ._lines import LineParser, read_on_a_thread
from ._normalise import Normaliser, producer_info
from ._publisher import Ending, Publisher
from ._results import ProducerResult, result_of

__all__ = ["NO_EVENTS", "TRUNCATED", "apublish_log", "publish_log"]

logger = logging.getLogger("dbtbus.producer")


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
) -> ProducerResult:
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
        heartbeat_interval=heartbeat_interval, attempt=attempt, selection_known=selection_known,
        add_test_edges=not selection_known, ephemeral=ephemeral,
    )
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
            await read_on_a_thread(lines, feed_line, stop=lambda: publisher.rejected is not None)

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
    """The whole project's graph (test edges are added once the command is known), with its project hooks
    and saved queries (:func:`extras_of_manifest`), and its ephemeral models."""
    manifest = orjson.loads(Path(path).read_bytes())
    ephemeral = frozenset(
        uid for uid, node in (manifest.get("nodes") or {}).items()
        if ((node.get("config") or {}).get("materialized")) == "ephemeral"
    )
    graph = graph_from_manifest(manifest)
    return {**graph, **extras_of_manifest(manifest, graph)}, ephemeral


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
