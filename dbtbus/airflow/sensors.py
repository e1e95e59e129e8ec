"""``DbtNodeSensor``: one Airflow task per dbt node, waiting through the bus (in the triggerer by default)."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

from airflow.sdk import BaseSensorOperator
from airflow.triggers.base import StartTriggerArgs

from .._outcome import Outcome
from ._compat import AirflowException, AirflowFailException, AirflowSkipException
from ._policy import decide
from ._run_id import run_id_from_context
from ._states import airflow_state, log_outcome, result_summary
from ._urls import bus_url_for
from .triggers import CLASSPATH, NODE_DAG_CLASSPATH, DbtNodeDagTrigger, DbtNodeTrigger

__all__ = ["DbtNodeDagSensor", "DbtNodeSensor"]


#: What starts a template in Jinja's default syntax.
_JINJA_MARKS = ("{{", "{%", "{#")


def _fields_holding_templates(task: Any) -> Sequence[str]:
    """``task``'s template fields less those whose value renders to itself: None, or a plain string in a DAG
    that keeps Jinja's default syntax and plain string rendering.

    Airflow serializes every template field's value into the DAG, through a lookup of its configuration per
    field, on every parse of the DAG file, and its triggerer deserializes a node task's whole DAG once per
    trigger it starts. A node task's bus URL and unique id are plain strings, so leaving them out cuts the
    serialized DAG by a tenth and its serialization by a quarter, and renders nothing differently. A task
    not yet in a DAG, a DAG with its own Jinja settings, or a task reading templates from files keeps every
    field.
    """
    fields = tuple(task.template_fields)
    dag = task.dag if task.has_dag() else None
    if dag is None or dag.jinja_environment_kwargs or dag.render_template_as_native_obj or task.template_ext:
        return fields
    return tuple(name for name in fields if _holds_template(getattr(task, name, None)))


def _holds_template(value: Any) -> bool:
    if value is None:
        return False
    return not isinstance(value, str) or any(mark in value for mark in _JINJA_MARKS)


def _delta(seconds: float | None) -> timedelta | None:
    return timedelta(seconds=seconds) if seconds else None


class DbtNodeSensor(BaseSensorOperator):  # type: ignore[misc,unused-ignore]
    """Succeeds when dbt node ``unique_id`` of the DAG run's dbtbus run succeeds; fails as soon as it cannot.

    The Airflow state of each outcome is the table in :mod:`dbtbus.airflow._states` (``AIRFLOW_STATE``,
    keyed by :class:`dbtbus.OutcomeKind`): success → success (the node's result summary as XCom); failed,
    upstream failed, producer lost, timeout → failed (retryable; an upstream failure's log names the root
    cause and its message); not run → skipped (``not_run="skip"``, default) or failed (``"fail"``, or when the
    producer crashed); not in the run → failed without retries (a wiring mistake).

    ``deferrable=True`` (default) waits in the triggerer, and ``start_from_trigger=True`` (default) makes the
    scheduler hand the task straight to the triggerer: no worker slot is ever taken, and the trigger ends the
    task itself (task-end events). With ``deferrable=False`` the task blocks a worker for up to ``timeout``.

    On a retry (``try_number > 1``) the sensor re-runs dbt for its own node with the producer's flags
    (``dbt build --select <node>`` with ``include_tests``, else ``run``/``seed``/``snapshot``) — but only once
    the producer is done for good (``producer_task_id``: Airflow says its task instance is terminal); while
    the producer has a try left it waits for the producer's next attempt instead.

    The run id is derived from the DAG run (see :func:`dbtbus.airflow.dbtbus_run_id`) with ``run_group``
    (the rendered task group's id), unless ``dbtbus_run_id`` is given; ``run_dag_id`` names the DAG whose run
    holds the producer when the sensor lives in a DAG of its own (the split layout of
    :func:`~dbtbus.airflow.render_dbt_task_group`, whose node DAG runs share the producer's run id).
    ``bus_url="xcom://"`` uses the XCom bus carried by ``carrier_task_id``; ``bus_conn_id`` takes the address
    from an Airflow connection.

    **Outlets.** A sensor given ``outlets`` (Airflow assets: :func:`~dbtbus.airflow.render_dbt_task_group`'s
    ``emit_assets`` gives each node task its relation's) emits an asset event for each when its node
    succeeds, with the node's metadata as the event's extra (:func:`dbtbus.airflow._assets.asset_extra`).
    Airflow 3.3 registers outlets only from a worker's success report, so such a sensor's success is ended on
    a worker (one short worker run); its failures, skips and nodes not run still end in the triggerer and
    emit nothing.

    **Success callbacks.** Airflow 3.3 runs a task's ``on_success_callback`` only on a worker: for a success
    ended in the triggerer it sends the dag-processor a callback request, which the dag-processor drops after
    parsing the DAG file. A sensor with an ``on_success_callback`` therefore ends its success on a worker too,
    as one with outlets does. Failure and retry callbacks run from the triggerer's end as usual.
    """

    template_fields: Sequence[str] = ("bus_url", "dbtbus_run_id", "unique_id")
    ui_color = "#d8f1e6"

    def __init__(
        self,
        *,
        unique_id: str,
        bus_url: str | None = None,
        bus_conn_id: str | None = None,
        include_tests: bool = False,
        run_group: str | None = None,
        dbtbus_run_id: str | None = None,
        carrier_task_id: str | None = None,
        producer_task_id: str | None = None,
        not_run: Literal["skip", "fail"] = "skip",
        deferrable: bool = True,
        start_from_trigger: bool = True,
        rerun_on_retry: bool = True,
        dbt_executable: str | None = None,
        dbt_env: dict[str, str] | None = None,
        dbt_cwd: str | None = None,
        timeout: float | timedelta | None = None,
        run_dag_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not_run not in ("skip", "fail"):
            raise ValueError("not_run must be 'skip' or 'fail'")
        if bus_url is None and bus_conn_id is None:
            raise ValueError("DbtNodeSensor needs bus_url or bus_conn_id")
        kwargs.setdefault("poke_interval", 5)
        super().__init__(timeout=timeout if timeout is not None else 7 * 24 * 3600, **kwargs)
        self.bus_url = bus_url
        self.bus_conn_id = bus_conn_id
        self.unique_id = unique_id
        self.include_tests = include_tests
        self.run_group = run_group
        self.dbtbus_run_id = dbtbus_run_id
        self.carrier_task_id = carrier_task_id
        self.producer_task_id = producer_task_id
        self.not_run = not_run
        self.deferrable = deferrable
        self.rerun_on_retry = rerun_on_retry
        self.dbt_executable = dbt_executable
        self.dbt_env = dbt_env
        self.dbt_cwd = dbt_cwd
        self.run_dag_id = run_dag_id
        self.upstream_sensors: list[str] = []
        self.start_from_trigger = bool(deferrable and start_from_trigger)
        self._set_start_trigger_args()
        self.template_fields = _fields_holding_templates(self)

    @property
    def emits_assets(self) -> bool:
        """True when the task has outlets: its success must end on a worker to register them."""
        return bool(getattr(self, "outlets", None))

    @property
    def ends_success_on_worker(self) -> bool:
        """True when the task's success must end on a worker: to register its outlets, or to run its
        ``on_success_callback`` — Airflow 3.3 runs that callback only there (a success ended in the
        triggerer sends the dag-processor a request that it parses the DAG file for and then drops)."""
        return self.emits_assets or bool(getattr(self, "on_success_callback", None))

    def _set_start_trigger_args(self) -> None:
        if self.start_from_trigger:
            self.start_trigger_args = StartTriggerArgs(
                trigger_cls=CLASSPATH,
                trigger_kwargs=_without_defaults(self._trigger_kwargs(None, self.bus_url)),
                next_method="execute_complete",
                next_kwargs=None,
                timeout=_delta(self._timeout_seconds()),
            )

    def set_upstream_sensors(self, task_ids: Sequence[str]) -> None:
        """The sensors of this node's nearest upstream nodes: a re-run on a retry waits for them to succeed.

        A task id of this DAG, or ``"<dag_id>/<task_id>"`` of another DAG run with the same run id.
        """
        self.upstream_sensors = sorted(task_ids)
        self._set_start_trigger_args()

    # ------------------------------------------------------------------------------------------ helpers

    def _timeout_seconds(self) -> float | None:
        timeout: Any = self.timeout
        if isinstance(timeout, timedelta):
            timeout = timeout.total_seconds()
        if timeout is None or math.isinf(float(timeout)):
            return None
        return float(timeout)

    def _trigger_kwargs(self, run_id: str | None, bus_url: str | None) -> dict[str, Any]:
        return {
            "bus_url": bus_url,
            "bus_conn_id": self.bus_conn_id if bus_url is None or run_id is None else None,
            "run_id": run_id,
            "unique_id": self.unique_id,
            "timeout": self._timeout_seconds(),
            "include_tests": self.include_tests,
            "run_group": self.run_group,
            "carrier_task_id": self.carrier_task_id,
            "producer_task_id": self.producer_task_id,
            "upstream_task_ids": list(getattr(self, "upstream_sensors", [])),
            "not_run": self.not_run,
            "retry_check": self.rerun_on_retry,
            "run_dag_id": self.run_dag_id,
            "end_on_worker": self.ends_success_on_worker,
            "push_result": bool(getattr(self, "do_xcom_push", True)),
        }

    def _run_id(self, context: Any) -> str:
        return self.dbtbus_run_id or run_id_from_context(context, self.run_group, dag_id=self.run_dag_id)

    def _url(self, context: Any) -> str:
        return bus_url_for(self.bus_url, self.bus_conn_id, context["ti"], self.carrier_task_id, dag_id=self.run_dag_id)

    # ------------------------------------------------------------------------------------------ execution

    def execute(self, context: Any) -> Any:
        run_id = self._run_id(context)
        url = self._url(context)
        if self.deferrable:
            try_number = int(getattr(context["ti"], "try_number", 1) or 1)
            self.defer(
                trigger=DbtNodeTrigger(**self._trigger_kwargs(run_id, url), try_number=try_number),
                method_name="execute_complete",
                timeout=_delta(self._timeout_seconds()),
            )
        return self._wait_blocking(context, url, run_id)

    def poke(self, context: Any) -> bool:
        """One look at the bus (for ``mode='reschedule'`` users): True once the node succeeded."""
        import anyio

        from .._bus import connect

        async def look() -> Outcome | None:
            async with connect(self._url(context)) as bus:
                probed: Outcome | None = await bus.probe(self._run_id(context), self.unique_id,
                                                         include_tests=self.include_tests)
                return probed

        outcome = anyio.run(look)
        if outcome is None or not outcome.terminal:
            return False
        self._finish(outcome, context)
        return True

    def _wait_blocking(self, context: Any, url: str, run_id: str) -> Any:
        """``deferrable=False``: the trigger's decision, taken on this worker."""
        import anyio

        from .._bus import connect

        trigger = DbtNodeTrigger(**self._trigger_kwargs(run_id, url))
        trigger.task_instance = context["ti"]

        async def wait() -> Any:
            async with connect(url) as bus:
                return await decide(bus, trigger.spec(run_id))

        decision = anyio.run(wait)
        if isinstance(decision, Outcome):
            log_outcome(self.log, decision, airflow_state(decision, self.not_run))
            return self._finish(decision, context)
        return self._rerun(decision.args, run_id, decision.reason, context)

    def _rerun(self, producer_args: list[str] | None, run_id: str, reason: str, context: Any) -> Any:
        from .._dbt.args import rerun_args, run_dbt

        if not producer_args:
            raise AirflowException(f"cannot re-run {self.unique_id}: the producer of run {run_id} never published "
                                   f"its dbt command ({reason})")
        args = rerun_args(producer_args, self.unique_id, include_tests=self.include_tests)
        self.log.info("dbtbus: %s; re-running dbt %s", reason, " ".join(args))
        ok, summary = run_dbt(args, dbt_executable=self.dbt_executable, env=self.dbt_env, cwd=self.dbt_cwd)
        if summary:
            self.log.info("dbt said:\n%s", summary)
        if not ok:
            raise AirflowException(f"re-running {self.unique_id} failed (dbt {' '.join(args)})")
        # The node succeeded here, not on the bus: its asset events say so (no adapter figures: dbt's own
        # summary was only logged).
        self._emit_extra(context, {"unique_id": self.unique_id, "run_id": run_id,
                                   "attempt": int(getattr(context["ti"], "try_number", 1) or 1),
                                   "status": "success", "rerun": True})
        return {"unique_id": self.unique_id, "run_id": run_id, "node_status": "success", "rerun": True}

    def _finish(self, outcome: Outcome, context: Any) -> Any:
        """Return the summary (success, with the outlets' asset events) or raise what the state table says."""
        state = airflow_state(outcome, self.not_run)
        if state == "success":
            if self.emits_assets:
                from ._assets import asset_extra

                self._emit_extra(context, asset_extra(outcome))
            return result_summary(outcome)
        message = outcome.explain()
        if state == "skipped":
            raise AirflowSkipException(message)
        if state == "fail_now":
            raise AirflowFailException(message)
        raise AirflowException(message)

    def _emit_extra(self, context: Any, extra: dict[str, Any]) -> None:
        """Give every asset outlet's event the node's metadata; the Task SDK sends them with the success."""
        if not self.emits_assets:
            return
        from airflow.sdk import Asset

        events = context["outlet_events"]
        for outlet in self.outlets:
            if isinstance(outlet, Asset):
                events[outlet].extra.update(extra)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        """Resume from the trigger: a re-run, or an outcome the trigger did not end the task with itself (a
        success with outlets, which only a worker can register; a no-retry failure; any outcome under
        ``dag.test()``)."""
        event = dict(event or {})
        if event.get("status") == "rerun":
            return self._rerun(event.get("args"), str(event.get("run_id")), str(event.get("message") or ""),
                               context)
        if event.get("status") == "outcome":
            return self._finish(Outcome.from_dict(event["outcome"]), context)
        raise AirflowException(f"dbtbus: unexpected trigger event for {self.unique_id}: {event!r}")


class DbtNodeDagSensor(BaseSensorOperator):  # type: ignore[misc,unused-ignore]
    """The rendering DAG's task for one node DAG of the split layout (see :func:`render_dbt_task_group`).

    It starts in the triggerer with the DAG run and ends with :class:`~dbtbus.airflow.triggers.DbtNodeDagTrigger`:
    successful the moment every node of ``node_dag_id`` succeeded on the bus, else as that DAG's run ends (its
    log naming each node that did not succeed). Downstream tasks of the rendered group wait for these.
    """

    ui_color = "#c8e6d7"

    def __init__(
        self,
        *,
        node_dag_id: str,
        unique_ids: Sequence[str],
        bus_url: str | None = None,
        bus_conn_id: str | None = None,
        run_group: str | None = None,
        carrier_task_id: str | None = None,
        producer_task_id: str | None = None,
        include_tests: bool = True,
        start_timeout: float = 120.0,
        **kwargs: Any,
    ) -> None:
        if bus_url is None and bus_conn_id is None:
            raise ValueError("DbtNodeDagSensor needs bus_url or bus_conn_id")
        kwargs.setdefault("retries", 0)  # it reports a run that has ended: trying again changes nothing
        super().__init__(**kwargs)
        self.node_dag_id = node_dag_id
        self.unique_ids = list(unique_ids)
        self.trigger_kwargs: dict[str, Any] = {
            "dag_id": node_dag_id, "unique_ids": list(unique_ids), "bus_url": bus_url, "bus_conn_id": bus_conn_id,
            "run_group": run_group, "carrier_task_id": carrier_task_id, "producer_task_id": producer_task_id,
            "include_tests": include_tests, "start_timeout": start_timeout,
        }
        self.start_from_trigger = True
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls=NODE_DAG_CLASSPATH,
            trigger_kwargs={k: v for k, v in self.trigger_kwargs.items() if v is not None},
            next_method="execute_complete",
            next_kwargs=None,
            timeout=None,
        )

    def execute(self, context: Any) -> Any:
        """Only where the task did not start in the triggerer (``dag.test()``): defer to the same trigger."""
        self.defer(trigger=DbtNodeDagTrigger(**self.trigger_kwargs), method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        event = dict(event or {})
        if event.get("status") == "success":
            return {"dag_id": self.node_dag_id, "nodes": len(self.unique_ids), "summary": event.get("message")}
        raise AirflowException(str(event.get("message") or f"dbtbus: the node DAG {self.node_dag_id} failed"))


@functools.cache
def _trigger_defaults() -> dict[str, Any]:
    params = inspect.signature(DbtNodeTrigger.__init__).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _without_defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The trigger's keyword arguments minus those equal to its defaults.

    Every ``start_from_trigger`` sensor's arguments are part of the serialized DAG, and Airflow 3.3's triggerer
    ships and deserializes that whole DAG once per trigger it starts: each byte saved here is saved
    (sensors x sensors) times at the start of a DAG run.
    """
    defaults = _trigger_defaults()
    return {k: v for k, v in kwargs.items()
            if k not in defaults or not (v == defaults[k] or (v == [] and defaults[k] is None))}
