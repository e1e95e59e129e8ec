"""``DbtNodeTrigger``: waits in the triggerer for one dbt node through the bus and ends the task there.

For a terminal outcome the trigger ends its task instance itself with Airflow's task-end events — no worker
ever runs the sensor:

==========================  =======================  ==================================================
``OutcomeKind``             Airflow state            how
==========================  =======================  ==================================================
``SUCCESS``                 success                  ``TaskSuccessEvent``, the node's result as XCom
``FAILED``                  failed / up_for_retry    ``TaskFailedEvent`` (retries, callbacks as usual)
``UPSTREAM_FAILED``         failed / up_for_retry    ``TaskFailedEvent``; the log names the root cause
``NOT_RUN``                 skipped (``not_run=``    ``TaskSkippedEvent`` when dbt succeeded; else
                            ``"skip"``) or failed    ``TaskFailedEvent`` (a crash, dbt's own failure)
``PRODUCER_LOST``           failed / up_for_retry    ``TaskFailedEvent``
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

**Retries never collide.** On a retry, the sensor re-runs its node only once the producer is done for good:
the run on the bus is over without a success for the node (``RunState.needs_rerun``) *and* Airflow says the
producer's task instance is terminal (asked through the Task SDK, ``get_task_states``). While the producer
has a try left, the sensor waits for its next attempt (``min_attempt``) instead. A sensor whose producer task
ends for good without ever answering for its node (an import error, bad arguments, killed while queued) ends
within seconds with a ``PRODUCER_LOST`` outcome naming the producer task's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from airflow.triggers.base import BaseTrigger, TaskFailedEvent, TaskSkippedEvent, TaskSuccessEvent, TriggerEvent

from .._exceptions import DbtBusError
from .._outcome import Outcome, OutcomeKind
from ..backends.xcom import is_bare_xcom_url, resolve_xcom_url
from ..events import NodeResult, RunFinished
from ._run_id import run_id_from_ti

__all__ = ["AIRFLOW_STATE", "DbtNodeTrigger", "airflow_state", "describe", "resolve_bus_url", "result_summary"]

CLASSPATH = "dbtbus.airflow.triggers.DbtNodeTrigger"

#: The Airflow state each outcome ends its task in ("fail_now": failed without a retry, from a worker).
AIRFLOW_STATE: Mapping[OutcomeKind, str] = {
    OutcomeKind.SUCCESS: "success",
    OutcomeKind.FAILED: "failed",
    OutcomeKind.UPSTREAM_FAILED: "failed",
    OutcomeKind.NOT_RUN: "skipped",
    OutcomeKind.NOT_IN_RUN: "fail_now",
    OutcomeKind.PRODUCER_LOST: "failed",
    OutcomeKind.TIMEOUT: "failed",
    OutcomeKind.PENDING: "failed",
}

#: Seconds between logging the outcome and ending the task (see ``DbtNodeTrigger.run``).
LOG_FLUSH_PAUSE = 0.2

#: Producer task-instance states after which it will never publish again in this DAG run.
PRODUCER_DONE = frozenset({"success", "failed", "upstream_failed", "skipped", "removed"})


def airflow_state(outcome: Outcome, not_run: str = "skip") -> str:
    """The Airflow state for ``outcome`` (the table above). A node not run is skipped only when dbt itself
    succeeded (``not_run="skip"``); a run that crashed or that dbt failed (bad arguments, fail-fast) fails it:
    a skip there would be a false green."""
    state = AIRFLOW_STATE[outcome.kind]
    if outcome.kind is OutcomeKind.NOT_RUN:
        ending = outcome.ending
        clean = isinstance(ending, RunFinished) and ending.success
        if not_run == "fail" or not clean:
            return "failed"
    return state


def describe(outcome: Outcome) -> str:
    """The outcome's message, plus what explains it: the root cause's message, the run's error."""
    text = outcome.message
    cause = outcome.cause_record
    if outcome.kind is OutcomeKind.UPSTREAM_FAILED and cause is not None and cause.message:
        text += f" — root cause {cause.unique_id}: {cause.message}"
    error = getattr(outcome.ending, "error", None)
    if error and error not in text:
        text += f" — the run ended with: {error}"
    return text


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


def result_summary(outcome: Outcome) -> dict[str, Any]:
    """The sensor's XCom for a success: a short summary of the node's result."""
    record: NodeResult | None = outcome.record
    return {
        "unique_id": outcome.unique_id,
        "run_id": outcome.run_id,
        "attempt": outcome.attempt,
        "node_status": record.status.value if record is not None else None,
        "execution_time": record.execution_time if record is not None else None,
        "relation_name": record.relation_name if record is not None else None,
        "message": record.message if record is not None else None,
    }


