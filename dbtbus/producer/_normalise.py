"""ONE normaliser for both producers: a dbt event (name + JSON-shaped fields) → dbtbus records.

The dbtRunner callback path extracts the few fields it needs from the protobuf message into the same shape
a ``--log-format json`` line has (``data`` and ``info``), so the in-process, subprocess and log-replay
producers share every decision made here: statuses, timestamps, skip causes, run start and run end.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import socket
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final

from .._dbt.graph import add_test_edges, children_index, descendants, graph_from_payload, is_test
from .._dbt.hook import COMPILED_EVENT, GRAPH_EVENT, RESULTS_EVENT
from .._dbt.rules import command_of, hook_message, skip_children_on
from .._exceptions import DecodeError
from .._version import __version__
from ..events import (
    BatchResult,
    GraphNode,
    NodeResult,
    NodeStarted,
    NodeStatus,
    ProducerInfo,
    Record,
    RunStarted,
    TimingPhase,
    check_run_id,
    parse_timestamp,
)

logger = logging.getLogger("dbtbus.producer")

#: The debug-level node events (dbtRunner callbacks get them whatever the log level; a JSON log at debug).
NODE_EVENTS: Final = frozenset({"NodeStart", "NodeFinished", "MarkSkippedChildren", "GenericExceptionOnRun"})
#: dbt's info-level per-node events: what a JSON log at dbt's default level has instead of NodeStart /
#: NodeFinished. Acted on only where the debug-level events are absent (see :class:`LineParser`).
RESULT_EVENTS: Final = frozenset(
    {"LogModelResult", "LogSeedResult", "LogSnapshotResult", "LogTestResult", "LogFunctionResult",
     "LogNodeNoOpResult"}
)
INFO_NODE_EVENTS: Final = RESULT_EVENTS | {"LogStartLine", "SkippingDetails"}
RUN_EVENTS: Final = frozenset({"MainReportVersion", "MainReportArgs", "CommandCompleted"})
#: A microbatch model's batches (info-level, so in every log): each batch also gets its own NodeStart /
#: NodeFinished with the model's unique_id, which must never be taken for the model's own.
BATCH_EVENTS: Final = frozenset({"LogStartBatch", "LogBatchResult"})
#: A project hook (on-run-start / on-run-end), at any level: dbt runs hooks outside its node machinery, so
#: they get no NodeStart / NodeFinished, only these (their result is a node of dbt's run_results.json).
HOOK_EVENTS: Final = frozenset({"LogHookStartLine", "LogHookEndLine"})
#: How a JSON log at info level shows dbt completing (``CommandCompleted`` is debug-level).
LOG_END_EVENTS: Final = frozenset({"EndOfRunSummary", "FinishedRunningStats", "MainEncounteredError"})
#: What the dbtRunner callback hands over (everything else is dropped by name, first thing).
WANTED: Final = NODE_EVENTS | RUN_EVENTS | BATCH_EVENTS | HOOK_EVENTS | {GRAPH_EVENT, RESULTS_EVENT, COMPILED_EVENT}
#: What a JSON log line parser hands over.
LOG_WANTED: Final = WANTED | INFO_NODE_EVENTS | LOG_END_EVENTS
_STATUS_BY_VALUE: Final = {s.value: s for s in NodeStatus}
NOT_RUN_MESSAGE: Final = "the run ended without dbt reporting this node"


def producer_info(kind: str) -> ProducerInfo:
    return ProducerInfo(
        id=uuid.uuid4().hex, host=socket.gethostname(), pid=os.getpid(), dbtbus_version=__version__, kind=kind
    )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text or None


def _ts(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    try:
        return parse_timestamp(str(value))
    except DecodeError:
        return None


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _plain(value: Any) -> Any:
    """JSON-ish value with integral floats as ints (protobuf Structs turn every number into a float)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _timing(value: Any) -> tuple[TimingPhase, ...]:
    """dbt's ``timing_info`` (a JSON log's ISO strings or the callback's datetimes) as phases."""
    if not isinstance(value, (list, tuple)):
        return ()
    phases = []
    for item in value:
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            phases.append(TimingPhase(item["name"], _ts(item.get("started_at")), _ts(item.get("completed_at"))))
    return tuple(phases)


