"""Fabricated runs and log replays: test code that consumes dbtbus without running dbt.

The pytest plugin's ``dbtbus_events`` and ``dbtbus_replay`` fixtures are an :class:`EventFactory` and a
:class:`LogReplayer` bound to the test's private memory store; both work outside pytest as well::

    run = await EventFactory("memory://scratch").run("run-1", graph={"model.a": [], "model.b": ["model.a"]})
    await run.fail("model.a")      # waiters of model.b now see UpstreamFailed
    await run.finish()

Nothing here imports pytest; dbtbus's machinery is imported on first use.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._bus import Bus
    from .._state import RunState
    from ..events import BatchResult, GraphNode, NodeResult, NodeStatus, Record

__all__ = ["FAKE_LEASE_TTL", "EventFactory", "FakeRun", "LogReplayer"]

#: The lease a fabricated run holds until it finishes, crashes or loses its producer: long enough for any
#: test, short enough not to linger on a shared Redis.
FAKE_LEASE_TTL = 600.0


@dataclass
class FakeRun:
    """A fabricated run: publish its records one call at a time, as dbt and the producer would.

    Every method publishes through the bus the factory was given (or a short-lived connection to its URL)
    and returns the record(s) published. ``state`` is the run as a consumer sees it so far.
    """

    factory: EventFactory
    run_id: str
    started: Any  # RunStarted
    bus: Bus | None = None
    url: str | None = None
    holder: str = field(default_factory=lambda: f"fake-{uuid.uuid4().hex[:8]}")
    records: list[Record] = field(default_factory=list)
    _state: RunState | None = None

    @property
    def state(self) -> RunState:
        """The records published so far, folded into a :class:`dbtbus.RunState`."""
        from .._state import RunState

        if self._state is None:
            self._state = RunState(self.run_id)
            for record in self.records:
                self._state.apply(record)
        return self._state

    @property
    def graph(self) -> Mapping[str, GraphNode]:
        graph = self.started.graph
        return graph if graph is not None else {}

    async def publish(self, *records: Record) -> list[Record]:
        """Publish arbitrary records of this run (low level)."""
        await self.factory._publish(self, records)
        self.records.extend(records)
        if self._state is not None:
            for record in records:
                self._state.apply(record)
        return list(records)

    # ------------------------------------------------------------------------------------------ nodes

    def _result(self, unique_id: str, status: NodeStatus | str, **fields: Any) -> NodeResult:
        from ..events import utcnow
        from .records import node_result

        fields.setdefault("execution_time", 0.01)
        fields.setdefault("finished_at", utcnow())
        fields.setdefault("thread", "Thread-1")
        return node_result(unique_id, status, run_id=self.run_id, graph=self.graph, **fields)

    async def start_node(self, unique_id: str) -> Record:
        """Publish that dbt began ``unique_id`` (progress only; not an outcome)."""
        from ..events import NodeStarted, utcnow
        from .records import resource_type_of

        record = NodeStarted(
            run_id=self.run_id,
            unique_id=unique_id,
            resource_type=resource_type_of(unique_id, self.graph),
            started_at=utcnow(),
            thread="Thread-1",
        )
        await self.publish(record)
        return record

    async def batch(
        self,
        unique_id: str,
        batch: str,
        *,
        index: int,
        total: int,
        status: NodeStatus | str = "success",
        **fields: Any,
    ) -> BatchResult:
        """Publish that one batch of the microbatch model ``unique_id`` finished (progress only: the model's
        own result, from :meth:`succeed` or :meth:`fail` with ``status="partial success"``, decides it)."""
        from ..events import BatchResult, NodeStatus, utcnow

        fields.setdefault("execution_time", 0.01)
        fields.setdefault("finished_at", utcnow())
        fields.setdefault("thread", "Thread-1")
        record = BatchResult(
            run_id=self.run_id, unique_id=unique_id, status=NodeStatus(status), batch=batch,
            batch_index=index, total_batches=total, **fields,
        )
        await self.publish(record)
        return record

    async def succeed(
        self, unique_id: str, *, status: NodeStatus | str = "success", **fields: Any
    ) -> NodeResult:
        """Publish a success-like result (``success``; pass ``status="pass"``/``"warn"``... for others)."""
        record = self._result(unique_id, status, **fields)
        if not record.status.is_success:
            raise ValueError(f"succeed() needs a success-like status, got {record.status.value!r}")
        await self.publish(record)
        return record

    async def warn(
        self, unique_id: str, *, message: str = "Got 1 result, configured to warn if != 0", **fields: Any
    ) -> NodeResult:
        """Publish a ``warn`` result (a test that warned: ``wait`` returns it)."""
        return await self.succeed(unique_id, status="warn", message=message, **fields)

    async def fail(
        self,
        unique_id: str,
        *,
        message: str = "fabricated failure",
        status: NodeStatus | str | None = None,
        skip_descendants: bool = False,
        **fields: Any,
    ) -> list[NodeResult]:
        """Publish a failing result (``error``, or ``fail`` for a test).

        Waiters of the node's descendants see :class:`dbtbus.UpstreamFailed` at once. With
        ``skip_descendants=True`` the ``skipped`` results dbt reports later are published too, each with
        ``skip_cause`` set to this node.
        """
        from ..events import NodeStatus
        from .records import resource_type_of

        kind = resource_type_of(unique_id, self.graph)

        resolved = (
            NodeStatus(status)
            if status is not None
            else NodeStatus.FAIL
            if kind in ("test", "unit_test")
            else NodeStatus.ERROR
        )
        if resolved is NodeStatus.FAIL:
            fields.setdefault("failures", 1)
        record = self._result(unique_id, resolved, message=message, **fields)
        if not record.status.is_failure:
            raise ValueError(f"fail() needs a failing status, got {record.status.value!r}")
        out = [record]
        if skip_descendants:
            out.extend(self._skipped(uid, unique_id) for uid in self.descendants(unique_id))
        await self.publish(*out)
        return out

    def _skipped(self, unique_id: str, cause: str) -> NodeResult:
        return self._result(unique_id, "skipped", skip_cause=cause, execution_time=0.0, message=None)

    async def skip(self, unique_id: str, *, cause: str | None = None, **fields: Any) -> NodeResult:
        """Publish a ``skipped`` result; ``cause`` is the failed ancestor dbt names (None: a plain skip)."""
        fields.setdefault("execution_time", 0.0)
        record = self._result(unique_id, "skipped", skip_cause=cause, **fields)
        await self.publish(record)
        return record

    async def not_run(self, unique_id: str, *, message: str | None = "fabricated: not run") -> NodeResult:
        """Publish dbtbus's own ``not_run`` result: waiters see :class:`dbtbus.NodeNotRun`."""
        record = self._result(unique_id, "not_run", message=message, execution_time=None)
        await self.publish(record)
        return record

    def descendants(self, unique_id: str) -> list[str]:
        """Every node below ``unique_id`` in the run's graph, breadth first."""
        children: dict[str, list[str]] = {}
        for uid, node in self.graph.items():
            for parent in node.parents:
                children.setdefault(parent, []).append(uid)
        out: list[str] = []
        queue = list(children.get(unique_id, ()))
        while queue:
            uid = queue.pop(0)
            if uid not in out:
                out.append(uid)
                queue.extend(children.get(uid, ()))
        return out

    # ------------------------------------------------------------------------------------------ lifecycle

    async def heartbeat(self, *, running: int = 0, peak_rss: int | None = None) -> Record:
        """Publish a heartbeat (and renew the fabricated producer's lease)."""
        from ..events import Heartbeat

        record = Heartbeat(
            run_id=self.run_id, running=running, done=len(self.state.results), peak_rss=peak_rss
        )
        await self.publish(record)
        await self.factory._lease(self, FAKE_LEASE_TTL)
        return record

    async def finish(
        self,
        *,
        success: bool | None = None,
        exit_code: int | None = None,
        elapsed: float = 1.0,
        error: str | None = None,
    ) -> Record:
        """Publish ``RunFinished`` (``success`` defaults to "no node failed") and release the lease.

        Waiters of nodes without a result then see :class:`dbtbus.NodeNotRun`.
        """
        from ..events import RunFinished

        state = self.state
        if success is None:
            success = not any(r.status.is_failure for r in state.results.values()) and error is None
        if exit_code is None:
            exit_code = 0 if success else 1
        record = RunFinished(
            run_id=self.run_id,
            success=success,
            exit_code=exit_code,
            counts=state.counts(),
            elapsed=elapsed,
            error=error,
        )
        await self.publish(record)
        await self.factory._release(self)
        return record

    async def crash(self, error: str = "fabricated crash", *, exit_code: int | None = None) -> Record:
        """Publish ``RunCrashed`` and release the lease: pending waiters see :class:`dbtbus.NodeNotRun`."""
        from ..events import RunCrashed

        record = RunCrashed(run_id=self.run_id, error=error, elapsed=1.0, exit_code=exit_code)
        await self.publish(record)
        await self.factory._release(self)
        return record

    async def lose_producer(self) -> None:
        """Drop the producer's lease without any record, as a killed producer would.

        Pending waiters see :class:`dbtbus.ProducerLost` within about the run's ``heartbeat_interval``.
        """
        await self.factory._release(self)

    async def run_all(self, outcomes: Mapping[str, str] | None = None) -> None:
        """Publish a result for every node in graph order (default ``success``), then ``finish()``.

        ``outcomes`` maps a node to ``"success"``, ``"warn"``, ``"fail"``, ``"skip"`` or ``"not_run"``; a
        node below a failure is published as ``skipped`` with its ``skip_cause``, as dbt does.
        """
        outcomes = dict(outcomes or {})
        doomed: dict[str, str] = {}
        from .._dbt.graph import topological_order

        for uid in topological_order(self.graph):
            if uid in doomed:
                await self.skip(uid, cause=doomed[uid])
                continue
            wanted = outcomes.get(uid, "success")
            if wanted == "fail":
                await self.fail(uid)
                for child in self.descendants(uid):
                    doomed.setdefault(child, uid)
            elif wanted == "warn":
                await self.warn(uid)
            elif wanted == "skip":
                await self.skip(uid)
            elif wanted == "not_run":
                await self.not_run(uid)
            else:
                await self.succeed(uid, status=wanted)
        await self.finish()