# ---------------------------------------------------------------------------------------------- shared bus


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
    """True inside ``dag.test()``: it runs each trigger in its own ``asyncio.run`` (nothing to share) and
    resumes the task with the event's payload whatever the event's class (so no task-end events there)."""
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:  # pragma: no cover
        return False
    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    return type(comms).__name__ == "InProcessSupervisorComms"


@contextlib.asynccontextmanager
async def shared_bus(url: str, options: dict[str, Any] | None = None) -> AsyncIterator[Any]:
    """``async with shared_bus(url) as bus``: the process's shared bus for ``url`` on this event loop.

    Outside asyncio (trio) or in a worker, a private ``connect(url)``.
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


# ---------------------------------------------------------------------------------------------- the producer


@dataclass(frozen=True)
class DagRunRef:
    """The sensor's DAG run."""

    dag_id: str
    run_id: str


class TaskStates:
    """Airflow's word on the task instances of a DAG run, through the Task SDK (``get_task_states``): asked at
    most once per ``interval`` per DAG run and process — every trigger of the run shares the answer."""

    _cache: dict[DagRunRef, tuple[float, dict[str, str | None]]] = {}
    _inflight: dict[DagRunRef, asyncio.Future[dict[str, str | None]]] = {}

    def __init__(self, ref: DagRunRef, interval: float) -> None:
        self.ref = ref
        self.interval = interval

    def _ask(self) -> dict[str, str | None]:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        from ..backends.xcom import TaskSdkXComApi

        with TaskSdkXComApi.comms_lock():
            states = RuntimeTaskInstance.get_task_states(dag_id=self.ref.dag_id, run_ids=[self.ref.run_id])
        found = states.get(self.ref.run_id) or {}
        return {str(k): (None if v is None else str(getattr(v, "value", v))) for k, v in found.items()}

    async def states(self) -> dict[str, str | None]:
        cached = self._cache.get(self.ref)
        if cached is not None and time.monotonic() - cached[0] < self.interval:
            return cached[1]
        pending = self._inflight.get(self.ref)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[dict[str, str | None]] = asyncio.get_running_loop().create_future()
        self._inflight[self.ref] = future
        try:
            value = await anyio.to_thread.run_sync(self._ask)
            self._cache[self.ref] = (time.monotonic(), value)
            future.set_result(value)
            return value
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            self._inflight.pop(self.ref, None)

    async def state(self, task_id: str) -> str | None:
        return (await self.states()).get(task_id)


@dataclass(frozen=True)
class ProducerWatch:
    tasks: TaskStates
    task_id: str

    async def state(self) -> str | None:
        return await self.tasks.state(self.task_id)

    async def done(self) -> bool:
        return await self.state() in PRODUCER_DONE


# ---------------------------------------------------------------------------------------------- deciding


@dataclass(frozen=True)
class Rerun:
    """The sensor must re-run its node on a worker (the producer is done for good without a success)."""

    run_id: str
    unique_id: str
    args: list[str] | None
    reason: str


@dataclass(frozen=True)
class WaitSpec:
    run_id: str
    unique_id: str
    include_tests: bool
    timeout: float | None
    retrying: bool
    producer: ProducerWatch | None
    upstream_task_ids: tuple[str, ...] = ()
    grace: float = 2.0


async def decide(bus: Any, spec: WaitSpec) -> Outcome | Rerun:
    """The sensor's one decision: its node's outcome, or "re-run it yourself" (see the module docstring)."""
    uid, run_id = spec.unique_id, spec.run_id
    min_attempt: int | None = None
    if spec.retrying:
        state = await bus.run_state(run_id)
        current: Outcome = state.outcome(uid, include_tests=spec.include_tests)
        if current.terminal and not current.ok:
            if await _done_for_good(spec, state):
                return await _rerun_after_upstream(state, current, spec, current.message)
            min_attempt = current.attempt + 1  # the producer will try again: wait for that attempt
    while True:  # bus.outcome answers a node that is already done from a probe (a few key lookups)
        outcome, producer_state = await _wait_or_producer_done(bus, spec, min_attempt)
        if outcome is not None:
            return outcome
        # The producer task is done for good and the bus has not answered: decide from what it holds.
        state = await bus.run_state(run_id)
        current = state.outcome(uid, include_tests=spec.include_tests)
        if current.terminal and (min_attempt is None or current.attempt >= min_attempt):
            return current
        if spec.retrying:
            return await _rerun_after_upstream(
                state, current, spec, f"the producer task ended ({producer_state}) without a success for {uid}")
        assert spec.producer is not None
        return Outcome(
            kind=OutcomeKind.PRODUCER_LOST, run_id=run_id, unique_id=uid, attempt=max(state.attempt, 1),
            detail=f"the producer task {spec.producer.task_id} ended in state {producer_state!r} without "
                   f"publishing an outcome for it; see that task's log",
        )