def _known_status(status: NodeStatus | None, event: str, uid: str, raw: object) -> NodeStatus:
    """dbt's status for a node; one dbtbus does not know is recorded as an error (logged), never a success."""
    if status is None:
        logger.warning("dbtbus: %s for %s has no known status (%r); recording an error", event, uid, raw)
        return NodeStatus.ERROR
    return status


def _test_failures(resource_type: str, raw: object) -> int | None:
    """A test's failure count as dbt reports it (``num_failures``); other nodes count none."""
    if not is_test(resource_type) or isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    return int(raw)


def _status(value: Any) -> NodeStatus | None:
    if not value:
        return None
    return _STATUS_BY_VALUE.get(str(value).lower())


def _worker_exception(data: Mapping[str, Any]) -> str:
    """GenericExceptionOnRun's text (dbt >= 1.8 starts it with the prefix older versions left out)."""
    exc = _text(data.get("exc")) or ""
    prefix = "Exception on worker thread."
    return exc if exc.startswith(prefix) else f"{prefix} {exc}".strip()


#: The message of an ephemeral model's result in an info-level log, where dbt reports nothing for it.
EPHEMERAL_MESSAGE: Final = "ephemeral: compiled into a child that succeeded (dbt logs no result for it at info level)"


@dataclass
class _OpenBatch:
    """A batch of a microbatch model under way, until its NodeFinished (or, in an info-level log, its
    LogBatchResult) ends it."""

    started_at: datetime | None
    index: int = 0
    total: int = 0
    batch: str | None = None
    status: NodeStatus | None = None
    execution_time: float | None = None
    message: str | None = None


@dataclass
class RunEnd:
    """What the normaliser learned about the end of dbt's run (CommandCompleted / DbtbusResults)."""

    completed: bool = False
    success: bool | None = None
    elapsed: float | None = None
    exception: str | None = None
    results: list[tuple[str, str, str]] | None = None
    #: dbt said the run was interrupted (EndOfRunSummary's ``keyboard_interrupt``).
    interrupted: bool = False
    #: An info-level log's EndOfRunSummary was seen (its error count decides ``success``).
    summary: bool = False
    #: dbt's own ``elapsed_time`` of the run (what its run_results.json says): exact from the hook's results,
    #: else FinishedRunningStats' (a 32-bit float).
    dbt_elapsed: float | None = None


@dataclass
class _HookRun:
    """What dbt's events tell of one project hook's run (dbt makes its RunResult without a NodeFinished)."""

    #: LogHookStartLine's moment: after the hook's compile phase ended, before its execute phase began.
    between: datetime | None = None
    ended: bool = False
    status: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    execution_time: float | None = None


