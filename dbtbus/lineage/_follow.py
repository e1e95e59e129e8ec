"""Following a run on a bus and emitting its OpenLineage events through openlineage-python's client.

The client is configured the OpenLineage way — ``openlineage.yml`` (``$OPENLINEAGE_CONFIG``, the working
directory, ``~/.openlineage``), ``OPENLINEAGE_URL`` / ``OPENLINEAGE_API_KEY``, ``OPENLINEAGE__TRANSPORT__*``
variables; console, file, http, kafka, … transports — because dbtbus builds none itself. Events are handed
to it one at a time, in order, on a worker thread: its transports block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._exceptions import RunLost
from ._errors import LineageUnavailable, LineageUndelivered
from ._events import NamingSource, ParentRun, RunLineage, TaskParents

if TYPE_CHECKING:
    from openlineage.client.event_v2 import RunEvent

    from .._bus import Bus

__all__ = ["LineageResult", "aemit_lineage", "emit_lineage"]


@dataclass(slots=True)
class LineageResult:
    """What following a run emitted: ``events`` by type (``START``, ``COMPLETE``, …), whether the run ``ended``
    (its last attempt finished or crashed) or its producer was ``lost``."""

    events: dict[str, int] = field(default_factory=dict)
    ended: bool = False
    lost: bool = False

    @property
    def total(self) -> int:
        return sum(self.events.values())


def default_client() -> Any:
    """openlineage-python's client, configured from the environment (openlineage.yml, OPENLINEAGE_URL, ...)."""
    try:
        from openlineage.client import OpenLineageClient
    except ImportError as exc:
        raise LineageUnavailable(f"openlineage-python is not installed ({exc}): install dbtbus[lineage]") from None
    return OpenLineageClient()


async def aemit_lineage(
    bus: Bus | str,
    run_id: str,
    *,
    naming: NamingSource | None = None,
    follow: bool = True,
    client: Any = None,
    job_namespace: str | None = None,
    job_name: str | None = None,
    parent: ParentRun | None = None,
    task_parents: TaskParents | None = None,
    on_event: Callable[[RunEvent], None] | None = None,
    since_attempt: int = 0,
) -> LineageResult:
    """Emit the OpenLineage events of run ``run_id`` on ``bus`` (a :class:`~dbtbus.Bus` or a bus URL).

    ``follow=True`` follows the run live until its last attempt ends (a retry announced by then is followed
    too); a lost producer ends every open run (:meth:`RunLineage.abandon`). ``follow=False`` emits what the
    log holds now and returns, leaving runs still in progress open. ``client``: an ``OpenLineageClient``
    (default: one configured from the environment); ``on_event`` sees each event after it was emitted.
    Run ids are stable: emitting a run again emits the same OpenLineage runs again. ``since_attempt``: the
    records of earlier attempts are folded but make no event (a retry's producer, whose earlier tries emitted
    theirs); a run an earlier attempt left open is still ended, by the newer attempt's start.

    :raises LineageUndelivered: the client's transport failed on an event (the events before it went out).
    :raises LineageUnavailable: OpenLineage is not installed.
    """
    import anyio

    from .._bus import connect

    lineage = RunLineage(
        run_id, naming, job_namespace=job_namespace, job_name=job_name, parent=parent, task_parents=task_parents
    )
    emitter = client if client is not None else default_client()
    result = LineageResult()

    async def emit(events: list[RunEvent], record: object = None) -> None:
        attempt = getattr(record, "attempt", None)
        if isinstance(attempt, int) and attempt < since_attempt:
            return
        for event in events:
            kind = event.eventType.value if event.eventType is not None else "OTHER"
            try:
                await anyio.to_thread.run_sync(emitter.emit, event)
            except Exception as exc:  # whatever the transport raises (requests, kafka, a file): one typed error
                raise LineageUndelivered(
                    f"the OpenLineage client could not deliver {kind} of {event.job.name} "
                    f"(run {event.run.runId}): {type(exc).__name__}: {exc}"
                ) from exc
            result.events[kind] = result.events.get(kind, 0) + 1
            if on_event is not None:
                on_event(event)

    async def run(open_bus: Bus) -> LineageResult:
        if not follow:
            async for entry in open_bus.history(run_id):
                await emit(lineage.feed(entry.record), entry.record)
            result.ended = not lineage.open_runs
            return result
        cursor: str | None = None
        while True:
            try:
                async for entry in open_bus.subscribe(run_id, cursor):
                    cursor = entry.cursor
                    await emit(lineage.feed(entry.record), entry.record)
            except RunLost:
                await emit(lineage.abandon("dbtbus lost the run's producer: its lease expired before the run ended"))
                result.lost = True
                return result
            latest = await open_bus.run_started(run_id)
            if latest is None or latest.attempt <= lineage.attempt:
                result.ended = True
                return result
            # A retry was announced while this attempt was ending: follow it from where this one stopped.

    if isinstance(bus, str):
        async with connect(bus) as open_bus:
            return await run(open_bus)
    return await run(bus)


def emit_lineage(bus_url: str, run_id: str, **options: Any) -> LineageResult:
    """The blocking twin of :func:`aemit_lineage` (same options), for code without an event loop."""
    import anyio

    async def main() -> LineageResult:
        return await aemit_lineage(bus_url, run_id, **options)

    return anyio.run(main)