async def _rerun_after_upstream(state: Any, current: Outcome, spec: WaitSpec, reason: str) -> Outcome | Rerun:
    """Re-run the node — after its upstream sensors' own re-runs succeeded, when an upstream failure doomed it."""
    doomed = current.kind is OutcomeKind.UPSTREAM_FAILED and spec.upstream_task_ids and spec.producer is not None
    if doomed and not await _upstream_recovered(spec):
        return current  # the upstream sensors failed for good too: nothing to re-run on
    return _rerun(state, spec, reason)


async def _upstream_recovered(spec: WaitSpec) -> bool:
    """Wait until the upstream sensors are terminal; True when all succeeded (their re-runs went first)."""
    assert spec.producer is not None
    tasks = spec.producer.tasks
    while True:
        states = await tasks.states()
        ups = [states.get(task_id) for task_id in spec.upstream_task_ids]
        if all(state == "success" for state in ups):
            return True
        if any(state in PRODUCER_DONE and state != "success" for state in ups):
            return False
        await anyio.sleep(tasks.interval)


async def _done_for_good(spec: WaitSpec, state: Any) -> bool:
    if spec.producer is None:  # no producer task to ask: the run being over is all we know
        return bool(state.needs_rerun(spec.unique_id, include_tests=spec.include_tests))
    return await spec.producer.done()


def _rerun(state: Any, spec: WaitSpec, reason: str) -> Rerun:
    started = state.started
    args = list(started.args) if started is not None and getattr(started, "args", None) else None
    return Rerun(run_id=spec.run_id, unique_id=spec.unique_id, args=args, reason=reason)


class DoneWatch:
    """One watch of a producer task for every sensor waiting on it in a process: once the task is done for
    good, each registered wait is cancelled ``grace`` seconds after the later of that moment and its joining
    (records still in flight to the reader get their chance).

    A triggerer holds hundreds of waiting sensors; one shared watch per (event loop, producer task, grace)
    costs each of them a cancel scope instead of a task group with two tasks of its own.
    """

    def __init__(self, producer: ProducerWatch, grace: float) -> None:
        self.producer = producer
        self.grace = grace
        #: Each registered wait's cancel scope and when it joined.
        self.waits: dict[anyio.CancelScope, float] = {}
        self.state = ""
        self.error: BaseException | None = None

    def add(self, scope: anyio.CancelScope) -> None:
        self.waits[scope] = anyio.current_time()

    def remove(self, scope: anyio.CancelScope) -> None:
        self.waits.pop(scope, None)

    async def run(self) -> None:
        try:
            while self.waits:
                state = await self.producer.state()
                if state in PRODUCER_DONE:
                    self.state = str(state)
                    break
                await anyio.sleep(self.producer.tasks.interval)
            else:
                return
            done_at = anyio.current_time()
            while self.waits:
                now = anyio.current_time()
                due = {scope: max(joined, done_at) + self.grace for scope, joined in self.waits.items()}
                for scope, at in due.items():
                    if at <= now:
                        self.waits.pop(scope, None)
                        scope.cancel()
                if self.waits:
                    await anyio.sleep(max(min(at for at in due.values() if at > now) - now, 0.0))
        except Exception as exc:  # asking Airflow failed: every wait on this watch learns why
            self.error = exc
            for scope in list(self.waits):
                scope.cancel()
            self.waits.clear()


_WATCHES: dict[tuple[int, DagRunRef, str, float], tuple[DoneWatch, asyncio.Task[None]]] = {}


def _shared_watch(producer: ProducerWatch, grace: float) -> DoneWatch:
    """The process's watch of ``producer`` on this event loop, started when absent (asyncio, as the triggerer
    and the Task SDK calls of :class:`TaskStates` are)."""
    loop = asyncio.get_running_loop()
    key = (id(loop), producer.tasks.ref, producer.task_id, grace)
    found = _WATCHES.get(key)
    if found is not None and not found[1].done():
        return found[0]
    watch = DoneWatch(producer, grace)

    async def hold() -> None:
        try:
            await watch.run()
        finally:
            if _WATCHES.get(key, (None,))[0] is watch:
                del _WATCHES[key]

    _WATCHES[key] = (watch, loop.create_task(hold(), name=f"dbtbus watch of {producer.task_id}"))
    return watch


async def _wait_or_producer_done(bus: Any, spec: WaitSpec, min_attempt: int | None) -> tuple[Outcome | None, str]:
    """The bus's outcome, or ``(None, producer state)`` once the producer task is done for good and a grace
    period (for records still in flight to this reader) has passed without an answer."""
    if spec.producer is None:
        return await bus.outcome(spec.run_id, spec.unique_id, timeout=spec.timeout,
                                 include_tests=spec.include_tests, min_attempt=min_attempt), ""
    result: Outcome | None = None
    watch = _shared_watch(spec.producer, spec.grace)
    with anyio.CancelScope() as scope:
        watch.add(scope)  # (the call is not wrapped in a helper coroutine: each frame is paid per waiting sensor)
        try:
            result = await bus.outcome(spec.run_id, spec.unique_id, timeout=spec.timeout,
                                       include_tests=spec.include_tests, min_attempt=min_attempt)
        finally:
            watch.remove(scope)
    if watch.error is not None and result is None:
        raise watch.error
    return result, watch.state


