"""The triggers: ``DbtNodeTrigger`` waits for one dbt node through the bus and ends the task there;
``DbtNodeDagTrigger`` waits for a node DAG's run (the split layout of ``render_dbt_task_group``).

For a terminal outcome the trigger ends its task instance itself with Airflow's task-end events — no worker
ever runs the sensor:

==========================  =======================  ==================================================
``OutcomeKind``             Airflow state            how
==========================  =======================  ==================================================
``SUCCESS``                 success                  ``TaskSuccessEvent``, the node's result as XCom;
                                                     with ``end_on_worker`` (a task with outlets or an
                                                     ``on_success_callback``): back to a worker, whose
                                                     success registers the outlets and runs the callback
``FAILED``                  failed / up_for_retry    ``TaskFailedEvent`` (retries, callbacks as usual)
``UPSTREAM_FAILED``         failed / up_for_retry    ``TaskFailedEvent``; the log names the root cause
``NOT_RUN``                 skipped (``not_run=``    ``TaskSkippedEvent`` when dbt succeeded; else
                            ``"skip"``) or failed    ``TaskFailedEvent`` (a crash, dbt's own failure)
``PRODUCER_LOST``           failed / up_for_retry    ``TaskFailedEvent``
``DATA_LOST``               failed / up_for_retry    ``TaskFailedEvent``; the log says the run's records
                                                     were lost (never a skip: the node may have run)
``RUN_NOT_FOUND``           failed / up_for_retry    ``TaskFailedEvent``; the log says the run was deleted,
                                                     expired or flushed under the waiter
``TIMEOUT``                 failed / up_for_retry    ``TaskFailedEvent``
``NOT_IN_RUN``              failed, no retry         back to a worker, which raises ``AirflowFailException``
==========================  =======================  ==================================================

Why task-end events keep retries and callbacks: Airflow 3.3's triggerer hands a ``TaskFailedEvent`` to
``handle_event_submit`` (``airflow/models/trigger.py``), which loads the serialized task, asks
``is_eligible_to_retry()`` and then sets ``up_for_retry`` (clearing the next-method arguments and preparing
the next try) or ``failed``, sending the matching ``on_retry_callback`` / ``on_failure_callback`` request
through the database callback sink (the dag-processor runs it) — the same decision a worker's failure gets.
``TaskSuccessEvent`` pushes its ``xcoms`` and runs ``on_success_callback`` the same way. What an end event
cannot do is refuse retries, so the one outcome that must never be retried (a wiring mistake) goes back to a
worker. Re-running a node on a sensor's retry needs a worker too: the trigger then fires a plain event and
the sensor runs dbt for its node there.

When to re-run a node and when to wait for the producer's next attempt is :mod:`dbtbus.airflow._policy`'s
decision; the Airflow state of each outcome is :mod:`dbtbus.airflow._states`' table.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

import anyio
from airflow.triggers.base import BaseTrigger, TaskFailedEvent, TaskSkippedEvent, TaskSuccessEvent, TriggerEvent

from .._exceptions import DbtBusError
from .._outcome import Outcome
from ..backends.xcom import is_bare_xcom_url
from ._compat import in_process_test_comms
from ._dag_runs import DAG_RUN_DONE, dag_run_state
from ._policy import Rerun, WaitSpec, decide
from ._run_id import run_id_from_ti
from ._shared_bus import shared_bus
from ._states import airflow_state, alog_outcome, result_summary
from ._task_states import DagRunRef, ProducerWatch, TaskStates
from ._urls import resolve_bus_url

__all__ = ["CLASSPATH", "NODE_DAG_CLASSPATH", "DbtNodeDagTrigger", "DbtNodeTrigger"]

CLASSPATH = "dbtbus.airflow.triggers.DbtNodeTrigger"
NODE_DAG_CLASSPATH = "dbtbus.airflow.triggers.DbtNodeDagTrigger"

#: Seconds between logging the outcome and ending the task (see ``DbtNodeTrigger.run``).
LOG_FLUSH_PAUSE = 0.2


def _let_go_of_the_dag(ti: Any, context: Any) -> None:
    """Drop the task instance's task and the template context once a trigger's fields are rendered.

    Airflow 3.3 starts a ``start_from_trigger`` task with a task instance whose ``task`` belongs to a whole
    DAG deserialized for that one trigger, and a template context pointing at the same: held while the
    trigger waits, that is a copy of the DAG per waiting task. Nothing after rendering needs them.
    """
    if ti is not None and getattr(ti, "task", None) is not None:
        with contextlib.suppress(Exception):  # a task instance that refuses: it keeps its task, no harm
            ti.task = None
    with contextlib.suppress(Exception):
        context.clear()


class DbtNodeTrigger(BaseTrigger):  # type: ignore[misc,unused-ignore]
    """Wait for ``unique_id`` in run ``run_id`` on ``bus_url`` and end the task with its outcome.

    ``run_id=None`` derives the run id from the trigger's task instance (dag id, run id, map index and
    ``run_group``): that is how a sensor started directly in the triggerer (``start_from_trigger``) finds its
    run without a worker ever computing it. ``producer_task_id`` names the producer's task: the trigger asks
    Airflow about it to tell "the producer will try again" from "done for good". ``run_dag_id`` names the DAG
    whose run holds the producer (and the XCom carrier) when it is not the task's own: a node task in a DAG
    of its own (``render_dbt_task_group``'s split layout) shares the producer DAG run's run id.
    ``upstream_task_ids`` are task ids of the task's DAG or ``"<dag_id>/<task_id>"`` of another DAG's run
    with the same run id.
    ``retry_check=True`` lets a retried task instance re-run its node (see the module docstring).
    ``end_on_worker=True`` ends a success on a worker instead of in the triggerer: Airflow 3.3 registers a
    task's outlets (asset events) only when a worker reports its success (see :mod:`dbtbus.airflow._assets`),
    and runs its ``on_success_callback`` only there.
    ``push_result=False`` ends a success with no ``return_value`` XCom (the sensor's ``do_xcom_push``): the
    triggerer then writes no XCom row per task.
    """

    template_fields = ("bus_url", "run_id")

    def __init__(
        self,
        bus_url: str | None,
        run_id: str | None,
        unique_id: str,
        timeout: float | None = None,
        include_tests: bool = False,
        *,
        run_group: str | None = None,
        carrier_task_id: str | None = None,
        producer_task_id: str | None = None,
        upstream_task_ids: list[str] | None = None,
        bus_conn_id: str | None = None,
        not_run: str = "skip",
        retry_check: bool = True,
        producer_check_interval: float = 2.0,
        try_number: int | None = None,
        connect_options: dict[str, Any] | None = None,
        run_dag_id: str | None = None,
        end_on_worker: bool = False,
        push_result: bool = True,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call,unused-ignore]
        self.bus_url = bus_url
        self.run_id = run_id
        self.unique_id = unique_id
        self.timeout = timeout
        self.include_tests = include_tests
        self.run_group = run_group
        self.carrier_task_id = carrier_task_id
        self.producer_task_id = producer_task_id
        self.upstream_task_ids = list(upstream_task_ids or [])
        self.bus_conn_id = bus_conn_id
        self.not_run = not_run
        self.retry_check = retry_check
        self.producer_check_interval = producer_check_interval
        self.try_number = try_number
        self.connect_options = dict(connect_options or {})
        self.run_dag_id = run_dag_id
        self.end_on_worker = end_on_worker
        self.push_result = push_result

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASSPATH,
            {
                "bus_url": self.bus_url,
                "run_id": self.run_id,
                "unique_id": self.unique_id,
                "timeout": self.timeout,
                "include_tests": self.include_tests,
                "run_group": self.run_group,
                "carrier_task_id": self.carrier_task_id,
                "producer_task_id": self.producer_task_id,
                "upstream_task_ids": self.upstream_task_ids,
                "bus_conn_id": self.bus_conn_id,
                "not_run": self.not_run,
                "retry_check": self.retry_check,
                "producer_check_interval": self.producer_check_interval,
                "try_number": self.try_number,
                "connect_options": self.connect_options,
                "run_dag_id": self.run_dag_id,
                "end_on_worker": self.end_on_worker,
                "push_result": self.push_result,
            },
        )

    def _ti(self) -> Any:
        return getattr(self, "task_instance", None)

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Render as Airflow does, then let go of the DAG the triggerer built this trigger's task instance from.

        Airflow 3.3 starts a ``start_from_trigger`` task with a task instance whose ``task`` belongs to a whole
        DAG deserialized for that one trigger, and a template context pointing at the same: held while the
        sensor waits, that is a copy of the DAG per waiting sensor (about 1 MB each with 200 sensors). Nothing
        after rendering needs them: the trigger reads five plain fields of its task instance.
        """
        super().render_template_fields(context, jinja_env)
        _let_go_of_the_dag(self._ti(), context)

    async def _resolved(self) -> tuple[str, str]:
        ti = self._ti()
        url = self.bus_url
        if self.bus_conn_id:
            from ._urls import aconnection_url

            url = await aconnection_url(self.bus_conn_id)
        if not url:
            raise DbtBusError("DbtNodeTrigger needs bus_url or bus_conn_id")
        run_id = self.run_id
        if run_id is None or is_bare_xcom_url(url):
            if ti is None:
                raise DbtBusError("DbtNodeTrigger needs run_id (or a task instance to derive it from)")
            run_id = run_id or run_id_from_ti(ti, self.run_group, dag_id=self.run_dag_id)
            url = resolve_bus_url(url, ti, self.carrier_task_id, dag_id=self.run_dag_id)
        return url, run_id

    def spec(self, run_id: str) -> WaitSpec:
        ti = self._ti()
        # The task's try: from the triggerer's task instance, or given by a sensor that deferred from a worker
        # (``dag.test()`` runs inline triggers without one).
        try_number = self.try_number or (int(getattr(ti, "try_number", 1) or 1) if ti is not None else 1)
        producer = None
        upstream: list[tuple[DagRunRef, str]] = []
        if self.producer_task_id and ti is not None:
            own = DagRunRef(self.run_dag_id or ti.dag_id, ti.run_id)
            producer = ProducerWatch(TaskStates(own, self.producer_check_interval), self.producer_task_id)
            for ref in self.upstream_task_ids:
                dag_id, _, task_id = ref.rpartition("/")
                upstream.append((DagRunRef(dag_id or ti.dag_id, ti.run_id), task_id))
        timeout = None if self.timeout is None or math.isinf(self.timeout) else self.timeout
        return WaitSpec(run_id=run_id, unique_id=self.unique_id, include_tests=self.include_tests, timeout=timeout,
                        retrying=self.retry_check and try_number > 1, producer=producer,
                        upstream_tasks=tuple(upstream))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Never yield inside ``shared_bus``: the triggerer closes the generator after the first event, and a
        # task group must not be left from another task.
        decision: Outcome | Rerun
        try:
            url, run_id = await self._resolved()
            async with shared_bus(url, self.connect_options) as bus:
                decision = await decide(bus, self.spec(run_id))
        except Exception:
            # The bus (or Airflow) failed us, which says nothing about the node or the producer: no outcome is
            # made up. Airflow fails the task as a trigger failure (retries apply), this log says why.
            await self.log.aexception("dbtbus: waiting for %s failed", self.unique_id)
            raise
        if isinstance(decision, Rerun):
            await self.log.ainfo("dbtbus: %s will be re-run on a worker: %s", decision.unique_id, decision.reason)
        else:
            await alog_outcome(self.log, decision, airflow_state(decision, self.not_run))
        # The outcome's log line travels to the task's log file on another channel than the event; once the
        # event ends the task, the triggerer closes that file. A moment's pause keeps the line in it.
        await anyio.sleep(LOG_FLUSH_PAUSE)
        yield self.event(decision)

    def event(self, decision: Outcome | Rerun) -> TriggerEvent:
        """The event that ends the task (or sends it to a worker, for a re-run or a no-retry failure)."""
        if isinstance(decision, Rerun):
            return TriggerEvent({"status": "rerun", "run_id": decision.run_id,  # type: ignore[no-untyped-call,unused-ignore]
                                 "unique_id": decision.unique_id, "args": decision.args, "message": decision.reason})
        payload = {"status": "outcome", "outcome": decision.to_dict()}
        state = airflow_state(decision, self.not_run)
        # A success with outlets goes back to a worker: a TaskSuccessEvent would end the task without its
        # asset events (Airflow registers outlets only from a worker's success report).
        if in_process_test_comms() or state == "fail_now" or (state == "success" and self.end_on_worker):
            return TriggerEvent(payload)  # type: ignore[no-untyped-call,unused-ignore]
        if state == "success":
            return TaskSuccessEvent(xcoms={"return_value": result_summary(decision)} if self.push_result else None)
        if state == "skipped":
            return TaskSkippedEvent()
        return TaskFailedEvent()


class DbtNodeDagTrigger(BaseTrigger):  # type: ignore[misc,unused-ignore]
    """Wait until every node of a node DAG is decided on the bus, then end with that DAG's run.

    In the split layout each node task lives in a small DAG of its own, whose run the producer starts with the
    producer DAG run's run id; the rendering DAG keeps one task per node DAG, which this trigger ends:

    * every node succeeded on the bus (and the node DAG's run exists) → success at once;
    * otherwise it follows the node DAG's run to its end (node tasks may still retry and re-run their
      nodes) and ends as it ended, its log naming each node that did not succeed and why;
    * a node DAG run that was never created, or never left ``queued`` (a paused node DAG), fails it after
      ``start_timeout`` seconds with the reason.

    Waiting costs nothing while dbt runs (the shared bus reader); the run's state is polled only once every
    node is decided, every ``poll_interval`` seconds.
    """

    def __init__(
        self,
        dag_id: str,
        unique_ids: list[str],
        bus_url: str | None = None,
        *,
        bus_conn_id: str | None = None,
        run_group: str | None = None,
        carrier_task_id: str | None = None,
        producer_task_id: str | None = None,
        include_tests: bool = True,
        poll_interval: float = 0.5,
        start_timeout: float = 120.0,
        producer_check_interval: float = 2.0,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call,unused-ignore]
        self.dag_id = dag_id
        self.unique_ids = list(unique_ids)
        self.bus_url = bus_url
        self.bus_conn_id = bus_conn_id
        self.run_group = run_group
        self.carrier_task_id = carrier_task_id
        self.producer_task_id = producer_task_id
        self.include_tests = include_tests
        self.poll_interval = poll_interval
        self.start_timeout = start_timeout
        self.producer_check_interval = producer_check_interval
        self.connect_options = dict(connect_options or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            NODE_DAG_CLASSPATH,
            {
                "dag_id": self.dag_id,
                "unique_ids": self.unique_ids,
                "bus_url": self.bus_url,
                "bus_conn_id": self.bus_conn_id,
                "run_group": self.run_group,
                "carrier_task_id": self.carrier_task_id,
                "producer_task_id": self.producer_task_id,
                "include_tests": self.include_tests,
                "poll_interval": self.poll_interval,
                "start_timeout": self.start_timeout,
                "producer_check_interval": self.producer_check_interval,
                "connect_options": self.connect_options,
            },
        )

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """As :meth:`DbtNodeTrigger.render_template_fields`: let go of the DAG copy once rendered."""
        super().render_template_fields(context, jinja_env)
        _let_go_of_the_dag(self._ti(), context)

    def _ti(self) -> Any:
        return getattr(self, "task_instance", None)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            ok, verdict, detail = await self._wait()
        except Exception:
            await self.log.aexception("dbtbus: waiting for the node DAG %s failed", self.dag_id)
            raise
        if ok:
            await self.log.ainfo("dbtbus: %s", verdict)
        else:
            await self.log.aerror("dbtbus: %s%s", verdict, detail)
        await anyio.sleep(LOG_FLUSH_PAUSE)
        if in_process_test_comms():
            yield TriggerEvent({"status": "success" if ok else "failed",  # type: ignore[no-untyped-call,unused-ignore]
                                "message": verdict + detail})
        elif ok:
            yield TaskSuccessEvent(xcoms={"return_value": {"dag_id": self.dag_id, "nodes": len(self.unique_ids),
                                                           "summary": verdict}})
        else:
            yield TaskFailedEvent()

    async def _wait(self) -> tuple[bool, str, str]:
        """(succeeded, what happened, the failures' details)."""
        ti = self._ti()
        if ti is None:
            raise DbtBusError("DbtNodeDagTrigger needs its task instance (it starts from the triggerer)")
        url = self.bus_url
        if self.bus_conn_id:
            from ._urls import aconnection_url

            url = await aconnection_url(self.bus_conn_id)
        if not url:
            raise DbtBusError("DbtNodeDagTrigger needs bus_url or bus_conn_id")
        url = resolve_bus_url(url, ti, self.carrier_task_id)
        run_id = run_id_from_ti(ti, self.run_group)
        producer = None
        if self.producer_task_id:
            tasks = TaskStates(DagRunRef(ti.dag_id, ti.run_id), self.producer_check_interval)
            producer = ProducerWatch(tasks, self.producer_task_id)
        outcomes: dict[str, Outcome] = {}

        async def one(bus: Any, uid: str) -> None:
            spec = WaitSpec(run_id=run_id, unique_id=uid, include_tests=self.include_tests, timeout=None,
                            retrying=False, producer=producer)
            decision = await decide(bus, spec)
            assert isinstance(decision, Outcome)  # retrying=False: never a re-run
            outcomes[uid] = decision

        async with shared_bus(url, self.connect_options) as bus, anyio.create_task_group() as tg:
            for uid in self.unique_ids:
                tg.start_soon(one, bus, uid)
        failed = {uid: o for uid, o in outcomes.items() if not o.ok}
        detail = "".join(f"\n  {uid}: [{o.kind.value}] {o.explain()}" for uid, o in sorted(failed.items()))
        return await self._follow_dag_run(ti.run_id, not failed, detail)

    async def _follow_dag_run(self, run_id: str, all_ok: bool, detail: str) -> tuple[bool, str, str]:
        """Follow the node DAG's run to its end (all_ok: only make sure it exists)."""
        began = anyio.current_time()
        while True:
            state = await anyio.to_thread.run_sync(dag_run_state, self.dag_id, run_id)
            if state is not None and all_ok:
                return True, f"all {len(self.unique_ids)} nodes of {self.dag_id} succeeded", ""
            if state in DAG_RUN_DONE:
                verdict = f"the run {run_id} of {self.dag_id} ended {state}"
                return state == "success", verdict, "" if state == "success" else detail
            if state in (None, "queued") and anyio.current_time() - began > self.start_timeout:
                why = ("was never created: see the producer task's log" if state is None else
                       "never started (is the DAG paused?)")
                return False, f"the run {run_id} of the node DAG {self.dag_id} {why}", detail
            await anyio.sleep(self.poll_interval)
