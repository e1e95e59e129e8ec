"""OpenLineage from the producer task: every node of the run as an OpenLineage run, nested under its Airflow task.

**Why the producer, not the node tasks.** The producer task already holds the bus and runs as long as dbt does,
on a worker, where a blocking transport (openlineage-python's http and kafka transports block) costs nothing but
a thread. The node tasks wait and mostly end in the triggerer, one event loop shared by every deferred task of
the deployment: a blocking HTTP call there stalls all of them, and an asynchronous client there would be a second
OpenLineage client to configure. So the producer runs :func:`~dbtbus.lineage.aemit_lineage` beside dbt, on a
thread of its own with its own event loop: dbt never waits for it, and no extra process is needed.

**Parents.** Each node's run names its Airflow task instance's OpenLineage run as its parent, computed by the
Airflow OpenLineage provider's own functions (``OpenLineageAdapter.build_task_instance_run_id``,
``build_dag_run_id``, its ``lineage_*`` macros), so the provider's events for that task and dbtbus's for the
node meet in a lineage tool. Without the provider nothing of Airflow's is named: the nodes nest under the dbt
invocation only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["LineageDelivery", "ProducerLineage", "lineage_parents", "openlineage_client", "provider_installed",
           "wants_openlineage"]


def provider_installed() -> bool:
    try:
        import airflow.providers.openlineage.conf  # noqa: F401
    except ImportError:
        return False
    return True


def wants_openlineage(option: bool | None) -> tuple[bool, str]:
    """Whether the producer emits OpenLineage, and why (for its log).

    ``None`` (the default) follows the Airflow OpenLineage provider: on when it is installed and configured
    (``[openlineage]`` transport, config path or connection, ``OPENLINEAGE_URL``, ...), off otherwise — the
    provider's own rule (``conf.is_disabled``), so dbtbus emits exactly when Airflow's tasks do.
    ``True`` emits through the provider's client, or openlineage-python's configured from the environment
    when the provider is missing; ``False`` never emits.
    """
    if option is False:
        return False, "openlineage=False"
    if not provider_installed():
        if option:
            return True, "openlineage=True without the Airflow OpenLineage provider: openlineage-python's configuration"
        return False, "the Airflow OpenLineage provider is not installed"
    from airflow.providers.openlineage import conf

    if option:
        return True, "openlineage=True"
    if conf.is_disabled():
        return False, "the Airflow OpenLineage provider is not configured (or is disabled)"
    return True, "the Airflow OpenLineage provider is configured"


def openlineage_client() -> Any:
    """The provider's client (its ``[openlineage]`` configuration), else openlineage-python's from the environment."""
    if provider_installed():
        from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter

        return OpenLineageAdapter().get_or_create_openlineage_client()
    from ..lineage._follow import default_client

    return default_client()


@dataclass(frozen=True)
class _DagRunFacts:
    dag_id: str
    logical_date: datetime
    clear_number: int


def _dag_run_facts(dag_id: str, dag_run: Any) -> _DagRunFacts:
    # The provider's rule on Airflow 3 (macros._get_logical_date): the logical date, else run_after (a run
    # triggered without one — the split layout's node DAG runs).
    return _DagRunFacts(dag_id, dag_run.logical_date or dag_run.run_after, int(dag_run.clear_number or 0))


def _node_dag_run(dag_id: str, run_id: str) -> Any:
    """A node DAG's run, asked of Airflow through the Task SDK (the split layout)."""
    from airflow.sdk.execution_time.comms import GetDagRun
    from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

    from ..backends.xcom import TaskSdkXComApi

    with TaskSdkXComApi.comms_lock():
        return SUPERVISOR_COMMS.send(GetDagRun(dag_id=dag_id, run_id=run_id))


def lineage_parents(ti: Any, dag_run: Any, node_tasks: Mapping[str, tuple[str, str]], log: Any,
                    node_dag_run: Any = _node_dag_run) -> tuple[Any, dict[str, Any]]:
    """The producer task's OpenLineage run (the invocation's parent) and each node's task run, by unique id.

    ``node_tasks``: unique id → (DAG id, task id) of its task. A node task's try is taken to be the producer's:
    the render's node tasks retry along the producer (a node re-run by attempt N is watched by its task's try
    N). A node DAG whose run cannot be read leaves its nodes under the invocation (logged).
    """
    from airflow.providers.openlineage import conf
    from airflow.providers.openlineage.plugins import macros
    from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter

    from ..lineage import ParentRun

    # The producer's own run and root exactly as the provider hands them to a task (its macros).
    producer = ParentRun.parse(macros.lineage_parent_id(ti), macros.lineage_root_parent_id(ti))
    namespace = conf.namespace()
    try_number = int(getattr(ti, "try_number", 1) or 1)
    runs: dict[str, _DagRunFacts | None] = {ti.dag_id: _dag_run_facts(ti.dag_id, dag_run)}
    parents: dict[str, Any] = {}
    for uid, (dag_id, task_id) in node_tasks.items():
        if dag_id not in runs:
            try:
                runs[dag_id] = _dag_run_facts(dag_id, node_dag_run(dag_id, ti.run_id))
            except Exception as exc:  # a run not started, comms refusing: lineage without that DAG's parents
                log.warning("dbtbus: OpenLineage: no run %s of the node DAG %s to nest its nodes under: %s",
                            ti.run_id, dag_id, exc)
                runs[dag_id] = None
        facts = runs[dag_id]
        if facts is None:
            continue
        if dag_id == ti.dag_id:
            root = producer.root
        else:
            root = ParentRun(namespace, dag_id,
                             OpenLineageAdapter.build_dag_run_id(dag_id=dag_id, logical_date=facts.logical_date,
                                                                 clear_number=facts.clear_number))
        run_id = OpenLineageAdapter.build_task_instance_run_id(
            dag_id=dag_id, task_id=task_id, try_number=try_number, logical_date=facts.logical_date, map_index=-1)
        parents[uid] = ParentRun(namespace, f"{dag_id}.{task_id}", str(run_id), root)
    return producer, parents


