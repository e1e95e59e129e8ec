"""``DbtNodeTrigger``: waits in the triggerer for one dbt node through the bus (push for Redis, no loop)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from .._exceptions import (
    DbtBusError,
    NodeFailed,
    NodeNotInRun,
    NodeNotRun,
    ProducerLost,
    UpstreamFailed,
    WaitError,
    WaitTimeout,
)
from .._state import RunState
from ..backends.xcom import is_bare_xcom_url, resolve_xcom_url
from ..events import NodeResult, RunCrashed, RunFinished
from ._run_id import run_id_from_ti

__all__ = ["DbtNodeTrigger", "outcome_payload", "resolve_bus_url"]

CLASSPATH = "dbtbus.airflow.triggers.DbtNodeTrigger"


def resolve_bus_url(bus_url: str, ti: Any, carrier_task_id: str | None) -> str:
    """Fill a bare ``xcom://`` with the carrier task instance of ``ti``'s DAG run; other URLs are unchanged."""
    if not is_bare_xcom_url(bus_url):
        return bus_url
    return resolve_xcom_url(
        bus_url,
        dag_id=ti.dag_id,
        task_id=carrier_task_id or ti.task_id,
        run_id=ti.run_id,
        map_index=getattr(ti, "map_index", -1) if carrier_task_id is None else -1,
    )


def _result_payload(record: NodeResult) -> dict[str, Any]:
    return {
        "node_status": record.status.value,
        "message": record.message,
        "execution_time": record.execution_time,
        "attempt": record.attempt,
        "relation_name": record.relation_name,
        "failures": record.failures,
    }


def outcome_payload(run_id: str, unique_id: str, outcome: NodeResult | BaseException) -> dict[str, Any]:
    """A JSON-able description of a wait's outcome (what the trigger yields and the sensor maps)."""
    payload: dict[str, Any] = {"run_id": run_id, "unique_id": unique_id}
    if isinstance(outcome, NodeResult):
        payload.update(status="success", **_result_payload(outcome))
        return payload
    payload["error_type"] = type(outcome).__name__
    payload["message"] = str(outcome)
    if isinstance(outcome, UpstreamFailed):
        payload["status"] = "upstream_failed"
        payload["cause"] = outcome.cause
        if outcome.cause_record is not None:
            payload["cause_status"] = outcome.cause_record.status.value
            payload["cause_message"] = outcome.cause_record.message
    elif isinstance(outcome, NodeFailed):
        payload["status"] = "failed"
        payload["failed_node"] = outcome.record.unique_id
        payload.update(_result_payload(outcome.record))
        payload["message"] = str(outcome)
    elif isinstance(outcome, NodeNotInRun):
        payload["status"] = "not_in_run"
    elif isinstance(outcome, NodeNotRun):
        payload["status"] = "not_run"
        ending = outcome.ending
        if isinstance(ending, RunCrashed):
            payload["crashed"] = True
            payload["crash"] = ending.error
    elif isinstance(outcome, ProducerLost):
        payload["status"] = "producer_lost"
    elif isinstance(outcome, WaitTimeout):
        payload["status"] = "timeout"
    else:
        payload["status"] = "error"
    return payload


async def quick_success(bus: Any, run_id: str, unique_id: str, include_tests: bool) -> NodeResult | None:
    """The node's result when it and (``include_tests``) every test attached to it already succeeded.

    A few key lookups through :meth:`dbtbus.Bus.probe` instead of replaying the run's log; anything else
    (pending, failed, doomed) returns ``None`` and the caller waits on the bus as usual.
    """
    probed = await bus.probe(run_id, unique_id, include_tests=include_tests)
    return probed.record if probed is not None else None


class _Shared:
    """One bus per (event loop, URL) in a process, shared by every trigger that waits on it.

    A triggerer runs hundreds of triggers in one event loop: sharing the bus gives them one reader per run
    (one ``XREAD BLOCK`` stream read for Redis, one poll per interval for XCom) and one connection pool,
    instead of one per waiting task. The bus lives in a holder task and closes ``LINGER`` seconds after its
    last user left.
    """

    LINGER = 5.0

    def __init__(self) -> None:
        self.users = 0
        self.closing = False
        self.idle: asyncio.Event = asyncio.Event()
        self.ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None


_SHARED: dict[tuple[int, str, str], _Shared] = {}


async def _hold(key: tuple[int, str, str], entry: _Shared, url: str, options: dict[str, Any]) -> None:
    from .._bus import connect

    try:
        async with connect(url, **options) as bus:
            entry.ready.set_result(bus)
            while True:
                await entry.idle.wait()
                entry.idle.clear()
                await asyncio.sleep(entry.LINGER)
                if entry.users == 0:
                    entry.closing = True
                    break
    except BaseException as exc:
        if not entry.ready.done():
            entry.ready.set_exception(exc if isinstance(exc, Exception) else DbtBusError(repr(exc)))
        if not isinstance(exc, Exception):
            raise
    finally:
        entry.closing = True
        if _SHARED.get(key) is entry:
            del _SHARED[key]


def _in_process_test_comms() -> bool:
    """True inside ``dag.test()``: it runs each trigger in its own ``asyncio.run`` and its in-process comms
    swap a module global on every call (not thread-safe), so a bus lingering past the trigger must not
    share it."""
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:  # pragma: no cover
        return False
    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    return type(comms).__name__ == "InProcessSupervisorComms"


