"""A run's records → OpenLineage run events: the one place the mapping is decided. No I/O.

:class:`RunLineage` folds a dbtbus run's records, in log order, into OpenLineage ``RunEvent`` objects
(``openlineage-python``'s own classes, ready for its client):

* **the dbt invocation** is one OpenLineage run per attempt (job ``dbt-run-<project>``, as dbt-ol names it):
  ``START`` at ``RunStarted``; ``COMPLETE`` / ``FAIL`` at ``RunFinished`` (dbt's own verdict); ``FAIL`` at
  ``RunCrashed`` or when the producer is lost (:meth:`RunLineage.abandon`).
* **every node** is one OpenLineage run per attempt (job: its unique id, as dbt-ol names it), a child of the
  invocation's run, or of the Airflow task that owns the node when one is given: ``START`` at
  ``NodeStarted``; at its ``NodeResult`` ``COMPLETE`` (success, pass, warn, no-op, reused), ``FAIL`` (error,
  fail, runtime error, partial success) or ``ABORT`` (skipped, not run) — a node that never started gets its
  ``START`` then, so every run has the START and the one ending the spec asks for.
* **no run is left open**: a run that ends, crashes or loses its producer, or is superseded by a newer
  attempt, ends every node still open with ``ABORT`` (and its invocation with ``FAIL``).

OpenLineage run ids are UUIDs derived from (dbtbus run id, node, attempt) alone, so a consumer that restarts
and reads the log again emits the same runs again, never new ones. They are UUIDv5, not the v7 OpenLineage
recommends: a v7 id carries a time, and the only time every consumer reads alike would be a record a consumer
arriving after a data loss does not have.

Datasets and facets come from the manifest through :class:`~dbtbus.lineage.DatasetNaming`, built by
``openlineage-integration-common`` as dbt-ol builds them; without a manifest the runs carry no datasets.
Nothing of the bus (its URL may carry a password) and nothing of the profile but its namespace reaches an event.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final

from .._exceptions import ConfigurationError
from ..events import NodeResult, NodeStarted, NodeStatus, ProducerInfo, Record, RunCrashed, RunFinished, RunStarted
from ._errors import LineageUnavailable
from ._naming import DatasetNaming, _producer_uri

if TYPE_CHECKING:
    from openlineage.client.event_v2 import InputDataset, OutputDataset, RunEvent
    from openlineage.client.facet_v2 import RunFacet

__all__ = ["NamingSource", "ParentRun", "RunLineage", "TaskParents", "lineage_run_id"]

logger = logging.getLogger("dbtbus.lineage")

#: Facets by name. Not ``RunFacet`` / ``JobFacet``: dbt-ol's own facets (``dbt_run``, ``dbt_node``) derive from
#: the client's older ``BaseFacet``, which the client serialises alike.
Facets = dict[str, Any]

#: The namespace of dbtbus's run ids (uuid5 of "dbtbus:<run id>:<node>:<attempt>"): fixed forever, or every
#: run id changes.
_RUN_ID_NAMESPACE: Final = uuid.UUID("6a0d5f8e-3c1b-5b8e-9d1e-64627462757a")
#: The node key of the invocation itself (unique ids never start with "@", as the bus's own ``@run`` key).
INVOCATION: Final = "@invocation"
#: dbt-ol's default job namespace, and the variable that changes it (for both).
DEFAULT_JOB_NAMESPACE: Final = "dbt"
_JOB_TYPES: Final = {"model": "MODEL", "seed": "SEED", "snapshot": "SNAPSHOT", "test": "TEST", "unit_test": "TEST"}
_ENDED_BY_ABORT: Final = frozenset({NodeStatus.SKIPPED, NodeStatus.NOT_RUN})
#: Who produced an attempt whose RunStarted the log lost (a Redis restart without persistence).
_UNKNOWN_PRODUCER: Final = ProducerInfo(id="unknown")


def lineage_run_id(run_id: str, unique_id: str, attempt: int) -> str:
    """The OpenLineage run id of a node's ``attempt`` in the dbtbus run ``run_id`` (``unique_id``
    ``"@invocation"``: the dbt invocation itself). The same inputs give the same id, in every process."""
    return str(uuid.uuid5(_RUN_ID_NAMESPACE, f"dbtbus:{run_id}:{unique_id}:{attempt}"))


@dataclass(frozen=True, slots=True)
class ParentRun:
    """An OpenLineage run that owns others: the Airflow task that ran dbt, or the one that owns a node.

    ``root`` is the run at the top (the Airflow DAG run); ``None``: this run is its own root.
    """

    namespace: str
    name: str
    run_id: str
    root: ParentRun | None = None

    @classmethod
    def parse(cls, parent_id: str, root_id: str | None = None) -> ParentRun:
        """From ``namespace/name/run_id`` — ``OPENLINEAGE_PARENT_ID``'s format, which Airflow's OpenLineage
        provider hands a task (its ``lineage_parent_id`` macro) — with the root in the same format.

        :raises ConfigurationError: not three parts, or the run id is not a UUID.
        """
        root = cls.parse(root_id) if root_id else None
        parts = parent_id.split("/")
        if len(parts) != 3 or not all(parts):
            raise ConfigurationError(f"a parent run is 'namespace/job_name/run_id', got {parent_id!r}")
        try:
            uuid.UUID(parts[2])
        except ValueError:
            raise ConfigurationError(f"the run id of parent run {parent_id!r} is not a UUID") from None
        return cls(parts[0], parts[1], parts[2], root)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ParentRun | None:
        """``OPENLINEAGE_PARENT_ID`` (and ``OPENLINEAGE_ROOT_PARENT_ID``), as dbt-ol reads them, or ``None``."""
        env = os.environ if environ is None else environ
        parent = env.get("OPENLINEAGE_PARENT_ID")
        return cls.parse(parent, env.get("OPENLINEAGE_ROOT_PARENT_ID") or None) if parent else None

    def facet(self) -> RunFacet:
        """The ``parent`` run facet naming this run (and its root: itself when it has none)."""
        from openlineage.common.provider.dbt.facets import ParentRunMetadata

        root = self.root or self
        return ParentRunMetadata(
            run_id=self.run_id,
            job_name=self.name,
            job_namespace=self.namespace,
            root_parent_run_id=root.run_id,
            root_parent_job_name=root.name,
            root_parent_job_namespace=root.namespace,
        ).to_openlineage()


#: Who owns a node in the orchestrator: its unique id → the task's run (``None``: the invocation owns it).
TaskParents = Mapping[str, ParentRun] | Callable[[str], "ParentRun | None"]


@dataclass(slots=True)
class _Attempt:
    number: int
    started: RunStarted
    #: The invocation's run, once its START went out (see ``RunLineage._announce``).
    invocation: ParentRun | None = None
    ended: bool = False


#: Where the datasets come from: a ready naming, or one made from the run's ``RunStarted`` once dbt has told
#: its graph (and written its manifest): :func:`~dbtbus.lineage.naming_from_run` reads dbt's own arguments.
NamingSource = DatasetNaming | Callable[[RunStarted], DatasetNaming]


class RunLineage:
    """OpenLineage run events of one dbtbus run, fed its records in log order.

    ``naming``: the project's datasets, or a function of the run's ``RunStarted`` that makes them once dbt
    has planned the run (``None``: runs without datasets; a function that raises
    :class:`~dbtbus.lineage.LineageUnavailable` is logged, and that attempt's runs carry none).
    ``job_namespace``: the namespace of the jobs (default ``$OPENLINEAGE_NAMESPACE``, else ``dbt``, as dbt-ol).
    ``job_name``: the invocation's job (default ``dbt-run-<project>``, as dbt-ol). ``parent``: the run that ran
    dbt (default from ``OPENLINEAGE_PARENT_ID``, as dbt-ol). ``task_parents``: the run that owns each node,
    nesting it under its Airflow task rather than under the invocation.
    """

    def __init__(
        self,
        run_id: str,
        naming: NamingSource | None = None,
        *,
        job_namespace: str | None = None,
        job_name: str | None = None,
        parent: ParentRun | None = None,
        task_parents: TaskParents | None = None,
    ) -> None:
        from .._version import __version__

        self.run_id = run_id
        self.naming: DatasetNaming | None = naming if isinstance(naming, DatasetNaming) else None
        self._make_naming = None if isinstance(naming, DatasetNaming) else naming
        self.job_namespace = job_namespace or os.environ.get("OPENLINEAGE_NAMESPACE") or DEFAULT_JOB_NAMESPACE
        self._job_name = job_name
        self.parent = parent if parent is not None else ParentRun.from_environment()
        self._task_parents = task_parents
        self.producer = _producer_uri(__version__)
        self._attempts: dict[int, _Attempt] = {}
        self._current: _Attempt | None = None
        #: (node, attempt) → its START, for every node run started and not ended yet.
        self._open: dict[tuple[str, int], RunEvent] = {}
        #: (node, attempt) of every node run ended: a republished record (a recovered run) ends nothing twice.
        self._ended: set[tuple[str, int]] = set()

    # ------------------------------------------------------------------------------------------ facts

    @property
    def job_name(self) -> str:
        """The invocation's job: as given, else ``dbt-run-<project>`` once the manifest names the project."""
        if self._job_name is None:
            project = _project_name(self.naming)
            return f"dbt-run-{project}" if project else "dbt-run"
        return self._job_name

    @property
    def open_runs(self) -> list[tuple[str, int]]:
        """(node, attempt) of every run started and not ended (node ``"@invocation"``: the invocation)."""
        invocations = [(INVOCATION, a.number) for a in self._attempts.values() if a.invocation and not a.ended]
        return invocations + list(self._open)

    @property
    def attempt(self) -> int:
        """The newest attempt seen (0 before any)."""
        return self._current.number if self._current is not None else 0

    def run_id_of(self, unique_id: str, attempt: int) -> str:
        return lineage_run_id(self.run_id, unique_id, attempt)

    # ------------------------------------------------------------------------------------------ folding

    def feed(self, record: Record) -> list[RunEvent]:
        """The events one record makes (often none: heartbeats, batches, an attempt's first ``RunStarted``)."""
        if isinstance(record, NodeStarted):
            return self._node_started(record)
        if isinstance(record, NodeResult):
            return self._node_result(record)
        if isinstance(record, RunStarted):
            return self._run_started(record)
        if isinstance(record, (RunFinished, RunCrashed)):
            return self._run_ended(record)
        return []

    def abandon(self, reason: str, at: datetime | None = None) -> list[RunEvent]:
        """The producer is lost (or the consumer gives up on the run): ``ABORT`` every node run still open and
        ``FAIL`` every invocation still open, with ``reason`` as their error message."""
        when = at or datetime.now(timezone.utc)
        events = []
        for attempt in list(self._attempts.values()):
            if not attempt.ended:
                events.extend(self._end_attempt(attempt, "FAIL", when, reason))
        return events

    def _run_started(self, record: RunStarted) -> list[RunEvent]:
        events: list[RunEvent] = []
        attempt = self._attempts.get(record.attempt)
        if attempt is None:
            for older in list(self._attempts.values()):
                if not older.ended and older.number < record.attempt:
                    events.extend(self._end_attempt(older, "FAIL", record.started_at,
                                                    f"superseded by attempt {record.attempt} of the run"))
            attempt = self._attempts[record.attempt] = _Attempt(record.attempt, record)
            if self._current is None or record.attempt > self._current.number:
                self._current = attempt
        elif attempt.invocation is None:
            attempt.started = record  # the refinement: dbt's version, invocation id and graph
        # The producer announces an attempt before dbt has planned it; its START waits for the plan (the graph,
        # the manifest behind it, dbt's version), or for whatever comes first from the attempt.
        if record.graph is not None:
            events.extend(self._announce(attempt))
        return events

    def _announce(self, attempt: _Attempt) -> list[RunEvent]:
        """The invocation's START, once per attempt (and the naming, when it is made from the run)."""
        if attempt.invocation is not None:
            return []
        if self._make_naming is not None and attempt.started.graph is not None:
            try:
                self.naming = self._make_naming(attempt.started)
            except LineageUnavailable as exc:
                logger.warning("dbtbus lineage: run %r attempt %d without datasets: %s", self.run_id,
                               attempt.number, exc)  # fmt: skip
        # The nodes' root is the invocation's: the run above dbt (the Airflow DAG run) when there is one.
        root = (self.parent.root or self.parent) if self.parent is not None else None
        attempt.invocation = ParentRun(self.job_namespace, self.job_name, self.run_id_of(INVOCATION, attempt.number),
                                       root)  # fmt: skip
        started = attempt.started
        run_facets: Facets = {**self._engine_facets(attempt)}
        if self.parent is not None:
            run_facets["parent"] = self.parent.facet()
        return [self._event("START", started.invocation_started_at or started.started_at, attempt.invocation.run_id,
                            attempt.invocation.name, run_facets, self._job_facets("JOB", None))]

    def _run_ended(self, record: RunFinished | RunCrashed) -> list[RunEvent]:
        attempt = self._attempt_of(record.attempt)
        if attempt is None or attempt.ended:
            return []
        if isinstance(record, RunFinished):
            state, error = ("COMPLETE", None) if record.success else ("FAIL", record.error or "dbt reported failure")
        else:
            state, error = "FAIL", f"dbt's producer crashed: {record.error}"
        return self._end_attempt(attempt, state, record.finished_at, error)

    def _end_attempt(self, attempt: _Attempt, state: str, at: datetime, error: str | None) -> list[RunEvent]:
        events = self._announce(attempt)
        for key in [key for key in self._open if key[1] == attempt.number]:
            start = self._open.pop(key)
            self._ended.add(key)
            why = "the node did not end before its run did" + (f": {error}" if error else "")
            events.append(self._ending_of(start, "ABORT", at, why))
        attempt.ended = True
        run_facets: Facets = {**self._engine_facets(attempt)}
        if self.parent is not None:
            run_facets["parent"] = self.parent.facet()
        if error:
            run_facets["errorMessage"] = _error_facet(error, language="text")
        invocation = attempt.invocation
        assert invocation is not None  # announced above
        events.append(self._event(state, at, invocation.run_id, invocation.name, run_facets,
                                  self._job_facets("JOB", None)))
        return events

    def _node_started(self, record: NodeStarted) -> list[RunEvent]:
        key = (record.unique_id, record.attempt)
        if key in self._open or key in self._ended:
            return []
        events = self._announce(self._attempt_for(record.attempt))
        start = self._start(record.unique_id, record.resource_type, record.attempt, record.started_at)
        if start is not None:
            self._open[key] = start
            events.append(start)
        return events

    def _node_result(self, record: NodeResult) -> list[RunEvent]:
        key = (record.unique_id, record.attempt)
        if key in self._ended:
            return []
        events = self._announce(self._attempt_for(record.attempt))
        start = self._open.pop(key, None)
        if start is None:  # dbt skipped it, the run ended first, or its NodeStarted is not in the log
            start = self._start(record.unique_id, record.resource_type, record.attempt,
                                record.started_at or record.finished_at)
            if start is None:
                return []
            events.append(start)
        self._ended.add(key)
        events.append(self._node_ending(start, record))
        return events

    # ------------------------------------------------------------------------------------------ building

    def _attempt_for(self, number: int) -> _Attempt:
        """The attempt a node record belongs to; one the log lost the RunStarted of is named all the same."""
        attempt = self._attempts.get(number)
        if attempt is None:
            started = RunStarted(run_id=self.run_id, producer=_UNKNOWN_PRODUCER, attempt=number)
            attempt = self._attempts[number] = _Attempt(number, started)
            if self._current is None or number > self._current.number:
                self._current = attempt
        return attempt

    def _start(self, unique_id: str, resource_type: str, attempt_number: int, at: datetime | None) -> RunEvent | None:
        attempt = self._attempt_for(attempt_number)
        kind = resource_type or _resource_type_of(unique_id)
        if kind not in _JOB_TYPES:  # hooks, operations, exposures: not a job of their own in dbt-ol either
            return None
        run_facets: Facets = {**self._engine_facets(attempt), "parent": self._parent_of(unique_id, attempt)}
        inputs, outputs = self._datasets(unique_id, kind)
        return self._event("START", at, self.run_id_of(unique_id, attempt_number), unique_id, run_facets,
                           self._job_facets(_JOB_TYPES[kind], unique_id), inputs, outputs)

    def _node_ending(self, start: RunEvent, record: NodeResult) -> RunEvent:
        at = record.finished_at or record.started_at
        if record.status in _ENDED_BY_ABORT:
            return self._ending_of(start, "ABORT", at, record.message or f"the node was {record.status.value}")
        state = "COMPLETE" if record.status.is_success else "FAIL"
        error = None if state == "COMPLETE" else record.message or record.status.value
        event = self._ending_of(start, state, at, error)
        kind = record.resource_type or _resource_type_of(record.unique_id)
        naming = self.naming
        if naming is not None and kind in ("test", "unit_test"):
            event.inputs = self._tested_datasets(record, naming)
        elif naming is not None and event.outputs:
            event.outputs = [self._output(record, naming, compiled=record.compiled_code, ok=state == "COMPLETE")]
        code = record.compiled_code
        if code:
            from openlineage.client.facet_v2 import sql_job

            dialect = naming.adapter_type if naming is not None else None
            event.job.facets = {**(event.job.facets or {}), "sql": sql_job.SQLJobFacet(query=code, dialect=dialect)}
        return event

    def _ending_of(self, start: RunEvent, state: str, at: datetime | None, error: str | None) -> RunEvent:
        from openlineage.client.event_v2 import Job, Run, RunEvent, RunState

        run_facets = dict(start.run.facets or {})
        if error:
            run_facets["errorMessage"] = _error_facet(error, language="sql" if state == "FAIL" else "text")
        return RunEvent(
            eventType=RunState[state],
            eventTime=_iso(at),
            run=Run(runId=start.run.runId, facets=run_facets),
            job=Job(namespace=start.job.namespace, name=start.job.name, facets=dict(start.job.facets or {})),
            producer=self.producer,
            inputs=list(start.inputs or []),
            outputs=list(start.outputs or []),
        )

    def _event(
        self,
        state: str,
        at: datetime | None,
        run_id: str,
        job_name: str,
        run_facets: Facets,
        job_facets: Facets,
        inputs: list[InputDataset] | None = None,
        outputs: list[OutputDataset] | None = None,
    ) -> RunEvent:
        from openlineage.client.event_v2 import Job, Run, RunEvent, RunState

        return RunEvent(
            eventType=RunState[state],
            eventTime=_iso(at),
            run=Run(runId=run_id, facets=dict(run_facets)),
            job=Job(namespace=self.job_namespace, name=job_name, facets=dict(job_facets)),
            producer=self.producer,
            inputs=inputs or [],
            outputs=outputs or [],
        )

    def _parent_of(self, unique_id: str, attempt: _Attempt) -> RunFacet:
        owner: ParentRun | None = None
        task_parents = self._task_parents
        if callable(task_parents):
            owner = task_parents(unique_id)
        elif task_parents is not None:
            owner = task_parents.get(unique_id)
        invocation = attempt.invocation
        assert invocation is not None  # a node's START follows its invocation's
        return (owner or invocation).facet()

    def _engine_facets(self, attempt: _Attempt) -> Facets:
        from openlineage.client.facet_v2 import processing_engine_run
        from openlineage.common.provider.dbt.facets import DbtRunRunFacet

        from .._version import __version__

        started = attempt.started
        facets: Facets = {}
        if started.dbt_version:
            facets["processing_engine"] = processing_engine_run.ProcessingEngineRunFacet(
                version=started.dbt_version, name="dbt", openlineageAdapterVersion=__version__
            )
        if started.invocation_id:
            facets["dbt_run"] = DbtRunRunFacet(
                invocation_id=started.invocation_id, project_name=_project_name(self.naming), dbt_runtime="core"
            )
        return facets

    def _job_facets(self, job_type: str, unique_id: str | None) -> Facets:
        from openlineage.client.facet_v2 import job_type_job
        from openlineage.common.provider.dbt.facets import DbtNodeJobFacet

        facets: Facets = {
            "jobType": job_type_job.JobTypeJobFacet(
                processingType="BATCH", integration="DBT", jobType=job_type, producer=self.producer
            )
        }
        node = self.naming.manifest_node(unique_id) if self.naming is not None and unique_id else None
        if node is not None:
            facets["dbt_node"] = DbtNodeJobFacet(
                original_file_path=node.get("original_file_path"),
                database=node.get("database"),
                schema=node.get("schema"),
                alias=node.get("alias"),
                unique_id=unique_id,
            )
        return facets

    def _datasets(self, unique_id: str, kind: str) -> tuple[list[InputDataset], list[OutputDataset]]:
        naming = self.naming
        if naming is None:
            return [], []
        if kind in ("test", "unit_test"):
            return [_input(naming, parent) for parent in _tested(naming, unique_id)], []
        inputs = [_input(naming, parent) for parent in naming.parents(unique_id)]
        model = naming.model_node(unique_id)
        outputs = [] if model is None else [_as_output(naming.processor.node_to_output_dataset(model, has_facets=True))]
        return inputs, outputs

    def _output(self, record: NodeResult, naming: DatasetNaming, *, compiled: str | None, ok: bool) -> OutputDataset:
        """The node's relation as it ended: row counts from dbt's adapter response, column lineage from its SQL."""
        model = naming.model_node(record.unique_id)
        if model is None:
            raise AssertionError(f"{record.unique_id} has an output dataset but no relation")
        dataset = naming.processor.node_to_output_dataset(
            model, has_facets=True, adapter_response=dict(record.adapter_response) if ok else None
        )
        if compiled and record.resource_type in ("model", "snapshot", ""):
            lineage = naming.processor.get_column_lineage(dataset.namespace, compiled)
            if lineage is not None:
                dataset.facets = {**(dataset.facets or {}), "columnLineage": lineage}
        return _as_output(dataset)

    def _tested_datasets(self, record: NodeResult, naming: DatasetNaming) -> list[InputDataset]:
        """A test's datasets, each with the test as a data-quality assertion (in ``inputFacets``, where the spec
        has it, and in ``facets``, where dbt-ol's log processor puts it)."""
        from openlineage.client.event_v2 import InputDataset
        from openlineage.client.facet_v2 import data_quality_assertions_dataset

        facet = data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(
            assertions=[_assertion(naming, record)]
        )
        out = []
        for parent in _tested(naming, record.unique_id):
            dataset = _input(naming, parent)
            facets: Facets = {**(dataset.facets or {}), "dataQualityAssertions": facet}
            out.append(InputDataset(namespace=dataset.namespace, name=dataset.name, facets=facets,
                                    inputFacets={"dataQualityAssertions": facet}))
        return out

    def _attempt_of(self, number: int | None) -> _Attempt | None:
        if number is None:
            return self._current
        return self._attempts.get(number)


def _input(naming: DatasetNaming, unique_id: str) -> InputDataset:
    from openlineage.client.event_v2 import InputDataset

    model = naming.model_node(unique_id)
    if model is None:
        raise AssertionError(f"{unique_id} is read as a dataset but has no relation")
    dataset = naming.processor.node_to_dataset(model, has_facets=True)
    return InputDataset(namespace=dataset.namespace, name=dataset.name, facets=dataset.facets)


def _as_output(dataset: Any) -> OutputDataset:
    from openlineage.client.event_v2 import OutputDataset

    return OutputDataset(
        namespace=dataset.namespace,
        name=dataset.name,
        facets=dataset.facets,
        outputFacets=getattr(dataset, "outputFacets", None) or {},
    )


def _tested(naming: DatasetNaming, unique_id: str) -> list[str]:
    """What a test tests: its ``attached_node`` (a generic test), else every relation it reads (a singular
    test), as dbt-ol's log processor chooses."""
    node = naming.manifest_node(unique_id) or {}
    attached = node.get("attached_node")
    if isinstance(attached, str) and naming.has_relation(attached):
        return [attached]
    return naming.parents(unique_id)


def _assertion(naming: DatasetNaming, record: NodeResult) -> Any:
    """The test as an assertion. dbt-ol builds it in a private method of its log processor
    (``DbtStructuredLogsProcessor._get_assertion``), which needs the whole processor (a dbt command line, a
    log file): the same fields are read here, its public ``expected_from_test_config`` gives ``expected``."""
    from openlineage.client.facet_v2 import data_quality_assertions_dataset
    from openlineage.common.provider.dbt.processor import expected_from_test_config

    node = naming.manifest_node(record.unique_id) or {}
    metadata = node.get("test_metadata")
    config = node.get("config") or {}
    severity = (config.get("severity") or "").lower() or None
    failures = record.failures
    return data_quality_assertions_dataset.Assertion(
        assertion=metadata["name"] if metadata else node.get("name", record.unique_id),
        success=record.status is NodeStatus.PASS,
        column=((metadata or {}).get("kwargs") or {}).get("column_name") or node.get("column_name"),
        name=node.get("name"),
        severity=severity,
        actual=None if failures is None else str(failures),
        expected=None if failures is None else expected_from_test_config(config, severity),
    )


def _error_facet(message: str, *, language: str) -> RunFacet:
    from openlineage.client.facet_v2 import error_message_run

    return error_message_run.ErrorMessageRunFacet(message=message, programmingLanguage=language)


def _project_name(naming: DatasetNaming | None) -> str | None:
    if naming is None:
        return None
    name = (naming.manifest.get("metadata") or {}).get("project_name")
    return name if isinstance(name, str) and name else None


def _resource_type_of(unique_id: str) -> str:
    return unique_id.split(".", 1)[0]


def _iso(at: datetime | None) -> str:
    when = at or datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat()