class EventFactory:
    """Fabricates runs on a bus. The ``dbtbus_events`` fixture is one, bound to the test's memory store."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.runs: list[FakeRun] = []

    async def run(
        self,
        run_id: str = "run-1",
        graph: Mapping[str, Sequence[str] | GraphNode] | None = None,
        *,
        command: str = "build",
        heartbeat_interval: float = 0.2,
        bus: Bus | None = None,
        url: str | None = None,
        continue_on_error: Iterable[str] = (),
        attempt: int = 1,
    ) -> FakeRun:
        """Publish a ``RunStarted`` (and take the producer's lease) and return the :class:`FakeRun`.

        ``graph`` maps each selected node to its parents (or to a :class:`dbtbus.GraphNode`); a node's
        resource type is its unique_id's prefix (``model.``, ``test.``, ``seed.``...). ``bus`` (an open
        bus) or ``url`` choose where to publish (default: this test's memory store).
        """
        from .records import run_started

        started = run_started(
            graph,
            run_id=run_id,
            command=command,
            attempt=attempt,
            heartbeat_interval=heartbeat_interval,
            continue_on_error=continue_on_error,
            args=(command,),
            dbt_version="fake",
            invocation_id=str(uuid.uuid4()),
        )
        run = FakeRun(self, run_id, started, bus=bus, url=url)
        await self._lease(run, FAKE_LEASE_TTL)
        await run.publish(started)
        self.runs.append(run)
        return run

    # The factory's I/O, one connection per call when no bus was given.

    async def _with_bus(self, run: FakeRun, action: Any) -> None:
        if run.bus is not None:
            await action(run.bus)
            return
        from .._bus import connect

        async with connect(run.url or self.url) as bus:
            await action(bus)

    async def _publish(self, run: FakeRun, records: Sequence[Record]) -> None:
        async def action(bus: Bus) -> None:
            await bus.publish(list(records))

        await self._with_bus(run, action)

    async def _lease(self, run: FakeRun, ttl: float) -> None:
        async def action(bus: Bus) -> None:
            await bus.renew_lease(run.run_id, run.holder, ttl)

        await self._with_bus(run, action)

    async def _release(self, run: FakeRun) -> None:
        async def action(bus: Bus) -> None:
            await bus.release_lease(run.run_id, run.holder)

        await self._with_bus(run, action)


class LogReplayer:
    """``await replay(log, run_id=None, bus=None, url=None) -> run_id``: publish a recorded dbt JSON log."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def __call__(
        self,
        log: str | os.PathLike[str] | Iterable[str | bytes],
        *,
        run_id: str | None = None,
        bus: Bus | None = None,
        url: str | None = None,
        graph: Any = None,
        args: Iterable[str] = (),
    ) -> str:
        """Replay ``log`` (a file of ``--log-format json`` lines, or the lines) and return the run id used."""
        from ..producer import apublish_log

        lines: Iterable[str | bytes]
        if isinstance(log, (str, os.PathLike)):
            import anyio

            text = await anyio.Path(log).read_text(encoding="utf-8")
            lines = text.splitlines()
        else:
            lines = log
        run_id = run_id or f"replay-{uuid.uuid4().hex[:10]}"
        await apublish_log(lines, bus if bus is not None else (url or self.url), run_id=run_id, graph=graph, args=args)
        return run_id