@dataclass
class LineageDelivery:
    """What the producer's lineage did: events delivered by type, events the transport failed on."""

    events: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    ended: bool = False
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        return {"events": dict(self.events), "failed": self.failed, "ended": self.ended, "error": self.error}


class _CountingClient:
    """The OpenLineage client, each failure counted and logged instead of raised: a transport that fails
    never fails the producer, and the events after a failed one are still tried."""

    def __init__(self, client: Any, delivery: LineageDelivery, log: Any) -> None:
        self.client = client
        self.delivery = delivery
        self.log = log

    def emit(self, event: Any) -> None:
        try:
            self.client.emit(event)
        except Exception as exc:  # whatever the transport raises (requests, kafka, a file)
            self.delivery.failed += 1
            if self.delivery.failed <= 5 or self.delivery.failed % 100 == 0:  # a dead endpoint: not one line a node
                self.log.warning("dbtbus: OpenLineage event not delivered (%d so far): %s: %s",
                                 self.delivery.failed, type(exc).__name__, str(exc)[:300])
            return
        kind = event.eventType.value if event.eventType is not None else "OTHER"
        self.delivery.events[kind] = self.delivery.events.get(kind, 0) + 1


class ProducerLineage:
    """:func:`~dbtbus.lineage.aemit_lineage` for one producer attempt, on a thread with its own event loop.

    It waits for the attempt's announcement on the bus (an earlier try's ending is not this attempt's), emits
    only this attempt's events (the earlier tries emitted theirs; run ids are stable), and stops when the
    attempt ends — or, at :meth:`finish`, ``timeout`` seconds after dbt did, whatever it has not sent.
    """

    def __init__(self, url: str, run_id: str, attempt: int, *, client: Any, log: Any,
                 parent: Any = None, task_parents: Mapping[str, Any] | None = None,
                 announce_timeout: float = 120.0) -> None:
        self.url = url
        self.run_id = run_id
        self.attempt = attempt
        self.log = log
        self.parent = parent
        self.task_parents = dict(task_parents or {})
        self.announce_timeout = announce_timeout
        self.delivery = LineageDelivery()
        self.client = _CountingClient(client, self.delivery, log)
        self._thread = threading.Thread(target=self._main, name=f"dbtbus-lineage-{run_id}", daemon=True)
        self._stop = threading.Event()
        self._announced = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def finish(self, timeout: float) -> LineageDelivery:
        """Wait at most ``timeout`` seconds for the attempt's last events, then stop (what is left is logged).
        An attempt that was never announced (the task failed before its producer started) has none to wait for."""
        self._thread.join(min(timeout, 1.0))  # a few polls of the bus: long enough to see a late announcement
        if self._thread.is_alive() and self._announced.is_set():
            self._thread.join(max(timeout - 1.0, 0.0))
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(5.0)
            self.delivery.error = self.delivery.error or (
                f"stopped {timeout:g} s after dbt ended, before the run's end" if self._announced.is_set()
                else "stopped: the attempt was never announced on the bus")
            self.log.warning("dbtbus: OpenLineage for run %s %s", self.run_id, self.delivery.error)
        return self.delivery

    def _main(self) -> None:
        import anyio

        try:
            anyio.run(self._run)
        except Exception as exc:  # the producer's task must not fail for its lineage: said, never raised
            self.delivery.error = f"{type(exc).__name__}: {exc}"
            self.log.warning("dbtbus: OpenLineage for run %s stopped: %s", self.run_id, self.delivery.error)

    async def _run(self) -> None:
        import anyio

        from .._bus import connect
        from ..lineage import aemit_lineage, naming_from_run

        async with anyio.create_task_group() as group:
            async def watch_stop() -> None:
                # A threading.Event, set from the task's thread: an anyio.Event cannot be set from there.
                while not self._stop.is_set():  # noqa: ASYNC110
                    await anyio.sleep(0.2)
                group.cancel_scope.cancel()

            async def follow() -> None:
                async with connect(self.url) as bus:
                    deadline = time.monotonic() + self.announce_timeout
                    while True:  # this attempt's RunStarted first: the log may still end with the last try's end
                        started = await bus.run_started(self.run_id)
                        if started is not None and started.attempt >= self.attempt:
                            self._announced.set()
                            break
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"attempt {self.attempt} was not announced on the bus")
                        await anyio.sleep(0.1)
                    result = await aemit_lineage(
                        bus, self.run_id, naming=naming_from_run, client=self.client, parent=self.parent,
                        task_parents=self.task_parents, since_attempt=self.attempt)
                    self.delivery.ended = result.ended or result.lost
                group.cancel_scope.cancel()

            group.start_soon(watch_stop)
            group.start_soon(follow)
