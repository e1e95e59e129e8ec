"""What a run's log means: the one place every wait semantic is decided.

:class:`RunState` folds a run's records, in log order, into the facts a waiter needs — the selected graph,
each node's terminal result, which nodes an ancestor's failure has doomed, whether the run has ended or
its producer was lost — and answers "what is the outcome for this node?" It does no I/O, so the bus, the
CLI's ``watch``, the Airflow trigger and the tests all share it, whatever the backend.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Final

from ._exceptions import NodeFailed, NodeNotInRun, NodeNotRun, ProducerLost, UpstreamFailed, WaitError
from .events import (
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

__all__ = ["ALL", "Outcome", "RunState"]

#: An ``apply`` result meaning "every waiter of the run may be affected".
ALL: Final = None

Outcome = NodeResult | WaitError
TEST_TYPES: Final = frozenset({"test", "unit_test"})


class RunState:
    """The facts of one run, built from its records in log order."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.started: RunStarted | None = None
        self.ending: RunFinished | RunCrashed | None = None
        self.last_heartbeat: Heartbeat | None = None
        self.results: dict[str, NodeResult] = {}
        self.running: dict[str, NodeStarted] = {}
        #: node → the ancestor whose propagating failure dooms it (the root of the cascade).
        self.doomed: dict[str, str] = {}
        self.lost = False
        self._children: dict[str, list[str]] | None = None
        self._tests_of: dict[str, list[str]] | None = None
        #: Every test any attempt selected → what it tests: a retry that leaves a test out must not forget it.
        self._test_parents: dict[str, tuple[str, ...]] = {}

    # ------------------------------------------------------------------------------------------ folding

    @property
    def graph(self) -> Mapping[str, GraphNode] | None:
        return self.started.graph if self.started is not None else None

    @property
    def finished(self) -> bool:
        return self.ending is not None

    def apply(self, record: Record) -> list[str] | None:
        """Fold one record in. Return the node ids whose outcome may have changed (in order), or ``ALL``."""
        if isinstance(record, NodeResult):
            return self._apply_result(record)
        if isinstance(record, NodeStarted):
            self.running[record.unique_id] = record
            return []
        if isinstance(record, Heartbeat):
            self.last_heartbeat = record
            self.lost = False
            return []
        if isinstance(record, RunStarted):
            self._apply_started(record)
            return ALL
        self.ending = record  # RunFinished or RunCrashed
        self.running.clear()
        return ALL

    def mark_lost(self) -> bool:
        """The producer's lease expired. Return True if that changes anything (the run was in progress)."""
        if self.started is None or self.ending is not None or self.lost:
            return False
        self.lost = True
        return True

    def _apply_started(self, record: RunStarted) -> None:
        # A later attempt resumes the run: successes stand, and so do failures of nodes it does not run again
        # (a test left out of a retry still failed); what it runs again is up for grabs.
        if self.started is not None:
            rerun = record.graph
            self.results = {
                uid: r
                for uid, r in self.results.items()
                if r.status.is_success or (rerun is not None and uid not in rerun)
            }
        for uid, node in (record.graph or {}).items():
            if node.resource_type in TEST_TYPES:
                self._test_parents[uid] = node.parents
        self.started = record
        self.ending = None
        self.lost = False
        self.doomed.clear()
        self.running.clear()
        self._children = None
        self._tests_of = None
        for result in list(self.results.values()):
            self._propagate(result)

    def _apply_result(self, record: NodeResult) -> list[str]:
        uid = record.unique_id
        self.results[uid] = record
        self.running.pop(uid, None)
        changed = [uid]
        changed.extend(self._propagate(record))
        # A test's result can decide the outcome of ``include_tests`` waiters on the nodes it tests.
        graph = self.graph
        if graph is not None:
            node = graph.get(uid)
            if node is not None and node.resource_type in TEST_TYPES:
                changed.extend(node.parents)
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
        queue = deque(children.get(uid, ()))
        seen: set[str] = set()
        while queue:
            child = queue.popleft()
            if child in seen:
                continue
            seen.add(child)
            if child not in self.doomed and child not in self.results:
                self.doomed[child] = root
                doomed.append(child)
            queue.extend(children.get(child, ()))
        return doomed

    def root_cause(self, record: NodeResult) -> str:
        """The ancestor that started a skip cascade (follows skipped → skip_cause chains)."""
        uid = record.unique_id
        seen = {uid}
        current: NodeResult | None = record
        while current is not None and current.status is NodeStatus.SKIPPED:
            cause = current.skip_cause or self.doomed.get(current.unique_id)
            if cause is None or cause in seen:
                break
            seen.add(cause)
            uid = cause
            current = self.results.get(cause)
        return uid

    def _children_index(self) -> dict[str, list[str]]:
        if self._children is None:
            children: dict[str, list[str]] = {}
            for uid, node in (self.graph or {}).items():
                for parent in node.parents:
                    children.setdefault(parent, []).append(uid)
            self._children = children
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

    def outcome(self, unique_id: str, *, include_tests: bool = False) -> Outcome | None:
        """The outcome of waiting for ``unique_id``: its result, the error to raise, or ``None`` (pending)."""
        result = self.results.get(unique_id)
        if result is not None:
            settled = self._settle(result)
            if include_tests and isinstance(settled, NodeResult):
                return self._with_tests(settled)
            return settled
        cause = self.doomed.get(unique_id)
        if cause is not None:
            return UpstreamFailed(
                run_id=self.run_id, unique_id=unique_id, cause=cause, cause_record=self.results.get(cause)
            )
        graph = self.graph
        if graph is not None and unique_id not in graph:
            return NodeNotInRun(run_id=self.run_id, unique_id=unique_id)
        if self.ending is not None:
            return NodeNotRun(run_id=self.run_id, unique_id=unique_id, ending=self.ending)
        if self.lost:
            return ProducerLost(run_id=self.run_id, unique_id=unique_id)
        return None

    def _settle(self, result: NodeResult) -> Outcome:
        status = result.status
        if status.is_success:
            return result
        if status.is_failure:
            return NodeFailed(result)
        if status is NodeStatus.SKIPPED:
            cause = result.skip_cause or self.doomed.get(result.unique_id)
            if cause is not None:
                root = self.root_cause(result)
                return UpstreamFailed(
                    run_id=self.run_id,
                    unique_id=result.unique_id,
                    cause=root,
                    cause_record=self.results.get(root),
                    record=result,
                )
        return NodeNotRun(run_id=self.run_id, unique_id=result.unique_id, record=result, ending=self.ending)

    def _with_tests(self, result: NodeResult) -> Outcome | None:
        uid = result.unique_id
        pending = False
        for test in self.tests_of(uid):
            test_outcome = self.outcome(test)
            if test_outcome is None:
                pending = True
            elif isinstance(test_outcome, NodeFailed):
                return NodeFailed(test_outcome.record, unique_id=uid)
            elif isinstance(test_outcome, ProducerLost):
                return ProducerLost(run_id=self.run_id, unique_id=uid, detail=f"before its test {test} finished")
            elif isinstance(test_outcome, NodeNotRun):
                # The node is fine but its gate was never decided: not a success to hand out.
                return NodeNotRun(run_id=self.run_id, unique_id=uid, record=test_outcome.record, ending=self.ending)
            # UpstreamFailed: a test doomed by another parent's failure says nothing about this node.
            # NodeNotInRun: a test this attempt does not select, with no result from an earlier one.
        return None if pending else result

    # ------------------------------------------------------------------------------------------ progress

    def counts(self) -> dict[str, int]:
        """status → number of nodes with that terminal status so far."""
        out: dict[str, int] = {}
        for result in self.results.values():
            out[result.status.value] = out.get(result.status.value, 0) + 1
        return out

    def pending(self) -> Iterable[str]:
        """Selected nodes without a terminal result yet (empty when the graph is unknown)."""
        return (uid for uid in (self.graph or {}) if uid not in self.results)