@contextlib.asynccontextmanager
async def shared_bus(url: str, options: dict[str, Any] | None = None) -> AsyncIterator[Any]:
    """``async with shared_bus(url) as bus``: the process's shared bus for ``url`` on this event loop.

    Outside asyncio (trio), a private ``connect(url)``.
    """
    from .._bus import connect

    options = dict(options or {})
    try:
        loop = asyncio.get_running_loop()
        if _in_process_test_comms():
            raise RuntimeError("dag.test(): one event loop per inline trigger, nothing to share")
    except RuntimeError:
        async with connect(url, **options) as bus:
            yield bus
        return
    key = (id(loop), url, repr(sorted(options.items())))
    entry = _SHARED.get(key)
    if entry is None or entry.closing:
        entry = _Shared()
        _SHARED[key] = entry
        entry.task = loop.create_task(_hold(key, entry, url, options), name=f"dbtbus shared bus {url}")
    entry.users += 1
    try:
        bus = await asyncio.shield(entry.ready)
        yield bus
    finally:
        entry.users -= 1
        if entry.users == 0:
            entry.idle.set()


class DbtNodeTrigger(BaseTrigger):  # type: ignore[misc,unused-ignore]
    """Wait for ``unique_id`` in run ``run_id`` on ``bus_url`` and fire one event with the outcome.

    ``run_id=None`` derives the run id from the trigger's task instance (dag id, run id, map index and
    ``run_group``): that is how a sensor started directly in the triggerer (``start_from_trigger``) finds its
    run without a worker ever computing it. ``retry_check=True`` (set by the sensor) makes a retried task
    instance's trigger fire ``{"status": "rerun"}`` when the producer has finished without a usable result
    for the node, so the sensor re-runs it on a worker.
    """

    template_fields = ("bus_url", "run_id")

    def __init__(
        self,
        bus_url: str,
        run_id: str | None,
        unique_id: str,
        timeout: float | None = None,
        include_tests: bool = False,
        *,
        run_group: str | None = None,
        carrier_task_id: str | None = None,
        retry_check: bool = False,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call,unused-ignore]
        self.bus_url = bus_url
        self.run_id = run_id
        self.unique_id = unique_id
        self.timeout = timeout
        self.include_tests = include_tests
        self.run_group = run_group
        self.carrier_task_id = carrier_task_id
        self.retry_check = retry_check
        self.connect_options = dict(connect_options or {})

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
                "retry_check": self.retry_check,
                "connect_options": self.connect_options,
            },
        )

    def _ti(self) -> Any:
        return getattr(self, "task_instance", None)

    def _resolved(self) -> tuple[str, str]:
        ti = self._ti()
        run_id = self.run_id
        url = self.bus_url
        if run_id is None or is_bare_xcom_url(url):
            if ti is None:
                raise DbtBusError("DbtNodeTrigger needs run_id (or a task instance to derive it from)")
            run_id = run_id or run_id_from_ti(ti, self.run_group)
            url = resolve_bus_url(url, ti, self.carrier_task_id)
        return url, run_id

    async def _ending(self, url: str, run_id: str) -> RunFinished | RunCrashed | None:
        import anyio

        async with shared_bus(url, self.connect_options) as bus:
            for _ in range(20):
                state: RunState = await bus.run_state(run_id)
                if state.ending is not None:
                    return state.ending
                await anyio.sleep(0.1)
        return None

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            url, run_id = self._resolved()
        except Exception as exc:
            yield TriggerEvent(  # type: ignore[no-untyped-call,unused-ignore]
                {"status": "error", "unique_id": self.unique_id, "run_id": self.run_id,
                                "error_type": type(exc).__name__, "message": str(exc)})
            return
        # Never yield inside ``connect``: the triggerer closes the generator after the first event, and a
        # task group must not be left from another task.
        outcome: NodeResult | BaseException | None = None
        rerun: str | None = None
        try:
            async with shared_bus(url, self.connect_options) as bus:
                ti = self._ti()
                if self.retry_check and int(getattr(ti, "try_number", 1) or 1) > 1:
                    state = await bus.run_state(run_id)
                    if state.ending is not None or state.lost:
                        current = state.outcome(self.unique_id, include_tests=self.include_tests)
                        if not current.ok:
                            rerun = current.message
                if rerun is None:
                    outcome = await quick_success(bus, run_id, self.unique_id, self.include_tests)
                if rerun is None and outcome is None:
                    timeout = None if self.timeout is None or math.isinf(self.timeout) else self.timeout
                    outcome = await bus.wait(run_id, self.unique_id, timeout=timeout, include_tests=self.include_tests)
        except NodeNotRun as exc:
            outcome = exc
            if exc.ending is None:  # the not_run record arrived before the run's ending: fetch the ending
                exc.ending = await self._ending(url, run_id)
        except WaitError as exc:
            outcome = exc
        except DbtBusError as exc:
            outcome = exc
        except Exception as exc:  # a backend's own failure: report it, the task decides
            self.log.exception("dbtbus: waiting for %s in run %s failed", self.unique_id, run_id)
            outcome = exc
        if rerun is not None:
            yield TriggerEvent(  # type: ignore[no-untyped-call,unused-ignore]
                {"status": "rerun", "run_id": run_id, "unique_id": self.unique_id, "message": rerun})
            return
        assert outcome is not None
        yield TriggerEvent(  # type: ignore[no-untyped-call,unused-ignore]
                outcome_payload(run_id, self.unique_id, outcome))
