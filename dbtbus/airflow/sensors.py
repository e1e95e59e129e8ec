"""``DbtNodeSensor``: one Airflow task per dbt node, waiting through the bus (deferrable by default)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

from airflow.sdk import BaseSensorOperator
from airflow.triggers.base import StartTriggerArgs

from ._compat import AirflowException, AirflowFailException, AirflowSkipException
from ._run_id import run_id_from_context
from .triggers import CLASSPATH, DbtNodeTrigger, outcome_payload, resolve_bus_url

__all__ = ["DbtNodeSensor"]


def _delta(seconds: float | None) -> timedelta | None:
    return timedelta(seconds=seconds) if seconds else None


class DbtNodeSensor(BaseSensorOperator):  # type: ignore[misc,unused-ignore]
    """Succeeds when dbt node ``unique_id`` of the DAG run's dbtbus run succeeds; fails as soon as it cannot.

    ================================  ===============================================================
    outcome on the bus                task
    ================================  ===============================================================
    success / pass / warn / no-op     success (returns a short summary, the task's XCom)
    failed (or a test, include_tests)  failed, retryable (``AirflowException``)
    upstream failed                   failed, retryable; the log names the failing ancestor
    not run (run finished)            skipped (``not_run="skip"``, default) or failed (``"fail"``)
    not run (producer crashed)        failed, retryable
    not in the run                    failed, not retryable (a wiring mistake)
    producer lost                     failed, retryable — within 2 heartbeats, not at the timeout
    timeout                           failed, retryable
    ================================  ===============================================================

    ``deferrable=True`` (default) waits in the triggerer; ``start_from_trigger=True`` (default) makes the
    scheduler put the task straight into the triggerer without ever taking a worker slot to start it. With
    ``deferrable=False`` the task blocks a worker in ``dbtbus.wait_sync`` for up to ``timeout``.

    On a retry (``try_number > 1``) once the producer has finished or been lost, the sensor re-runs dbt for
    its own node with the producer's flags (``dbt build --select <node>`` with ``include_tests``, else
    ``run``/``seed``/``snapshot``); while the producer is still running (its own retry), it waits instead.

    The run id is derived from the DAG run (see :func:`dbtbus.airflow.dbtbus_run_id`) with ``run_group``
    (the rendered task group's id), unless ``dbtbus_run_id`` is given. ``bus_url="xcom://"`` uses the XCom
    bus carried by ``carrier_task_id``.
    """

    template_fields: Sequence[str] = ("bus_url", "dbtbus_run_id", "unique_id")
    ui_color = "#d8f1e6"

    def __init__(
        self,
        *,
        bus_url: str,
        unique_id: str,
        include_tests: bool = False,
        run_group: str | None = None,
        dbtbus_run_id: str | None = None,
        carrier_task_id: str | None = None,
        not_run: Literal["skip", "fail"] = "skip",
        deferrable: bool = True,
        start_from_trigger: bool = True,
        rerun_on_retry: bool = True,
        dbt_executable: str | None = None,
        dbt_env: dict[str, str] | None = None,
        dbt_cwd: str | None = None,
        timeout: float | timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        if not_run not in ("skip", "fail"):
            raise ValueError("not_run must be 'skip' or 'fail'")
        kwargs.setdefault("poke_interval", 5)
        super().__init__(timeout=timeout if timeout is not None else 7 * 24 * 3600, **kwargs)
        self.bus_url = bus_url
        self.unique_id = unique_id
        self.include_tests = include_tests
        self.run_group = run_group
        self.dbtbus_run_id = dbtbus_run_id
        self.carrier_task_id = carrier_task_id
        self.not_run = not_run
        self.deferrable = deferrable
        self.rerun_on_retry = rerun_on_retry
        self.dbt_executable = dbt_executable
        self.dbt_env = dbt_env
        self.dbt_cwd = dbt_cwd
        self.start_from_trigger = bool(deferrable and start_from_trigger)
        if self.start_from_trigger:
            self.start_trigger_args = StartTriggerArgs(
                trigger_cls=CLASSPATH,
                trigger_kwargs=self._trigger_kwargs(None, bus_url, retry_check=rerun_on_retry),
                next_method="execute_complete",
                next_kwargs=None,
                timeout=_delta(self._timeout_seconds()),
            )

    # ------------------------------------------------------------------------------------------ helpers

    def _timeout_seconds(self) -> float | None:
        timeout: Any = self.timeout
        if isinstance(timeout, timedelta):
            timeout = timeout.total_seconds()
        if timeout is None or math.isinf(float(timeout)):
            return None
        return float(timeout)

    def _trigger_kwargs(self, run_id: str | None, bus_url: str, *, retry_check: bool) -> dict[str, Any]:
        return {
            "bus_url": bus_url,
            "run_id": run_id,
            "unique_id": self.unique_id,
            "timeout": self._timeout_seconds(),
            "include_tests": self.include_tests,
            "run_group": self.run_group,
            "carrier_task_id": self.carrier_task_id,
            "retry_check": retry_check,
        }

    def _run_id(self, context: Any) -> str:
        return self.dbtbus_run_id or run_id_from_context(context, self.run_group)

    def _url(self, context: Any) -> str:
        return resolve_bus_url(self.bus_url, context["ti"], self.carrier_task_id)

    # ------------------------------------------------------------------------------------------ execution

    def execute(self, context: Any) -> Any:
        run_id = self._run_id(context)
        url = self._url(context)
        try_number = int(getattr(context["ti"], "try_number", 1) or 1)
        if try_number > 1 and self.rerun_on_retry:
            rerun = self._retry_decision(url, run_id)
            if rerun is not None:
                return self._rerun(rerun, run_id, url)
        if self.deferrable:
            done = self._quick(url, run_id)
            if done is not None:  # already succeeded: no deferral, no second task run
                return self.execute_complete(context, outcome_payload(run_id, self.unique_id, done))
            timeout = self._timeout_seconds()
            self.defer(
                trigger=DbtNodeTrigger(**self._trigger_kwargs(run_id, url, retry_check=False)),
                method_name="execute_complete",
                timeout=_delta(timeout),
            )
        return self._wait_blocking(url, run_id)

    def poke(self, context: Any) -> bool:
        """One look at the bus (for ``mode='reschedule'`` users): True once the node succeeded."""
        import anyio

        from .._bus import connect

        async def look() -> Any:
            async with connect(self._url(context)) as bus:
                state = await bus.run_state(self._run_id(context))
                found = state.outcome(self.unique_id, include_tests=self.include_tests)
                if not found.terminal:
                    return None
                return found.record if found.ok else found.error()

        outcome = anyio.run(look)
        if outcome is None:
            return False
        self.execute_complete(context, outcome_payload(self._run_id(context), self.unique_id, outcome))
        return True

    def _quick(self, url: str, run_id: str) -> Any:
        import anyio

        from .._bus import connect
        from .triggers import quick_success

        async def look() -> Any:
            async with connect(url) as bus:
                return await quick_success(bus, run_id, self.unique_id, self.include_tests)

        try:
            return anyio.run(look)
        except Exception as exc:  # the trigger will report it properly
            self.log.debug("dbtbus: quick look failed: %s", exc)
            return None

    def _wait_blocking(self, url: str, run_id: str) -> Any:
        import anyio

        from .._bus import connect
        from .._exceptions import DbtBusError
        from .triggers import quick_success

        async def wait() -> Any:
            async with connect(url) as bus:
                quick = await quick_success(bus, run_id, self.unique_id, self.include_tests)
                if quick is not None:
                    return quick
                return await bus.wait(run_id, self.unique_id, timeout=self._timeout_seconds(),
                                      include_tests=self.include_tests)

        outcome: Any
        try:
            outcome = anyio.run(wait)
        except DbtBusError as exc:
            outcome = exc
        return self.execute_complete({}, outcome_payload(run_id, self.unique_id, outcome))

    def _retry_decision(self, url: str, run_id: str) -> list[str] | None:
        """On a retry: the producer's args when the node must be re-run here, None to wait on the bus."""
        import anyio

        from .._bus import connect

        async def look() -> list[str] | None:
            async with connect(url) as bus:
                state = await bus.run_state(run_id)
            if state.started is None or (state.ending is None and not state.lost):
                return None  # the producer has not finished (or is retrying): wait for it
            if state.outcome(self.unique_id, include_tests=self.include_tests).ok:
                return None  # already good: the wait answers at once
            return list(state.started.args)

        result: list[str] | None = anyio.run(look)
        return result

    def _rerun(self, producer_args: list[str], run_id: str, url: str) -> Any:
        from ._dbt import rerun_args, run_dbt

        args = rerun_args(producer_args, self.unique_id, include_tests=self.include_tests)
        self.log.info("dbtbus: retry of %s in run %s: re-running dbt %s", self.unique_id, run_id, " ".join(args))
        ok, summary = run_dbt(args, dbt_executable=self.dbt_executable, env=self.dbt_env, cwd=self.dbt_cwd)
        if summary:
            self.log.info("dbt said:\n%s", summary)
        if not ok:
            raise AirflowException(f"re-running {self.unique_id} failed (dbt {' '.join(args)})")
        return {"unique_id": self.unique_id, "run_id": run_id, "status": "success", "rerun": True}

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        """Map the trigger's payload to the task's outcome."""
        event = dict(event or {})
        status = event.get("status")
        uid = event.get("unique_id", self.unique_id)
        run_id = event.get("run_id")
        message = event.get("message") or ""
        if status == "success":
            self.log.info("dbtbus: %s %s in %ss (run %s) %s", uid, event.get("node_status"),
                          event.get("execution_time"), run_id, message)
            return {k: event.get(k) for k in ("unique_id", "run_id", "node_status", "execution_time",
                                              "relation_name", "message")}
        if status == "rerun":
            if context and "ti" in context:
                args = self._retry_decision(self._url(context), str(run_id))
                if args is not None:
                    return self._rerun(args, str(run_id), self._url(context))
                return self._wait_blocking(self._url(context), str(run_id))
            raise AirflowException(f"{uid}: the producer finished without a usable result: {message}")
        if status == "failed":
            failed = event.get("failed_node") or uid
            self.log.error("dbtbus: %s failed (%s): %s", failed, event.get("node_status"), message)
            raise AirflowException(f"dbt node {uid} failed: {message}")
        if status == "upstream_failed":
            cause = event.get("cause")
            self.log.error("dbtbus: %s will not run: its ancestor %s failed (%s): %s", uid, cause,
                           event.get("cause_status"), event.get("cause_message"))
            raise AirflowException(f"dbt node {uid}: upstream {cause} failed ({event.get('cause_status')}): "
                                   f"{event.get('cause_message')}")
        if status == "not_run":
            if event.get("crashed"):
                raise AirflowException(f"dbt node {uid} was not run: the producer crashed ({event.get('crash')})")
            if self.not_run == "skip":
                raise AirflowSkipException(f"dbt node {uid} was not run: {message}")
            raise AirflowException(f"dbt node {uid} was not run: {message}")
        if status == "not_in_run":
            raise AirflowFailException(f"dbt node {uid} is not in run {run_id}: {message}")
        if status == "producer_lost":
            raise AirflowException(f"the dbt producer of run {run_id} was lost before {uid} finished: {message}")
        if status == "timeout":
            raise AirflowException(f"timed out waiting for dbt node {uid}: {message}")
        raise AirflowException(f"waiting for dbt node {uid} failed: {event.get('error_type')}: {message}")
