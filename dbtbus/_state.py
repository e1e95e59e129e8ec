"""What a run's log means: the one place every rule about a run is decided.

:class:`RunState` folds a run's records, in log order, into the facts a consumer needs — the selected graph,
each node's terminal result across attempts, which nodes an ancestor's failure has doomed, whether the run
has ended or its producer was lost — and answers every question about it as data: a node's
:class:`~dbtbus.Outcome`, whether a node needs re-running, what a resumed attempt must leave out, the
run's status. It does no I/O, so the bus, the CLI, the Airflow trigger, the report and the tests share it,
whatever the backend.

The rules, each written once below:

* **Outcome of a node** (:meth:`RunState.outcome`): its own success-like result → ``SUCCESS``; its own
  failing result → ``FAILED``; ``skipped`` by dbt → ``UPSTREAM_FAILED`` (with the root cause when the
  graph or dbt names it); doomed by a propagating ancestor failure (by the command's skip rule and the
  ancestor's ``on_error``) → ``UPSTREAM_FAILED`` — from the moment the ancestor's failure is folded in,
  and whatever dbt later publishes for the node (``skipped`` or ``not_run``), so a live waiter and a late
  one get the same answer; outside the selected graph → ``NOT_IN_RUN``; the run ended (or its producer
  was lost) while the log shows a gap (see below) → ``DATA_LOST``; the run ended without it → ``NOT_RUN``;
  the producer lost → ``PRODUCER_LOST``; the run seen in progress and since vanished from the backend
  (deleted, expired, flushed), or never seen and its log empty under a backend's tombstone (deleted or
  expired before this reader came: :meth:`RunState.mark_tombstoned`) → ``RUN_NOT_FOUND``; otherwise
  ``PENDING``. Any record read after a tombstone takes it back (the run id is in use again).
* **Gaps**: a log read from its beginning must start with a ``RunStarted``; one that starts with anything
  else lost its head (a Redis restart without persistence, a flush, a trimmed stream), and a ``RunFinished``
  counting more node results of its attempt than the log holds shows records lost on the way. Then a node
  without a record is never ``NOT_RUN`` (nor ``PRODUCER_LOST``): its record may be what was lost, so it is
  ``DATA_LOST``. Records that are there still answer. A ``RunStarted`` marked ``recovered`` (the producer
  noticed the loss and republished every terminal record it holds right after it) closes the gap.
* **Tests** (``include_tests=True``): a success stands only once every test attached to the node (in any
  attempt) passed; a failing test makes the node ``FAILED``; a test that will never be decided makes it
  ``NOT_RUN`` rather than a success nobody checked.
* **Microbatch models**: a ``BatchResult`` is progress only. The model's outcome is its ``NodeResult``,
  which dbt gives once every batch has run (``partial success``, a failure, when some failed).
* **Attempts**: a ``RunStarted`` with a higher ``attempt`` starts a retry. Successes stand; failures of
  nodes the retry does not select stand; what it selects again is pending again. While the retry's graph
  is not known yet (the producer announces the attempt before dbt has planned it), only successes
  stand. A second ``RunStarted`` of the same attempt refines it (the graph arrives). Records of an older
  attempt arriving after a newer one started are stale and ignored.
* **Clocks** (:meth:`RunState.note_stored_at`): the times records carry are the producer's clock. Where the
  backend says when it stored each record, the producer's skew is the largest ``stamp - stored_at`` of
  the current producer's records, and :meth:`RunState.backend_time` puts its times on the backend's clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from ._dbt.graph import children_index, is_hook, is_test
from ._kinds import OutcomeKind, RunStatus
from ._outcome import Outcome
from .events import (
    BatchResult,
    GraphNode,
    Heartbeat,
    NodeResult,
    NodeStarted,
    NodeStatus,
    Record,
    RunCrashed,
    RunFinished,
    RunStarted,
)

__all__ = ["RunState"]


class RunState:
    """The facts of one run, built from its records in log order."""

    def __init__(self, run_id: str, *, from_start: bool = True) -> None:
        """``from_start``: the records folded in are the log from its beginning (``False`` for a reader that
        resumes from a cursor: it cannot tell a lost head from one it skipped)."""
        self.run_id = run_id
        #: Why the log is known to lack records ("" while it is not): see the module's rule on gaps.
        self.gap = ""
        self._from_start = from_start
        self._folded = False
        self.started: RunStarted | None = None
        self.ending: RunFinished | RunCrashed | None = None
        self.last_heartbeat: Heartbeat | None = None
        #: Every heartbeat of the current attempt, in order (memory over time, for reports).
        self.heartbeats: list[Heartbeat] = []
        #: Each node's terminal result: this attempt's, or an earlier attempt's that stands.
        self.results: dict[str, NodeResult] = {}
        self.running: dict[str, NodeStarted] = {}
        #: A microbatch model → its batches finished so far in the current attempt (progress, never an outcome).
        self.batches: dict[str, list[BatchResult]] = {}
        #: node → the ancestor whose propagating failure dooms it (the root of the cascade).
        self.doomed: dict[str, str] = {}
        self.lost = False
        #: The run was seen in progress and its log has since vanished from the backend (see :meth:`mark_gone`).
        self.gone = False
        #: ``gone`` comes from the backend's tombstone, not from a run this reader saw (see :meth:`mark_tombstoned`).
        self.tombstoned = False
        #: Results as they stood when the current attempt started (re-filtered once its graph is known).
        self._before_attempt: dict[str, NodeResult] = {}
        self._children: dict[str, list[str]] | None = None
        self._tests_of: dict[str, list[str]] | None = None
        #: Every test any attempt selected → what it tests: a retry that leaves a test out must not forget it.
        self._test_parents: dict[str, tuple[str, ...]] = {}
        #: Seconds the producer's clock runs ahead of the backend's (negative: behind); ``None`` until the backend
        #: said when it stored a record (see :meth:`note_stored_at`).
        self.clock_skew: float | None = None
        self._clock_of: str | None = None  # the producer whose clock clock_skew measures

    # ------------------------------------------------------------------------------------------ facts

    @property
    def graph(self) -> Mapping[str, GraphNode] | None:
        return self.started.graph if self.started is not None else None

    @property
    def attempt(self) -> int:
        """The current attempt's number (0 before any ``RunStarted``)."""
        return self.started.attempt if self.started is not None else 0

    @property
    def finished(self) -> bool:
        return self.ending is not None

    @property
    def status(self) -> RunStatus:
        if self.tombstoned:
            return RunStatus.GONE
        if self.started is None and not self.gap:
            return RunStatus.PENDING
        if isinstance(self.ending, RunCrashed):
            return RunStatus.CRASHED
        if self.ending is not None:
            return RunStatus.FINISHED
        if self.gone:
            return RunStatus.GONE
        return RunStatus.LOST if self.lost else RunStatus.RUNNING

    @property
    def over(self) -> bool:
        """The current attempt will publish nothing more: it ended, its producer is lost or the run is gone."""
        return (self.started is not None or bool(self.gap)) and (
            self.ending is not None or self.lost or self.gone
        )

    @property
    def last_activity(self) -> datetime | None:
        """When the producer last wrote something this state holds, by the producer's clock: its ending, else
        the latest of its last heartbeat, its start and the results, node starts and batches of the
        current attempt (``None`` for a log without any)."""
        if self.ending is not None:
            return self.ending.finished_at
        attempt = self.attempt
        times = [self.started.started_at] if self.started is not None else []
        if self.last_heartbeat is not None:
            times.append(self.last_heartbeat.at)
        times.extend(r.finished_at for r in self.results.values() if r.finished_at and r.attempt >= attempt)
        times.extend(s.started_at for s in self.running.values() if s.started_at is not None)
        times.extend(b.finished_at for bs in self.batches.values() for b in bs if b.finished_at is not None)
        return max(times) if times else None

    # ------------------------------------------------------------------------------------------ clocks

    def note_stored_at(self, record: Record, stored_at: float) -> None:
        """Fold in when the backend stored ``record``, on the backend's own clock (epoch seconds).

        Every time a record carries is the producer's clock, which may be minutes off. A record is stamped
        before it is stored, so ``stamp - stored_at`` is the producer's skew less that record's publishing
        delay, never more: the largest sample is the estimate, short of the true skew by the quickest publish
        (milliseconds — heartbeats go out every few seconds). A new producer (a retry on another host) has
        its own clock, so its ``RunStarted`` starts the estimate afresh; late records of an older attempt
        are left out.
        """
        stamp = _stamp(record)
        if stamp is None or self._stale(getattr(record, "attempt", None)):
            return
        if isinstance(record, RunStarted) and record.producer.id != self._clock_of:
            self._clock_of, self.clock_skew = record.producer.id, None
        sample = stamp.timestamp() - stored_at
        if self.clock_skew is None or sample > self.clock_skew:
            self.clock_skew = sample

    def backend_time(self, moment: datetime) -> datetime:
        """A time the producer stamped, on the backend's clock (unchanged while the skew is unknown)."""
        return moment - timedelta(seconds=self.clock_skew or 0.0)

    def producer_time(self, moment: datetime) -> datetime:
        """A time on the backend's (or a consumer's) clock, on the producer's: to measure against its stamps."""
        return moment + timedelta(seconds=self.clock_skew or 0.0)

    # ------------------------------------------------------------------------------------------ folding

    def apply(self, record: Record) -> list[str] | None:
        """Fold one record in. Return the node ids whose outcome may have changed (in order), or ``None``
        when every node of the run may be affected (the run started, ended or changed attempt)."""
        if self.tombstoned:  # a record after the tombstone: the run id is in use again, the run is not gone
            self.gone = self.tombstoned = False
        if not self._folded:
            self._folded = True
            if self._from_start and not isinstance(record, RunStarted):
                self.gap = f"the log does not start with the run's RunStarted but with a {type(record).__name__}"
        if isinstance(record, NodeResult):
            if self._stale(record.attempt):
                return []
            return self._apply_result(record)
        if isinstance(record, NodeStarted):
            if not self._stale(record.attempt):
                self.running[record.unique_id] = record
            return []
        if isinstance(record, BatchResult):
            if not self._stale(record.attempt):
                self.batches.setdefault(record.unique_id, []).append(record)
            return []
        if isinstance(record, Heartbeat):
            if self._stale(record.attempt):
                return []
            self.last_heartbeat = record
            self.heartbeats.append(record)
            self.lost = False
            self.gone = False  # written after the run vanished: it is back (a producer that recovered it)
            return []
        if isinstance(record, RunStarted):
            self._apply_started(record)
            return None
        if self._stale(record.attempt):  # RunFinished / RunCrashed of an older attempt
            return []
        if isinstance(record, RunFinished) and not self.gap:
            counted = sum(record.counts.values())
            held = sum(1 for result in self.results.values() if result.attempt >= self.attempt)
            if counted > held:
                self.gap = f"its RunFinished counts {counted} node results of the attempt, the log holds {held}"
        self.ending = record
        self.running.clear()
        return None

    def mark_lost(self) -> bool:
        """The producer's lease expired. Return True if that changes anything (the run was in progress)."""
        if (self.started is None and not self.gap) or self.ending is not None or self.lost:
            return False
        self.lost = True
        return True

    def mark_gone(self) -> bool:
        """The run, seen in progress, has vanished from the backend (its log reads empty from the beginning and
        its lease is gone: deleted, expired or flushed). Return True if that changes anything."""
        if (self.started is None and not self.gap) or self.ending is not None or self.gone:
            return False
        self.gone = True
        return True

    @property
    def may_be_tombstoned(self) -> bool:
        """Nothing folded in yet: whether the run is gone under a tombstone is still a question."""
        return not self._folded and not self.gone

    def mark_tombstoned(self) -> bool:
        """The backend's tombstone says the run was deleted or expired, and its log reads empty from the start:
        gone, though this reader never saw it (not a run that has not started yet). Return True if that
        changes anything. A record folded in later takes it back."""
        if not self.may_be_tombstoned:
            return False
        self.gone = self.tombstoned = True
        return True

    def _stale(self, attempt: int | None) -> bool:
        return attempt is not None and self.started is not None and attempt < self.started.attempt

    def _apply_started(self, record: RunStarted) -> None:
        previous = self.started
        if record.recovered and (previous is None or record.attempt >= previous.attempt):
            self.gap = ""  # every terminal record the producer holds follows
            self.gone = False
        if previous is not None and record.attempt == previous.attempt:
            if previous.graph is not None and record.graph is None:
                return  # a refinement that knows less than what we have
        elif previous is not None and record.attempt < previous.attempt:
            return  # a stale attempt's announcement
        else:
            # A new attempt: remember how things stood, start afresh on what it will run.
            self._before_attempt = dict(self.results)
            self.ending = None
            self.lost = False
            self.gone = False
            self.running.clear()
            self.batches = {}
            self.heartbeats = []
            self.last_heartbeat = None
        self.started = record
        self._children = None
        self._tests_of = None
        for uid, node in (record.graph or {}).items():
            if is_test(node):
                self._test_parents[uid] = node.parents
        if previous is not None:
            self._carry_over(record)
        self.doomed.clear()
        for result in list(self.results.values()):
            self._propagate(result)

    def _carry_over(self, record: RunStarted) -> None:
        """Which earlier results stand in this attempt (see the module's rule on attempts)."""
        rerun = record.graph
        current = {uid: r for uid, r in self.results.items() if r.attempt >= record.attempt}
        kept = {
            uid: r
            for uid, r in self._before_attempt.items()
            if r.attempt < record.attempt and (r.status.is_success or (rerun is not None and uid not in rerun))
        }
        self.results = {**kept, **current}

    def _apply_result(self, record: NodeResult) -> list[str]:
        uid = record.unique_id
        self.results[uid] = record
        self.running.pop(uid, None)
        changed = [uid]
        changed.extend(self._propagate(record))
        # A test's result can decide the outcome of ``include_tests`` waiters on the nodes it tests.
        parents = self._test_parents.get(uid)
        if parents:
            changed.extend(parents)
        return changed

    def _propagate(self, record: NodeResult) -> list[str]:
        """Doom the descendants of a failure that makes dbt skip children; return them."""
        started = self.started
        if started is None or started.graph is None:
            return []
        uid = record.unique_id
        if record.status not in started.skip_children_on or uid in started.continue_on_error:
            return []
        root = self.root_cause(record)
        doomed = []
        children = self._children_index()
        queue = list(children.get(uid, ()))
        seen: set[str] = set()
        while queue:
            child = queue.pop()
            if child in seen:
                continue
            seen.add(child)
            result = self.results.get(child)
            # A child that ran keeps its own result; one dbt skipped or never ran is doomed by this failure.
            if child not in self.doomed and (result is None or result.status in _NOT_RAN):
                self.doomed[child] = root
                doomed.append(child)
            queue.extend(children.get(child, ()))
        return doomed

    def root_cause(self, record: NodeResult) -> str:
        """The ancestor that started a skip cascade (follows skipped → skip_cause chains)."""
        uid = record.unique_id
        seen = {uid}
        current: NodeResult | None = record
        while current is not None and current.status in _NOT_RAN:
            cause = current.skip_cause or self.doomed.get(current.unique_id)
            if cause is None or cause in seen:
                break
            seen.add(cause)
            uid = cause
            current = self.results.get(cause)
        return uid

    def _children_index(self) -> dict[str, list[str]]:
        if self._children is None:
            self._children = children_index(self.graph or {})
        return self._children

    def tests_of(self, unique_id: str) -> list[str]:
        """The tests attached to a node (tests among its children) in any attempt of the run."""
        if self._tests_of is None:
            tests: dict[str, list[str]] = {}
            for uid, parents in self._test_parents.items():
                for parent in parents:
                    tests.setdefault(parent, []).append(uid)
            self._tests_of = tests
        return self._tests_of.get(unique_id, [])

    # ------------------------------------------------------------------------------------------ deciding

    def outcome(self, unique_id: str, *, include_tests: bool = False, min_attempt: int | None = None) -> Outcome:
        """The outcome of waiting for ``unique_id`` (kind ``PENDING`` while it is not known).

        ``min_attempt`` answers only from that attempt on: before it starts, every node is pending.
        """
        if min_attempt is not None and self.attempt < min_attempt:
            return self._make(OutcomeKind.PENDING, unique_id)
        result = self.results.get(unique_id)
        if result is not None:
            settled = self._settle(result)
            if include_tests and settled.kind is OutcomeKind.SUCCESS:
                return self._with_tests(settled)
            return settled
        cause = self.doomed.get(unique_id)
        if cause is not None:
            return self._make(OutcomeKind.UPSTREAM_FAILED, unique_id, cause=cause, cause_record=self.results.get(cause))
        graph = self.graph
        if graph is not None and unique_id not in graph:
            return self._make(OutcomeKind.NOT_IN_RUN, unique_id)
        if self.gone and self.ending is None:
            # Before DATA_LOST and PRODUCER_LOST: whatever else the log had to say is gone with it.
            detail = "a tombstone says so" if self.tombstoned else None
            return self._make(OutcomeKind.RUN_NOT_FOUND, unique_id, detail=detail)
        if self.gap and (self.ending is not None or self.lost):
            return self._make(OutcomeKind.DATA_LOST, unique_id, ending=self.ending, detail=self.gap)
        if self.ending is not None:
            return self._make(OutcomeKind.NOT_RUN, unique_id, ending=self.ending)
        if self.lost:
            return self._make(OutcomeKind.PRODUCER_LOST, unique_id)
        return self._make(OutcomeKind.PENDING, unique_id)

    def _make(self, kind: OutcomeKind, unique_id: str, **fields: object) -> Outcome:
        record = fields.get("record")
        attempt = record.attempt if isinstance(record, NodeResult) else max(self.attempt, 1)
        return Outcome(kind, self.run_id, unique_id, attempt=attempt, **fields)  # type: ignore[arg-type]

    def _settle(self, result: NodeResult) -> Outcome:
        uid = result.unique_id
        status = result.status
        if status.is_success:
            return self._make(OutcomeKind.SUCCESS, uid, record=result)
        if status.is_failure:
            return self._make(OutcomeKind.FAILED, uid, record=result)
        if status in _NOT_RAN:
            cause = (result.skip_cause if status is NodeStatus.SKIPPED else None) or self.doomed.get(uid)
            if cause is not None:
                root = self.root_cause(result)
                if root != uid:
                    return self._make(
                        OutcomeKind.UPSTREAM_FAILED,
                        uid,
                        record=result,
                        cause=root,
                        cause_record=self.results.get(root),
                    )
            elif status is NodeStatus.SKIPPED and "fail_fast" not in (result.message or ""):
                # Besides --fail-fast (whose skips dbt words "Skipping due to fail_fast"), dbt skips a node
                # only because an ancestor failed: a log without the graph (an info-level replay) says so
                # without saying which ancestor.
                return self._make(OutcomeKind.UPSTREAM_FAILED, uid, record=result, detail="the log does not name it")
        return self._make(OutcomeKind.NOT_RUN, uid, record=result, ending=self.ending)

    def _with_tests(self, success: Outcome) -> Outcome:
        uid = success.unique_id
        pending = False
        for test in self.tests_of(uid):
            verdict = self.outcome(test)
            kind = verdict.kind
            if kind is OutcomeKind.PENDING:
                pending = True
            elif kind is OutcomeKind.FAILED:
                return self._make(OutcomeKind.FAILED, uid, record=verdict.record)
            elif kind is OutcomeKind.PRODUCER_LOST:
                return self._make(OutcomeKind.PRODUCER_LOST, uid, detail=f"before its test {test} finished")
            elif kind is OutcomeKind.RUN_NOT_FOUND:
                return self._make(OutcomeKind.RUN_NOT_FOUND, uid, detail=f"before its test {test} was decided")
            elif kind is OutcomeKind.DATA_LOST:
                return self._make(OutcomeKind.DATA_LOST, uid, ending=self.ending,
                                  detail=f"{verdict.detail}; its test {test} has no record left")
            elif kind is OutcomeKind.NOT_RUN:
                # The node is fine but its gate was never decided: not a success to hand out.
                return self._make(OutcomeKind.NOT_RUN, uid, record=verdict.record, ending=self.ending)
            # UPSTREAM_FAILED: a test doomed by another parent's failure says nothing about this node.
            # NOT_IN_RUN: a test this attempt does not select, with no result from an earlier one.
        return self._make(OutcomeKind.PENDING, uid) if pending else success

    def needs_rerun(self, unique_id: str, *, include_tests: bool = False) -> bool:
        """True when the run is over (ended or lost) without a success for the node.

        This is the run's side of "should whoever owns this node re-run it?": nothing more will come from
        this attempt. Whether the producer itself will try again is the orchestrator's knowledge, not the
        log's — a caller must also know that no new attempt is coming.
        """
        if not self.over:
            return False
        return self.outcome(unique_id, include_tests=include_tests).kind is not OutcomeKind.SUCCESS

    def resume_excludes(self) -> list[str]:
        """The nodes a resumed attempt leaves out: they succeeded and none of their tests failed.

        Project hooks are never left out: dbt runs them with every attempt, whatever its selection.

        A model whose test failed is built again with its tests, so a waiter with ``include_tests=True``
        sees the new attempt's test result, not the model's old success alone.
        """
        graph = self.graph or {}
        redo: set[str] = set()
        for uid, result in self.results.items():
            node = graph.get(uid)
            if not result.ok and is_test(node, uid):
                redo.update(node.parents if node is not None else self._test_parents.get(uid, ()))
        return sorted(
            uid for uid, result in self.results.items()
            if result.ok and uid not in redo and not is_hook(graph.get(uid), uid)
        )

    # ------------------------------------------------------------------------------------------ progress

    def counts(self) -> dict[str, int]:
        """status → number of nodes with that terminal status so far."""
        out: dict[str, int] = {}
        for result in self.results.values():
            out[result.status.value] = out.get(result.status.value, 0) + 1
        return out

    @property
    def total(self) -> int | None:
        """How many nodes the run has: the current attempt's selected graph (project hooks and ``build``'s
        unit tests included, as in dbt's ``run_results.json``) and the results that stand from earlier
        attempts; ``None`` while the graph is unknown. Every progress counter's total: never below
        ``len(results)``."""
        graph = self.graph
        if graph is None:
            return None
        return len(graph) + sum(1 for uid in self.results if uid not in graph)

    def pending(self) -> Iterable[str]:
        """Selected nodes without a terminal result yet (empty when the graph is unknown)."""
        return (uid for uid in (self.graph or {}) if uid not in self.results)


#: Statuses of a node that did not run (dbt skipped it, or the run ended first).
_NOT_RAN = frozenset({NodeStatus.SKIPPED, NodeStatus.NOT_RUN})


def _stamp(record: Record) -> datetime | None:
    """When the producer made ``record``, on its clock (``None`` when a node result carries no times)."""
    if isinstance(record, RunStarted):
        return record.started_at
    if isinstance(record, Heartbeat):
        return record.at
    if isinstance(record, NodeStarted):
        return record.started_at
    return record.finished_at  # NodeResult, BatchResult, RunFinished, RunCrashed