class Normaliser:
    """Turns dbt events of ONE invocation into dbtbus records, in order. Not thread-safe: one consumer."""

    def __init__(
        self,
        run_id: str,
        *,
        producer: ProducerInfo,
        args: Sequence[str] = (),
        graph: Mapping[str, GraphNode] | None = None,
        continue_on_error: Iterable[str] = (),
        heartbeat_interval: float = 5.0,
        attempt: int = 1,
        selection_known: bool = True,
        add_test_edges: bool = False,
        ephemeral: Iterable[str] = (),
    ) -> None:
        """``graph`` is dbt's selection when known (``selection_known``), or the project's whole graph from a
        manifest (then no ``not_run`` records come from it, and ``add_test_edges`` adds build's test edges once
        the command is known); ``ephemeral`` names ephemeral models (dbt logs nothing for them at info
        level). dbt's graph hook, when it reports, replaces all three."""
        self.run_id = check_run_id(run_id)
        self.producer = producer
        self.args = tuple(args)
        self.command = command_of(self.args)
        self.graph: dict[str, GraphNode] | None = dict(graph) if graph is not None else None
        self.continue_on_error = frozenset(continue_on_error)
        self.heartbeat_interval = heartbeat_interval
        self.attempt = attempt
        self.dbt_version: str | None = None
        self.invocation_id: str | None = None
        self.started: RunStarted | None = None
        self.running: dict[str, datetime | None] = {}
        #: (model, dbt thread) → the batch of a microbatch model that thread runs. dbt gives each batch a
        #: NodeStart / NodeFinished of the model itself; concurrent batches of one model run on other threads.
        self._batches: dict[tuple[str, str | None], _OpenBatch] = {}
        #: node → the status of its terminal record (the records themselves go to the publisher).
        self.statuses: dict[str, NodeStatus] = {}
        #: node → the root failing ancestor whose failure dbt propagated to it (MarkSkippedChildren chains).
        self.skip_root: dict[str, str] = {}
        self._children: dict[str, list[str]] | None = None
        self.end = RunEnd()
        #: False when the graph is the whole project (from a manifest), not dbt's selection.
        self.selection_known = selection_known
        #: True when the graph lacks build's test edges (it came from a manifest): added once the command is known.
        self.add_test_edges = add_test_edges
        self.last_error: str | None = None
        #: ``dbt retry``: the command retried (its skip rules apply), from the graph hook.
        self.retry_of: str | None = None
        #: Ephemeral models of the graph (dbt logs nothing for them at info level).
        self.ephemeral: frozenset[str] = frozenset(ephemeral)
        #: A debug-level node event was seen: NodeFinished, not the info-level result lines, is the truth.
        self.saw_debug_events = False
        self._refined = False
        #: dbt's own ``args`` (secrets redacted) and ``invocation_started_at``, from the graph hook.
        self.dbt_args: dict[str, Any] = {}
        self.invocation_started_at: datetime | None = None
        #: A project hook (``operation.*``) → what dbt's LogHookStartLine / LogHookEndLine told of its run.
        self._hooks: dict[str, _HookRun] = {}
        #: A node → its compiled code (the hook's DbtbusCompiled), until the node's NodeFinished takes it.
        self._compiled: dict[str, str] = {}
        #: The project hook that failed: dbt skips the hooks after it (of the same on-run-start / -end).
        self._failed_hook: str | None = None

    # ------------------------------------------------------------------------------------------ start

    def announce(self) -> list[Record]:
        """The attempt's first RunStarted, at once: before dbt is even imported (graph ``None`` unless given).

        Waiters learn at once that a new attempt is under way; :meth:`refine` follows with what dbt tells.
        """
        if self.started is not None:
            return []
        self.started = self._run_started()
        return [self.started]

    def refine(self) -> list[Record]:
        """Once: a second RunStarted of the same attempt with what dbt told since (graph, version, command).

        Without an announcement first, this is the run's one RunStarted.
        """
        if self._refined:
            return []
        self._refined = True
        # An info-level log does not name its command (MainReportArgs is debug-level): build's test edges
        # then too — harmless for the other commands, whose skip rules ignore test failures.
        if self.add_test_edges and self.graph is not None and self.command in ("build", ""):
            self.graph = add_test_edges(self.graph)
            self._children = None
        announced = self.started
        self.started = self._run_started(announced.started_at if announced is not None else None)
        return [self.started]

    def _run_started(self, started_at: datetime | None = None) -> RunStarted:
        extra: dict[str, Any] = {} if started_at is None else {"started_at": started_at}
        return RunStarted(
            run_id=self.run_id,
            producer=self.producer,
            command=self.command,
            args=self.args,
            dbt_version=self.dbt_version,
            invocation_id=self.invocation_id,
            graph=self.graph,
            skip_children_on=skip_children_on(self.retry_of or self.command),
            continue_on_error=self.continue_on_error,
            heartbeat_interval=self.heartbeat_interval,
            attempt=self.attempt,
            dbt_args=self.dbt_args,
            invocation_started_at=self.invocation_started_at,
            **extra,
        )

    # ------------------------------------------------------------------------------------------ events

    def feed(self, name: str, data: Mapping[str, Any], info: Mapping[str, Any]) -> list[Record]:
        """Fold one dbt event in; return the records it produces (RunStarted first when due)."""
        if name in NODE_EVENTS:
            if name != "GenericExceptionOnRun":  # error-level: in info logs too
                self.saw_debug_events = True
            out = self.refine()
            code = None
            if name == "NodeFinished":  # a batch's code goes with the batch: the model's own has none
                code = self._compiled.pop(_text((data.get("node_info") or {}).get("unique_id")) or "", None)
            if self._batches or name == "NodeStart":
                batch = self._batch_event(name, data, info)
                if batch is not None:
                    out.extend(batch)
                    return out
            if name == "NodeFinished":
                out.extend(self._finished(data, info, code))
            elif name == "NodeStart":
                out.extend(self._node_start(data, info))
            elif name == "MarkSkippedChildren":
                self._mark_skipped_children(data)
            elif name == "GenericExceptionOnRun":
                out.extend(self._generic_exception(data, info))
            return out
        if name in BATCH_EVENTS:
            out = self.refine()
            out.extend(self._batch_line(name, data, info))
            return out
        if name in HOOK_EVENTS:
            self._hook_event(name, data, info)  # what its record will carry of dbt's RunResult (timing, ...)
            out = self.refine()
            out.extend(self._node_start(data, info) if name == "LogHookStartLine" else self._hook_end(data, info))
            return out
        if name in INFO_NODE_EVENTS:
            out = self.refine()
            if name == "LogStartLine":
                node_info = data.get("node_info") or {}
                if node_info.get("unique_id") not in self.running:
                    out.extend(self._node_start(data, info))
            else:
                out.extend(self._result_line(name, data, info))
            return out
        if name in LOG_END_EVENTS:
            self._log_end(name, data)
            return []
        if name == "MainReportArgs":
            if not self.args and not self._refined:
                self._learn_args(data)
            return []
        if name == "MainReportVersion":
            version = _text(data.get("version"))
            self.dbt_version = version.lstrip("=") if version else None
            self.invocation_id = _text(info.get("invocation_id"))
            return []
        if name == GRAPH_EVENT:
            if self._refined:
                return []  # the first queue dbt builds is the one it runs
            self.graph, self.continue_on_error = graph_from_payload(data)
            self.ephemeral = frozenset(data.get("ephemeral") or ())
            retry_of = _text(data.get("retry_of"))
            if retry_of is not None:
                self.retry_of = retry_of
            self.selection_known = True
            self.add_test_edges = False
            self._children = None
            args = data.get("dbt_args")
            self.dbt_args = dict(args) if isinstance(args, Mapping) else {}
            self.invocation_started_at = _ts(data.get("invocation_started_at"))
            return self.refine()
        if name == "CommandCompleted":
            self.end.completed = True
            success = data.get("success")
            self.end.success = bool(success) if success is not None else None
            self.end.elapsed = _number(data.get("elapsed"))
            return []
        if name == RESULTS_EVENT:
            self.end.completed = True
            self.end.results = [(str(r[0]), str(r[1]), str(r[2])) for r in data.get("results") or ()]
            if data.get("success") is not None:
                self.end.success = bool(data.get("success"))
            self.end.exception = _text(data.get("exception"))
            elapsed = _number(data.get("elapsed_time"))
            if elapsed is not None:
                self.end.dbt_elapsed = elapsed
            return []
        if name == COMPILED_EVENT:
            uid, code = _text(data.get("unique_id")), data.get("compiled_code")
            if uid is not None and isinstance(code, str):
                self._compiled[uid] = code
            return []
        return []

    def _learn_args(self, data: Mapping[str, Any]) -> None:
        """A replayed log names its own command line (``invocation_command``): use it when none was given."""
        args = data.get("args")
        command_line = args.get("invocation_command") if isinstance(args, Mapping) else None
        if not isinstance(command_line, str):
            return
        try:
            words = shlex.split(command_line)
        except ValueError:
            return
        if words and os.path.basename(words[0]) in ("dbt", "dbt.exe", "dbtf"):
            words = words[1:]
        self.args = tuple(words)
        self.command = command_of(self.args)

    # ------------------------------------------------------------------------------------------ batches

    def _batch_event(self, name: str, data: Mapping[str, Any], info: Mapping[str, Any]) -> list[Record] | None:
        """A node event that belongs to a batch of a microbatch model: its records, or ``None`` if it is the
        node's own event.

        dbt runs a microbatch model's batches through its node machinery: each batch has a NodeStart and a
        NodeFinished (a GenericExceptionOnRun when it raises) with the model's unique_id, on the thread that
        runs it, while the model itself is under way; the model's own NodeFinished follows the last batch.
        """
        node_info = data.get("node_info") or {}
        uid = _text(node_info.get("unique_id")) or _text(data.get("unique_id"))
        if uid is None:
            return None
        key = (uid, _text(info.get("thread")))
        if name == "NodeStart":
            if uid not in self.running:
                return None  # the model's own start
            self._batches[key] = _OpenBatch(_ts(node_info.get("node_started_at")) or _ts(info.get("ts")))
            return []
        batch = self._batches.get(key)
        if batch is None:
            return None
        if name == "GenericExceptionOnRun":
            batch.message = _worker_exception(data)
            return []
        if name != "NodeFinished":
            return None
        del self._batches[key]
        run_result = data.get("run_result") or {}
        status = _status(run_result.get("status")) or batch.status or NodeStatus.ERROR
        return [
            BatchResult(
                run_id=self.run_id,
                unique_id=uid,
                status=status,
                batch_index=batch.index,
                total_batches=batch.total,
                batch=batch.batch,
                started_at=_ts(node_info.get("node_started_at")) or batch.started_at,
                finished_at=_ts(node_info.get("node_finished_at")) or _ts(info.get("ts")),
                execution_time=_number(run_result.get("execution_time")) or batch.execution_time,
                message=_text(run_result.get("message")) or batch.message,
                adapter_response=_plain(run_result.get("adapter_response") or {}),
                thread=_text(run_result.get("thread")) or key[1],
                attempt=self.attempt,
            )
        ]

    def _batch_line(self, name: str, data: Mapping[str, Any], info: Mapping[str, Any]) -> list[Record]:
        """``LogStartBatch`` / ``LogBatchResult``: what the batch is; in an info-level log (no NodeFinished),
        the batch's result itself."""
        node_info = data.get("node_info") or {}
        uid = _text(node_info.get("unique_id"))
        if uid is None:
            return []
        key = (uid, _text(info.get("thread")))
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = _OpenBatch(_ts(node_info.get("node_started_at")) or _ts(info.get("ts")))
        batch.index = int(_number(data.get("batch_index")) or 0)
        batch.total = int(_number(data.get("total_batches")) or 0)
        description = _text(data.get("description")) or ""
        words = description.split()
        batch.batch = words[1] if len(words) >= 2 and words[0] == "batch" else None
        if name == "LogStartBatch":
            return []
        batch.status = _status(node_info.get("node_status")) or _status(data.get("status"))
        if batch.status is None or batch.status is NodeStatus.NOT_RUN:
            text = str(data.get("status") or "")
            batch.status = NodeStatus.SUCCESS if text.upper().startswith(("OK", "SUCCESS")) else NodeStatus.ERROR
        batch.execution_time = _number(data.get("execution_time"))
        if self.saw_debug_events:
            return []  # the batch's NodeFinished follows, with its timing and adapter response
        del self._batches[key]
        return [
            BatchResult(
                run_id=self.run_id,
                unique_id=uid,
                status=batch.status,
                batch_index=batch.index,
                total_batches=batch.total,
                batch=batch.batch,
                started_at=batch.started_at,
                finished_at=_ts(node_info.get("node_finished_at")) or _ts(info.get("ts")),
                execution_time=batch.execution_time,
                message=batch.message or _text(data.get("status")),
                thread=key[1],
                attempt=self.attempt,
            )
        ]

    # ------------------------------------------------------------------------------------------ nodes

    def _node_start(self, data: Mapping[str, Any], info: Mapping[str, Any]) -> list[Record]:
        node_info = data.get("node_info") or {}
        uid = _text(node_info.get("unique_id"))
        if uid is None:
            return []
        started_at = _ts(node_info.get("node_started_at")) or _ts(info.get("ts"))
        self.running[uid] = started_at
        return [
            NodeStarted(
                run_id=self.run_id,
                unique_id=uid,
                resource_type=_text(node_info.get("resource_type")) or "",
                started_at=started_at,
                thread=_text(info.get("thread")),
                attempt=self.attempt,
            )
        ]

    def _finished(self, data: Mapping[str, Any], info: Mapping[str, Any], compiled_code: str | None = None
                  ) -> list[Record]:
        node_info = data.get("node_info") or {}
        run_result = data.get("run_result") or {}
        uid = _text(node_info.get("unique_id"))
        if uid is None:
            return []
        status = _known_status(_status(run_result.get("status")) or _status(node_info.get("node_status")),
                               "NodeFinished", uid, run_result.get("status"))
        rtype = _text(node_info.get("resource_type")) or ""
        failures = _test_failures(rtype, run_result.get("num_failures"))
        relation = node_info.get("node_relation") or {}
        started_at = _ts(node_info.get("node_started_at")) or self.running.get(uid)
        record = NodeResult(
            run_id=self.run_id,
            unique_id=uid,
            status=status,
            resource_type=rtype,
            started_at=started_at,
            finished_at=_ts(node_info.get("node_finished_at")) or _ts(info.get("ts")),
            execution_time=_number(run_result.get("execution_time")),
            message=_text(run_result.get("message")),
            adapter_response=_plain(run_result.get("adapter_response") or {}),
            failures=failures,
            thread=_text(run_result.get("thread")) or _text(info.get("thread")),
            attempt=self.attempt,
            skip_cause=self._skip_cause(uid) if status is NodeStatus.SKIPPED else None,
            relation_name=_text(relation.get("relation_name")) if isinstance(relation, Mapping) else None,
            timing=_timing(run_result.get("timing_info")),
            compiled_code=compiled_code,
        )
        return self._terminal(record)

    def _hook_end(self, data: Mapping[str, Any], info: Mapping[str, Any]) -> list[Record]:
        """``LogHookEndLine``: a project hook's result (success, error, or skipped after an earlier one failed).

        The event carries dbt's status and execution time, not the error's text: a failed hook's message is
        dbt's own words without it.
        """
        node_info = data.get("node_info") or {}
        uid = _text(node_info.get("unique_id"))
        if uid is None:
            return []
        status = _known_status(_status(data.get("status")) or _status(node_info.get("node_status")),
                               "LogHookEndLine", uid, data.get("status"))
        skip_cause = self._failed_hook if status is NodeStatus.SKIPPED else None
        if status.is_failure:
            self._failed_hook = uid
        record = NodeResult(
            run_id=self.run_id,
            unique_id=uid,
            status=status,
            resource_type=_text(node_info.get("resource_type")) or "operation",
            started_at=_ts(node_info.get("node_started_at")) or self.running.get(uid),
            finished_at=_ts(node_info.get("node_finished_at")) or _ts(info.get("ts")),
            execution_time=_number(data.get("execution_time")),
            message=hook_message(_text(data.get("statement")) or uid, status),
            thread=_text(info.get("thread")),
            attempt=self.attempt,
            skip_cause=skip_cause,
        )
        return self._terminal(record)

    def _generic_exception(self, data: Mapping[str, Any], info: Mapping[str, Any]) -> list[Record]:
        node_info = data.get("node_info") or {}
        uid = _text(data.get("unique_id")) or _text(node_info.get("unique_id"))
        if uid is None:
            return []
        message = _worker_exception(data)
        self.last_error = message
        record = NodeResult(
            run_id=self.run_id,
            unique_id=uid,
            status=NodeStatus.ERROR,
            resource_type=_text(node_info.get("resource_type")) or "",
            started_at=_ts(node_info.get("node_started_at")) or self.running.get(uid),
            finished_at=_ts(info.get("ts")),
            message=message,
            thread=_text(info.get("thread")),
            attempt=self.attempt,
        )
        return self._terminal(record)

    def _result_line(self, name: str, data: Mapping[str, Any], info: Mapping[str, Any]) -> list[Record]:
        """An info-level result line (``Log*Result``, ``SkippingDetails``): a node's terminal record.

        ``node_info.node_status`` is dbt's status (``data.status`` is the display text: "OK", "SELECT 5");
        the first terminal record of a node stands.
        """
        node_info = data.get("node_info") or {}
        uid = _text(node_info.get("unique_id"))
        if uid is None or uid in self.statuses:
            return []
        if name == "SkippingDetails":
            status: NodeStatus | None = NodeStatus.SKIPPED
        else:
            status = _status(node_info.get("node_status")) or _status(data.get("status"))
            if status is None and str(data.get("status") or "").upper().startswith(("OK", "SUCCESS")):
                status = NodeStatus.SUCCESS  # microbatch models can lack node_status (dagster #28378)
        status = _known_status(status, name, uid, data.get("status"))
        rtype = _text(node_info.get("resource_type")) or _text(data.get("resource_type")) or ""
        failures = _test_failures(rtype, data.get("num_failures"))
        message = _text(data.get("result_message"))
        if message is None and name == "LogModelResult" and (status.is_success or status is NodeStatus.PARTIAL_SUCCESS):
            # the adapter's message ("OK", "SELECT 5"), or a microbatch model's "PARTIAL SUCCESS (2/3)"
            message = _text(data.get("status"))
        relation = node_info.get("node_relation") or {}
        record = NodeResult(
            run_id=self.run_id,
            unique_id=uid,
            status=status,
            resource_type=rtype,
            started_at=_ts(node_info.get("node_started_at")) or self.running.get(uid),
            finished_at=_ts(node_info.get("node_finished_at")) or _ts(info.get("ts")),
            execution_time=_number(data.get("execution_time")),
            message=message,
            failures=failures,
            thread=_text(info.get("thread")),
            attempt=self.attempt,
            skip_cause=self._skip_cause(uid) if status is NodeStatus.SKIPPED else None,
            relation_name=_text(relation.get("relation_name")) if isinstance(relation, Mapping) else None,
        )
        return self._terminal(record)

    def _skip_cause(self, uid: str) -> str | None:
        """The root failure that made dbt skip ``uid``: from MarkSkippedChildren (debug), else the graph.

        An info-level log has no MarkSkippedChildren, and dbt-core 1.8 never fires it: the cause is the
        parent whose failure dbt propagates (parents report before their children), or the cause of a parent
        skipped itself.
        """
        known = self.skip_root.get(uid)
        if known is not None or self.graph is None or uid not in self.graph:
            return known
        # dbt did skip it, so a parent failed or was skipped itself: whatever the command's rule (an
        # info-level log does not even name the command), the cause is among those parents.
        for parent in self.graph[uid].parents:
            status = self.statuses.get(parent)
            if status is None or parent in self.continue_on_error:
                continue
            if status is NodeStatus.SKIPPED:
                cause = self.skip_root.get(parent)
                if cause is not None:
                    return cause
            elif status.is_failure:
                return parent
        return None

    def _log_end(self, name: str, data: Mapping[str, Any]) -> None:
        """dbt completing, as a JSON log at info level shows it (CommandCompleted is debug-level)."""
        end = self.end
        if name == "FinishedRunningStats":
            end.elapsed = _number(data.get("execution_time"))
            if end.dbt_elapsed is None:
                end.dbt_elapsed = end.elapsed
            return
        if name == "EndOfRunSummary":
            end.completed = True
            end.summary = True
            end.interrupted = bool(data.get("keyboard_interrupt"))
            errors = _number(data.get("num_errors")) or 0
            partial = _number(data.get("num_partial_success")) or 0
            failed = any(status.is_failure for status in self.statuses.values())
            if end.success is None:
                end.success = not (errors or partial or failed or end.interrupted)
            return
        # MainEncounteredError: dbt caught an exception and exits. After the run's summary it is
        # --fail-fast (dbt exits 1); before it, dbt itself failed (exit 2).
        end.completed = True
        end.success = False
        if not end.summary:
            end.exception = _text(data.get("exc")) or "dbt failed with an unhandled error"

    # ------------------------------------------------------------------------------------------ hooks

    def _hook_event(self, name: str, data: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        """Remember what LogHookStartLine / LogHookEndLine tell of a hook's run (its record carries it)."""
        node_info = data.get("node_info") or {}
        uid = _text(node_info.get("unique_id"))
        if uid is None:
            return
        hook = self._hooks.setdefault(uid, _HookRun())
        if name == "LogHookStartLine":
            hook.between = _ts(info.get("ts"))
            hook.started_at = _ts(node_info.get("node_started_at"))
            return
        hook.ended = True
        hook.status = _text(data.get("status"))
        hook.started_at = _ts(node_info.get("node_started_at")) or hook.started_at
        hook.finished_at = _ts(node_info.get("node_finished_at"))
        hook.execution_time = _number(data.get("execution_time"))

    def hook_fields(self, unique_id: str) -> dict[str, Any]:
        """A hook's run as dbt's RunResult has it — ``timing``, ``thread``, ``execution_time``, ``failures``,
        its span — for the hook's NodeResult; empty unless dbt reported the hook's end.

        dbt runs hooks on its main thread and writes ``thread_id`` ``"main"``; a hook it ran has a compile
        and an execute phase: compile starts at ``node_started_at``, execute ends at ``node_finished_at`` and
        ``execution_time`` is the span between (computed as dbt does, exactly, where LogHookEndLine's is a
        32-bit float); the phases meet at LogHookStartLine, fired between them. A hook dbt skipped (an
        earlier one failed) ran no phase. ``failures`` is dbt's: 0 when it succeeded, else 1; the compiled
        code is the graph hook's (DbtbusCompiled, sent as dbt compiled the hook).
        """
        hook = self._hooks.get(unique_id)
        if hook is None or not hook.ended:
            return {}
        ran = hook.status != NodeStatus.SKIPPED.value and hook.started_at is not None
        code = self._compiled.get(unique_id)
        fields: dict[str, Any] = {
            "thread": "main",
            "failures": 0 if hook.status == NodeStatus.SUCCESS.value else 1,
            "execution_time": hook.execution_time or 0.0,
            "timing": (),
        }
        if ran and hook.finished_at is not None and hook.started_at is not None:
            between = hook.between or hook.started_at
            fields.update(
                compiled_code=code,
                started_at=hook.started_at,
                finished_at=hook.finished_at,
                execution_time=(hook.finished_at - hook.started_at).total_seconds(),
                timing=(TimingPhase("compile", hook.started_at, between),
                        TimingPhase("execute", between, hook.finished_at)),
            )
        return fields

    def _terminal(self, record: NodeResult) -> list[Record]:
        if record.unique_id in self._hooks and record.status is not NodeStatus.NOT_RUN:
            record = dataclasses.replace(record, **self.hook_fields(record.unique_id))
        self.running.pop(record.unique_id, None)
        if self._batches:  # a batch that never reported its end (its thread raised): the model decides now
            for key in [key for key in self._batches if key[0] == record.unique_id]:
                del self._batches[key]
        self.statuses[record.unique_id] = record.status
        if record.skip_cause is not None:  # what a skipped child of this node names as its cause
            self.skip_root.setdefault(record.unique_id, record.skip_cause)
        return [record]

    def _mark_skipped_children(self, data: Mapping[str, Any]) -> None:
        """dbt decided to skip every descendant of ``unique_id``: remember the root cause for each."""
        uid = _text(data.get("unique_id"))
        if uid is None:
            return
        root = self.skip_root.get(uid, uid)
        children = self._children_index()
        if children is None:
            return
        node = (self.graph or {}).get(uid)
        if node is not None and node.resource_type == "unit_test" and (self.retry_of or self.command) in ("build", ""):
            # dbt build runs a model's unit tests right before it: a failing one skips the model (its parent)
            for model in node.parents:
                self.skip_root.setdefault(model, root)
                for child in descendants(children, model):
                    self.skip_root.setdefault(child, root)
        for child in descendants(children, uid):
            self.skip_root.setdefault(child, root)  # an earlier cascade's root stands

    def _children_index(self) -> dict[str, list[str]] | None:
        if self._children is None and self.graph is not None:
            self._children = children_index(self.graph)
        return self._children

    # ------------------------------------------------------------------------------------------ end

    def not_run(self, dbt_results: Iterable[tuple[str, str, str]] | None = None) -> list[Record]:
        """``not_run`` records for every node of the run without a terminal record (the stream wins).

        ``dbt_results`` are dbt's final ``(unique_id, status, message)`` (e.g. ``--fail-fast`` marks nodes it
        never started as skipped "Skipping due to fail_fast"): their messages are kept, and their nodes count
        as part of the run even when the graph is unknown.
        """
        out = self.refine() if self.started is None else []
        out.extend(self._ephemeral_results())
        messages: dict[str, str] = {}
        for uid, _status_value, message in dbt_results or ():
            messages[uid] = message
        graph = self.graph if self.selection_known else None
        pending = [uid for uid in (graph or {}) if uid not in self.statuses]
        listed = set(pending)
        pending.extend(uid for uid in messages if uid not in self.statuses and uid not in listed)
        for uid in pending:
            node = (self.graph or {}).get(uid)
            record = NodeResult(
                run_id=self.run_id,
                unique_id=uid,
                status=NodeStatus.NOT_RUN,
                resource_type=node.resource_type if node is not None else uid.split(".", 1)[0],
                message=messages.get(uid) or NOT_RUN_MESSAGE,
                attempt=self.attempt,
                skip_cause=self.skip_root.get(uid),
            )
            out.extend(self._terminal(record))
        self.running.clear()
        return out

    def _ephemeral_results(self) -> list[Record]:
        """At info level dbt logs nothing for an ephemeral model: a child that succeeded proves it compiled."""
        if self.saw_debug_events or not self.ephemeral or self.graph is None:
            return []
        children = self._children_index() or {}
        out: list[Record] = []
        for uid in sorted(self.ephemeral):
            if uid in self.statuses or uid not in self.graph:
                continue
            if any(self.statuses.get(c, NodeStatus.ERROR).is_success for c in children.get(uid, ())):
                record = NodeResult(
                    run_id=self.run_id, unique_id=uid, status=NodeStatus.SUCCESS,
                    resource_type=self.graph[uid].resource_type, message=EPHEMERAL_MESSAGE, attempt=self.attempt,
                )
                out.extend(self._terminal(record))
        return out

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for status in self.statuses.values():
            out[status.value] = out.get(status.value, 0) + 1
        return out
