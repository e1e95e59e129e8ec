"""A sensor's one decision: its node's outcome, or "re-run it yourself" (see :mod:`dbtbus.airflow.triggers`).

**Retries never collide.** On a retry, the sensor re-runs its node only once the producer is done for good:
the run on the bus is over without a success for the node (``RunState.needs_rerun``) *and* Airflow says the
producer's task instance is terminal. While the producer has a try left, the sensor waits for its next
attempt (``min_attempt``) instead. A sensor whose producer task ends for good without ever answering for
its node (an import error, bad arguments, killed while queued) ends within seconds with a
``PRODUCER_LOST`` outcome naming the producer task's state.

**Lost is final only once the producer task is.** A producer whose lease lapsed (its host SIGKILLed or
frozen, its worker lost) is retried by Airflow when its task has a try left — once Airflow notices, after
its task heartbeat timeout. Until the producer task is done for good, a sensor answered ``PRODUCER_LOST``
waits for the next attempt instead; if the producer task then ends without one (no try left, or the lost
attempt came back and finished), the sensor answers what the bus holds for its node then.

**Gone is final only once the producer is.** A run the bus calls gone (``RUN_NOT_FOUND``: deleted, expired,
a tombstone left behind) is re-created by a producer task that has not run yet — a cleared DAG run re-uses
its run id — so while the producer task is not done for good, the sensor waits for it instead.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import anyio

from .._bus import Bus
from .._kinds import OutcomeKind
from .._outcome import Outcome
from .._state import RunState
from ._task_states import PRODUCER_DONE, DagRunRef, ProducerWatch, TaskStates

__all__ = ["DoneWatch", "Rerun", "WaitSpec", "decide"]


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
    #: The tasks of the node's nearest upstream nodes, each in its DAG run (node tasks may live in several DAGs).
    upstream_tasks: tuple[tuple[DagRunRef, str], ...] = ()
    grace: float = 2.0


async def decide(bus: Bus, spec: WaitSpec) -> Outcome | Rerun:
    """The sensor's one decision: its node's outcome, or "re-run it yourself" (see the module docstring)."""
    uid, run_id = spec.unique_id, spec.run_id
    min_attempt: int | None = None
    # The attempt whose producer was lost while its task was not done for good (see the module docstring).
    lost_attempt: int | None = None
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
            if outcome.kind is OutcomeKind.RUN_NOT_FOUND and min_attempt is None and spec.producer is not None \
                    and not await spec.producer.done():
                # Gone from the bus (a tombstone of a deleted or expired run, a cleared DAG run re-using its
                # run id), but the producer task will still write it: only its end can make that final.
                min_attempt = 1
                continue
            if outcome.kind is OutcomeKind.PRODUCER_LOST and spec.producer is not None \
                    and (min_attempt is None or outcome.attempt >= min_attempt) and not await spec.producer.done():
                # The producer's lease lapsed, but Airflow has not ended its task: a retry may still come.
                lost_attempt = outcome.attempt
                min_attempt = outcome.attempt + 1
                continue
            return outcome
        # The producer task is done for good and the bus has not answered: decide from what it holds.
        state = await bus.run_state(run_id)
        current = state.outcome(uid, include_tests=spec.include_tests)
        # After a lost attempt, what the bus holds for it now counts too (the attempt may have come back and
        # finished); a retry still re-runs its node rather than fail on the loss.
        came_back = lost_attempt is not None and (current.ok or not spec.retrying)
        if current.terminal and (min_attempt is None or current.attempt >= min_attempt or came_back):
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


async def _rerun_after_upstream(state: RunState, current: Outcome, spec: WaitSpec, reason: str) -> Outcome | Rerun:
    """Re-run the node — after its upstream sensors' own re-runs succeeded, when an upstream failure doomed it."""
    doomed = current.kind is OutcomeKind.UPSTREAM_FAILED and spec.upstream_tasks and spec.producer is not None
    if doomed and not await _upstream_recovered(spec):
        return current  # the upstream sensors failed for good too: nothing to re-run on
    return _rerun(state, spec, reason)


async def _upstream_recovered(spec: WaitSpec) -> bool:
    """Wait until the upstream sensors are terminal; True when all succeeded (their re-runs went first)."""
    assert spec.producer is not None
    interval = spec.producer.tasks.interval
    by_run: dict[DagRunRef, list[str]] = {}
    for ref, task_id in spec.upstream_tasks:
        by_run.setdefault(ref, []).append(task_id)
    asked = {ref: TaskStates(ref, interval) for ref in by_run}
    while True:
        ups: list[str | None] = []
        for ref, task_ids in by_run.items():
            states = await asked[ref].states()
            ups.extend(states.get(task_id) for task_id in task_ids)
        if all(state == "success" for state in ups):
            return True
        if any(state in PRODUCER_DONE and state != "success" for state in ups):
            return False
        await anyio.sleep(interval)


async def _done_for_good(spec: WaitSpec, state: RunState) -> bool:
    if spec.producer is None:  # no producer task to ask: the run being over is all we know
        return bool(state.needs_rerun(spec.unique_id, include_tests=spec.include_tests))
    return await spec.producer.done()


def _rerun(state: RunState, spec: WaitSpec, reason: str) -> Rerun:
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


async def _wait_or_producer_done(bus: Bus, spec: WaitSpec, min_attempt: int | None) -> tuple[Outcome | None, str]:
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
