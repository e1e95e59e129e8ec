"""``DbtBusProducerOperator``: runs ONE dbt invocation and publishes every node's result on the bus."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from airflow.sdk import BaseOperator

from .._exceptions import MemrayUnavailable
from .._format import redact_url
from ._compat import AirflowException, AirflowFailException
from ._run_id import run_id_from_context
from ._urls import bus_url_for

__all__ = ["DbtBusCarrierOperator", "DbtBusProducerOperator"]


class DbtBusCarrierOperator(BaseOperator):  # type: ignore[misc,unused-ignore]
    """Creates the run on an ``xcom://`` bus before anyone reads it; its task instance carries the XComs.

    It runs once, upstream of the producer, and never again in the DAG run (a new try would make Airflow
    clear its XComs): the run's log survives the producer's retries. Readers in the triggerer ask Airflow
    whether it ran before they read anything, so no reader ever hits a missing key.
    """

    template_fields: Sequence[str] = ("dbtbus_run_id",)
    ui_color = "#e8e8e8"

    def __init__(self, *, run_group: str | None = None, dbtbus_run_id: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        self.run_group = run_group
        self.dbtbus_run_id = dbtbus_run_id

    def execute(self, context: Any) -> None:
        import anyio

        from ..backends.xcom import XComBackend

        ti = context["ti"]
        run_id = self.dbtbus_run_id or run_id_from_context(context, self.run_group)
        backend = XComBackend(dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id,
                              map_index=getattr(ti, "map_index", -1))

        async def create() -> None:
            await backend.open()
            try:
                await backend.ensure_run(run_id)
            finally:
                await backend.aclose()

        anyio.run(create)
        self.log.info("dbtbus: run %s opened on the XCom rows of %s", run_id, ti.task_id)


class DbtBusProducerOperator(BaseOperator):  # type: ignore[misc,unused-ignore]
    """Run dbt (``dbt_args``, e.g. ``["build", "--project-dir", ...]``) as the producer of the DAG run's run.

    ``invocation="in_process"`` (default) runs dbt through ``dbtRunner`` in the task's process;
    ``"subprocess"`` runs ``dbt_executable`` (another virtualenv's ``dbt``) and reads its JSON log.

    **Run id.** Derived from the DAG run — dag id, run id, map index and ``run_group`` — so every sensor of
    the run computes the same one without XCom (``dbtbus_run_id`` overrides it).

    **Retries resume.** On ``try_number > 1`` the operator reads the run from the bus and adds
    ``--exclude`` for what ``RunState.resume_excludes()`` says already succeeded (the one resume rule, the
    CLI's too), then publishes the new attempt (``RunStarted.attempt = try_number``) into the same run:
    waiting sensors keep waiting, the successes stand, the failures are up for grabs again. The attempt is
    announced before dbt is imported.

    ``bus_conn_id`` takes the bus address from an Airflow connection (``redis`` or ``dbtbus`` type).

    ``manifest_warnings``: what :func:`~dbtbus.airflow.render_dbt_task_group` found wrong with the manifest
    (a relative ``root_path``), logged again at the start of every try, where its consequence shows.

    ``node_dag_ids``: the DAGs holding the node tasks in the split layout of
    :func:`~dbtbus.airflow.render_dbt_task_group`; the producer starts their runs, with its own run's id,
    and starts dbt once their tasks wait in the triggerer (``node_dag_wait`` seconds at most), so no node
    finishes before its task waits for it. A run that exists already (an earlier try's) is left as it is.

    **memray.** ``memray_output`` (templated) profiles dbt's memory into that file: in the task's process
    for ``in_process``, under ``memray run`` in dbt's own interpreter for ``subprocess`` (memray installed
    *there*). memray never overwrites a file, so give each attempt its own, e.g.
    ``"/profiles/{{ ti.dag_id }}-{{ ti.run_id }}-{{ ti.try_number }}.bin"``. A profile that cannot be taken
    (memray missing, the file exists, its directory does not) fails the task without retrying, before
    anything is published: a retry would meet the same refusal.

    **OpenLineage.** ``openlineage`` emits every node's OpenLineage events from this task, beside dbt, on a
    thread of its own (:mod:`dbtbus.airflow._lineage`; docs/lineage.md, "In Airflow"): ``None`` (default) when
    Airflow's OpenLineage provider is installed and configured, ``True`` always, ``False`` never.
    ``openlineage_tasks`` (the render sets it): unique id → (DAG id, task id) of each node's task, whose
    OpenLineage run becomes the node's parent. Only this try's events are emitted; a transport that fails is
    logged and counted (the summary's ``openlineage``), never fails the task; the task waits at most
    ``openlineage_timeout`` seconds after dbt for the last events.

    The task fails (retryably) when dbt crashed, and — with ``fail_on_dbt_failure=True`` (default) — when
    dbt reported any failure, so a producer retry re-runs exactly what did not succeed. Returns a summary
    (counts, elapsed, success) as its XCom.
    """

    template_fields: Sequence[str] = ("bus_url", "dbt_args", "dbtbus_run_id", "dbt_env", "dbt_cwd", "memray_output")
    ui_color = "#ff9f68"

    def __init__(
        self,
        *,
        bus_url: str | None = None,
        bus_conn_id: str | None = None,
        dbt_args: Sequence[str],
        invocation: Literal["in_process", "subprocess"] = "in_process",
        dbt_executable: str | None = None,
        dbt_env: dict[str, str] | None = None,
        dbt_cwd: str | None = None,
        run_group: str | None = None,
        dbtbus_run_id: str | None = None,
        carrier_task_id: str | None = None,
        heartbeat_interval: float = 5.0,
        retention: float | None = None,
        resume: bool = True,
        fail_on_dbt_failure: bool = True,
        memray_output: str | None = None,
        node_dag_ids: Sequence[str] = (),
        node_dag_wait: float = 20.0,
        manifest_warnings: Sequence[str] = (),
        openlineage: bool | None = None,
        openlineage_timeout: float = 30.0,
        openlineage_tasks: Mapping[str, tuple[str, str]] | None = None,
        **kwargs: Any,
    ) -> None:
        if invocation not in ("in_process", "subprocess"):
            raise ValueError("invocation must be 'in_process' or 'subprocess'")
        if bus_url is None and bus_conn_id is None:
            raise ValueError("DbtBusProducerOperator needs bus_url or bus_conn_id")
        super().__init__(**kwargs)
        self.bus_url = bus_url
        self.bus_conn_id = bus_conn_id
        self.dbt_args = list(dbt_args)
        self.invocation = invocation
        self.dbt_executable = dbt_executable
        self.dbt_env = dbt_env
        self.dbt_cwd = dbt_cwd
        self.run_group = run_group
        self.dbtbus_run_id = dbtbus_run_id
        self.carrier_task_id = carrier_task_id
        self.heartbeat_interval = heartbeat_interval
        self.retention = retention
        self.resume = resume
        self.fail_on_dbt_failure = fail_on_dbt_failure
        self.memray_output = memray_output
        self.node_dag_ids = list(node_dag_ids)
        self.node_dag_wait = node_dag_wait
        self.manifest_warnings = list(manifest_warnings)
        self.openlineage = openlineage
        self.openlineage_timeout = openlineage_timeout
        self.openlineage_tasks = dict(openlineage_tasks or {})

    def _resumed(self, url: str, run_id: str, args: list[str]) -> tuple[list[str], list[str]]:
        """This attempt's dbt arguments, and the nodes it leaves out (:func:`dbtbus._dbt.args.resume_args`)."""
        import anyio

        from .._bus import connect
        from .._dbt.args import resume_args

        async def look() -> tuple[list[str], list[str]]:
            async with connect(url) as bus:
                return resume_args(await bus.run_state(run_id), args)

        result: tuple[list[str], list[str]] = anyio.run(look)
        return result

    def execute(self, context: Any) -> Any:
        # Nothing heavy before the Producer: it announces this attempt (RunStarted, heartbeats) before dbt is
        # imported, so a sensor's retry never mistakes attempt N-1's ending for the last word.
        from ..producer import Producer
        from ..producer._memray import output_path

        ti = context["ti"]
        for warning in self.manifest_warnings:  # said where the DAG was parsed; the failure shows here
            self.log.warning("dbtbus: %s", warning)
        run_id = self.dbtbus_run_id or run_id_from_context(context, self.run_group)
        url = bus_url_for(self.bus_url, self.bus_conn_id, ti, self.carrier_task_id)
        attempt = int(getattr(ti, "try_number", 1) or 1)
        if self.node_dag_ids:
            from ._dag_runs import start_dag_runs, wait_until_waiting

            started = start_dag_runs(self.node_dag_ids, ti.run_id, {"dbtbus_run_id": run_id}, self.log)
            waited = wait_until_waiting([d for d, how in started.items() if how in ("started", "existed")],
                                        ti.run_id, self.node_dag_wait, self.log)
            self.log.info("dbtbus: the node DAGs' runs %s (their tasks waiting after %.1f s): %s", ti.run_id,
                          waited, ", ".join(f"{dag_id} {how}" for dag_id, how in started.items()))
        producer = Producer(url, run_id, heartbeat_interval=self.heartbeat_interval, attempt=attempt,
                            retention=self.retention, memray_output=self.memray_output or None)
        args = list(self.dbt_args)
        if attempt > 1 and self.resume:
            args, done = self._resumed(url, run_id, args)
            if done:
                self.log.info("dbtbus: attempt %d of run %s resumes; %d nodes already succeeded: %s",
                              attempt, run_id, len(done), ", ".join(done))
        self.log.info("dbtbus: producing run %s on %s (attempt %d): dbt %s", run_id, redact_url(url), attempt,
                      " ".join(args))
        lineage = self._lineage(context, url, run_id, attempt)
        try:
            if self.invocation == "subprocess":
                result = producer.invoke_subprocess(args, dbt_executable=self.dbt_executable, env=self._env(),
                                                    cwd=self.dbt_cwd)
            else:
                result = producer.invoke(args)
        except MemrayUnavailable as exc:
            raise AirflowFailException(f"dbtbus: no memray profile for run {run_id}: {exc}") from exc
        finally:
            delivery = lineage.finish(self.openlineage_timeout) if lineage is not None else None
        profile = str(output_path(self.memray_output)) if self.memray_output else None
        if profile:
            self.log.info("dbtbus: dbt's memory profile is in %s (memray flamegraph %s)", profile, profile)
        summary = {
            "run_id": run_id,
            "attempt": attempt,
            "success": result.success,
            "crashed": result.crashed,
            "exit_code": result.exit_code,
            "counts": dict(result.counts),
            "elapsed": result.elapsed,
            "error": result.error,
        }
        if profile:
            summary["memray_output"] = profile
        if delivery is not None:
            summary["openlineage"] = delivery.summary()
        self.log.info("dbtbus: run %s ended: %s", run_id, summary)
        if result.crashed:
            raise AirflowException(f"dbt crashed in run {run_id}: {result.error}")
        if not result.success and self.fail_on_dbt_failure:
            failed = sorted(uid for uid, r in result.results.items() if r.status.is_failure)
            raise AirflowException(f"dbt reported failures in run {run_id}: {', '.join(failed) or result.error}")
        return summary

    def _lineage(self, context: Any, url: str, run_id: str, attempt: int) -> Any:
        """This try's OpenLineage emitter, started; ``None`` when off. Never raises: lineage that cannot start
        is logged, and dbt runs all the same."""
        from ._lineage import (
            ProducerLineage,
            lineage_parents,
            openlineage_client,
            provider_installed,
            wants_openlineage,
        )

        on, why = wants_openlineage(self.openlineage)
        self.log.info("dbtbus: OpenLineage %s (%s)", "on" if on else "off", why)
        if not on:
            return None
        try:
            parent: Any = None
            parents: dict[str, Any] = {}
            if provider_installed():
                parent, parents = lineage_parents(context["ti"], context["dag_run"], self.openlineage_tasks, self.log)
            lineage = ProducerLineage(url, run_id, attempt, client=openlineage_client(), log=self.log,
                                      parent=parent, task_parents=parents)
            lineage.start()
        except Exception as exc:  # a client that cannot be made, a provider that refuses: dbt runs regardless
            self.log.warning("dbtbus: OpenLineage not emitted for run %s: %s: %s", run_id, type(exc).__name__, exc)
            return None
        return lineage

    def _env(self) -> dict[str, str] | None:
        if self.dbt_env is None:
            return None
        return {**os.environ, **self.dbt_env}
