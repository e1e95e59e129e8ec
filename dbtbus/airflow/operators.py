"""``DbtBusProducerOperator``: runs ONE dbt invocation and publishes every node's result on the bus."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from airflow.sdk import BaseOperator

from ._compat import AirflowException
from ._run_id import run_id_from_context
from .triggers import resolve_bus_url

__all__ = ["DbtBusProducerOperator"]


def resumable(state: Any) -> list[str]:
    """The nodes a retry may leave out: :meth:`dbtbus.RunState.resume_excludes` (one rule for every resume)."""
    result: list[str] = state.resume_excludes()
    return result


class DbtBusProducerOperator(BaseOperator):  # type: ignore[misc,unused-ignore]
    """Run dbt (``dbt_args``, e.g. ``["build", "--project-dir", ...]``) as the producer of the DAG run's run.

    ``invocation="in_process"`` (default) runs dbt through ``dbtRunner`` in the task's process;
    ``"subprocess"`` runs ``dbt_executable`` (another virtualenv's ``dbt``) and reads its JSON log.

    **Run id.** Derived from the DAG run — dag id, run id, map index and ``run_group`` — so every sensor of
    the run computes the same one without XCom (``dbtbus_run_id`` overrides it).

    **Retries resume.** On ``try_number > 1`` the operator reads the run from the bus and adds
    ``--exclude`` for every node that already succeeded in an earlier attempt, then publishes the new attempt
    (``RunStarted.attempt = try_number``) into the same run: waiting sensors keep waiting, the successes
    stand, the failures are up for grabs again.

    The task fails (retryably) when dbt crashed, and — with ``fail_on_dbt_failure=True`` (default) — when
    dbt reported any failure, so a producer retry re-runs exactly what did not succeed. Returns a summary
    (counts, elapsed, success) as its XCom.
    """

    template_fields: Sequence[str] = ("bus_url", "dbt_args", "dbtbus_run_id", "dbt_env", "dbt_cwd")
    ui_color = "#ff9f68"

    def __init__(
        self,
        *,
        bus_url: str,
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
        **kwargs: Any,
    ) -> None:
        if invocation not in ("in_process", "subprocess"):
            raise ValueError("invocation must be 'in_process' or 'subprocess'")
        super().__init__(**kwargs)
        self.bus_url = bus_url
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

    def _already_succeeded(self, url: str, run_id: str) -> list[str]:
        """Nodes that succeeded in an earlier attempt of the run (read once from the bus)."""
        import anyio

        from .._bus import connect

        async def look() -> list[str]:
            async with connect(url) as bus:
                state = await bus.run_state(run_id)
            if state.started is not None and state.ending is None and not state.lost:
                self.log.warning("dbtbus: run %s has an earlier attempt still in progress (no ending yet)", run_id)
            return resumable(state)

        result: list[str] = anyio.run(look)
        return result

    def execute(self, context: Any) -> Any:
        from ..producer import Producer
        from ._dbt import exclude_args, node_selector

        ti = context["ti"]
        run_id = self.dbtbus_run_id or run_id_from_context(context, self.run_group)
        url = resolve_bus_url(self.bus_url, ti, self.carrier_task_id)
        attempt = int(getattr(ti, "try_number", 1) or 1)
        args = list(self.dbt_args)
        if attempt > 1 and self.resume:
            done = self._already_succeeded(url, run_id)
            if done:
                self.log.info("dbtbus: attempt %d of run %s resumes; %d nodes already succeeded: %s",
                              attempt, run_id, len(done), ", ".join(done))
                args = exclude_args(args, sorted({node_selector(uid) for uid in done}))
        self.log.info("dbtbus: producing run %s on %s (attempt %d): dbt %s", run_id, url.split("?")[0], attempt,
                      " ".join(args))
        producer = Producer(url, run_id, heartbeat_interval=self.heartbeat_interval, attempt=attempt,
                            retention=self.retention)
        if self.invocation == "subprocess":
            result = producer.invoke_subprocess(args, dbt_executable=self.dbt_executable, env=self._env(),
                                                cwd=self.dbt_cwd)
        else:
            result = producer.invoke(args)
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
        self.log.info("dbtbus: run %s ended: %s", run_id, summary)
        if result.crashed:
            raise AirflowException(f"dbt crashed in run {run_id}: {result.error}")
        if not result.success and self.fail_on_dbt_failure:
            failed = sorted(uid for uid, r in result.results.items() if r.status.is_failure)
            raise AirflowException(f"dbt reported failures in run {run_id}: {', '.join(failed) or result.error}")
        return summary

    def _env(self) -> dict[str, str] | None:
        if self.dbt_env is None:
            return None
        import os

        return {**os.environ, **self.dbt_env}