# ---------------------------------------------------------------------------------------------- the trigger


class DbtNodeTrigger(BaseTrigger):  # type: ignore[misc,unused-ignore]
    """Wait for ``unique_id`` in run ``run_id`` on ``bus_url`` and end the task with its outcome.

    ``run_id=None`` derives the run id from the trigger's task instance (dag id, run id, map index and
    ``run_group``): that is how a sensor started directly in the triggerer (``start_from_trigger``) finds its
    run without a worker ever computing it. ``producer_task_id`` names the producer's task in the same DAG
    run: the trigger asks Airflow about it to tell "the producer will try again" from "done for good".
    ``retry_check=True`` lets a retried task instance re-run its node (see the module docstring).
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
        ti = self._ti()
        if ti is not None and getattr(ti, "task", None) is not None:
            with contextlib.suppress(Exception):  # a task instance that refuses: it keeps its task, no harm
                ti.task = None
        with contextlib.suppress(Exception):
            context.clear()

    async def _resolved(self) -> tuple[str, str]:
        ti = self._ti()
        url = self.bus_url
        if self.bus_conn_id:
            from ._connection import aconnection_url

            url = await aconnection_url(self.bus_conn_id)
        if not url:
            raise DbtBusError("DbtNodeTrigger needs bus_url or bus_conn_id")
        run_id = self.run_id
        if run_id is None or is_bare_xcom_url(url):
            if ti is None:
                raise DbtBusError("DbtNodeTrigger needs run_id (or a task instance to derive it from)")
            run_id = run_id or run_id_from_ti(ti, self.run_group)
            url = resolve_bus_url(url, ti, self.carrier_task_id)
        return url, run_id

    def spec(self, run_id: str) -> WaitSpec:
        ti = self._ti()
        # The task's try: from the triggerer's task instance, or given by a sensor that deferred from a worker
        # (``dag.test()`` runs inline triggers without one).
        try_number = self.try_number or (int(getattr(ti, "try_number", 1) or 1) if ti is not None else 1)
        producer = None
        if self.producer_task_id and ti is not None:
            tasks = TaskStates(DagRunRef(ti.dag_id, ti.run_id), self.producer_check_interval)
            producer = ProducerWatch(tasks, self.producer_task_id)
        timeout = None if self.timeout is None or math.isinf(self.timeout) else self.timeout
        return WaitSpec(run_id=run_id, unique_id=self.unique_id, include_tests=self.include_tests, timeout=timeout,
                        retrying=self.retry_check and try_number > 1, producer=producer,
                        upstream_task_ids=tuple(self.upstream_task_ids))

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
            self.log.exception("dbtbus: waiting for %s failed", self.unique_id)
            raise
        event = self.event(decision)
        # The outcome's log line travels to the task's log file on another channel than the event; once the
        # event ends the task, the triggerer closes that file. A moment's pause keeps the line in it.
        await anyio.sleep(LOG_FLUSH_PAUSE)
        yield event

    def event(self, decision: Outcome | Rerun) -> TriggerEvent:
        """The event that ends the task (or sends it to a worker, for a re-run or a no-retry failure)."""
        if isinstance(decision, Rerun):
            self.log.info("dbtbus: %s will be re-run on a worker: %s", decision.unique_id, decision.reason)
            return TriggerEvent({"status": "rerun", "run_id": decision.run_id,  # type: ignore[no-untyped-call,unused-ignore]
                                 "unique_id": decision.unique_id, "args": decision.args, "message": decision.reason})
        payload = {"status": "outcome", "outcome": decision.to_dict()}
        state = airflow_state(decision, self.not_run)
        log_outcome(self.log, decision, state)
        if _in_process_test_comms() or state == "fail_now":
            return TriggerEvent(payload)  # type: ignore[no-untyped-call,unused-ignore]
        if state == "success":
            return TaskSuccessEvent(xcoms={"return_value": result_summary(decision)})
        if state == "skipped":
            return TaskSkippedEvent()
        return TaskFailedEvent()


def log_outcome(log: Any, outcome: Outcome, state: str) -> None:
    """One line in the task's log: the outcome's message (for an upstream failure: the root cause's too)."""
    if state == "success":
        log.info("dbtbus: %s", outcome.message)
        return
    level = log.warning if state == "skipped" else log.error
    level("dbtbus: [%s] %s", outcome.kind.value, describe(outcome))
