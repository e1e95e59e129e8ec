"""A custom operator that waits for one dbt node with ``dbtbus.wait`` — a sketch to adapt.

Classic (non-deferrable) Airflow operators, Dagster ops, Prefect tasks and cron scripts have no event loop;
``dbtbus.wait`` blocks until the node's outcome is known and maps it to the orchestrator's own verdicts:

=======================  =========================================================
outcome                  what the operator does
=======================  =========================================================
success / pass / warn    returns a small summary (pushed to XCom in Airflow)
NodeFailed               fails the task (no retry: the data is wrong, not the infra)
UpstreamFailed           skips the task (dbt skipped the node; nothing to do)
NodeNotRun / NotInRun    skips the task
ProducerLost             fails the task *retryably* (the dbt process died)
WaitTimeout              fails the task retryably
=======================  =========================================================

With Airflow installed the Airflow exceptions are used; without it, stand-ins with the same names keep
this file runnable anywhere. ``python examples/custom_operator.py`` runs a self-contained demonstration
on the in-memory bus (a fabricated run published from a thread).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import dbtbus

try:  # pragma: no cover - depends on the environment
    from airflow.exceptions import AirflowException, AirflowFailException, AirflowSkipException
except ImportError:

    class AirflowException(Exception):  # type: ignore[no-redef]
        """A task failure the orchestrator may retry."""

    class AirflowFailException(AirflowException):  # type: ignore[no-redef]
        """A task failure that must not be retried."""

    class AirflowSkipException(AirflowException):  # type: ignore[no-redef]
        """The task is skipped."""


class WaitForDbtNodeOperator:
    """Wait for ``unique_id`` in run ``run_id`` on the bus at ``bus_url``.

    In Airflow, subclass ``BaseOperator`` instead of ``object`` and pass ``task_id`` etc. through to it;
    ``execute`` stays as it is. ``run_id`` is usually templated, e.g. ``"{{ run_id }}"``.
    """

    template_fields = ("run_id",)

    def __init__(
        self,
        *,
        task_id: str,
        bus_url: str,
        run_id: str,
        unique_id: str,
        timeout: float | None = 3600.0,
        include_tests: bool = True,
    ) -> None:
        self.task_id = task_id
        self.bus_url = bus_url
        self.run_id = run_id
        self.unique_id = unique_id
        self.timeout = timeout
        self.include_tests = include_tests

    def execute(self, context: Any = None) -> dict[str, Any]:
        try:
            result = dbtbus.wait(
                self.bus_url,
                self.run_id,
                self.unique_id,
                timeout=self.timeout,
                include_tests=self.include_tests,
            )
        except dbtbus.NodeFailed as exc:
            raise AirflowFailException(str(exc)) from exc
        except (dbtbus.UpstreamFailed, dbtbus.NodeNotRun, dbtbus.NodeNotInRun) as exc:
            raise AirflowSkipException(str(exc)) from exc
        except (dbtbus.ProducerLost, dbtbus.WaitTimeout) as exc:
            raise AirflowException(str(exc)) from exc
        return {
            "unique_id": result.unique_id,
            "status": result.status.value,
            "execution_time": result.execution_time,
            "relation_name": result.relation_name,
        }


# ---------------------------------------------------------------------------------------------- demo


def _fabricate(url: str, run_id: str) -> None:
    """Publish a small run (a, b <- a, c, d <- c with c failing) as a producer would, slowly."""
    import anyio

    from dbtbus.testing import EventFactory

    async def main() -> None:
        run = await EventFactory(url).run(
            run_id,
            graph={
                "model.shop.a": [],
                "model.shop.b": ["model.shop.a"],
                "model.shop.c": [],
                "model.shop.d": ["model.shop.c"],
            },
        )
        await anyio.sleep(0.2)
        await run.succeed("model.shop.a")
        await anyio.sleep(0.2)
        await run.fail("model.shop.c", message="Catalog Error: Table with name nope does not exist!")
        await run.succeed("model.shop.b")
        await run.finish()

    anyio.run(main)


def demo() -> int:
    url, run_id = "memory://custom-operator-demo", f"demo-{int(time.time())}"
    publisher = threading.Thread(target=_fabricate, args=(url, run_id))
    publisher.start()  # the operators below start waiting before the run has even started
    verdicts: dict[str, str] = {}
    for node in ("model.shop.a", "model.shop.b", "model.shop.c", "model.shop.d"):
        operator = WaitForDbtNodeOperator(
            task_id=f"wait_{node}", bus_url=url, run_id=run_id, unique_id=node, timeout=30
        )
        try:
            summary = operator.execute()
        except AirflowSkipException as exc:
            verdicts[node] = f"skipped: {exc}"
        except AirflowFailException as exc:
            verdicts[node] = f"failed: {exc}"
        else:
            verdicts[node] = f"success: {summary['status']}"
        print(f"{node}: {verdicts[node]}", flush=True)
    publisher.join()
    expected = {
        "model.shop.a": "success",
        "model.shop.b": "success",
        "model.shop.c": "failed",
        "model.shop.d": "skipped",
    }
    return 0 if all(verdicts[n].startswith(v) for n, v in expected.items()) else 1


if __name__ == "__main__":
    sys.exit(demo())
