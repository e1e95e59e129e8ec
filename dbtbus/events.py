"""The records dbtbus moves: node results and run lifecycle, and their wire format.

A run's log is an ordered sequence of records, all carrying the dbtbus ``run_id``:

``RunStarted``
    first: the producer, dbt's version and invocation id, the command and the selected graph (node →
    parents) together with the rule dbt uses to skip children of a failed node.
``NodeStarted``
    a node began (dbt's ``NodeStart``); not terminal.
``BatchResult``
    one batch of a microbatch model finished (dbt's ``LogBatchResult``); not terminal: the model's own
    ``NodeResult`` follows once dbt has run every batch (``partial success`` when some failed).
``NodeResult``
    a node's terminal record: exactly what dbt reported (status, timings, message, adapter response,
    failures, the failing ancestor when dbt skipped it), or dbtbus's own ``not_run`` when the run ended
    without reporting the node.
``Heartbeat``
    the producer is alive (also renewed out of band as a lease).
``RunFinished`` / ``RunCrashed``
    last: dbt returned (success, exit code, counts, elapsed, peak memory), or the producer died trying.

On the wire each record is one JSON object (orjson) with ``"v"`` (the schema's major version) and ``"type"``.
Unknown extra fields are ignored, so newer producers can add fields without breaking older consumers; a
newer major version, a foreign object or malformed bytes raise :class:`dbtbus.DecodeError`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final

import orjson

from ._exceptions import DecodeError

__all__ = [
    "COMPILED_CODE_LIMIT",
    "FAILURE_STATUSES",
    "HEARTBEAT_RANGE",
    "SCHEMA_VERSION",
    "SUCCESS_STATUSES",
    "BatchResult",
    "GraphNode",
    "Heartbeat",
    "NodeResult",
    "NodeStarted",
    "NodeStatus",
    "ProducerInfo",
    "Record",
    "RunCrashed",
    "RunFinished",
    "RunStarted",
    "TimingPhase",
    "decode",
    "encode",
    "from_dict",
    "to_dict",
]

SCHEMA_VERSION: Final = 1
#: The heartbeat intervals (seconds) a decoded ``RunStarted`` may announce: a foreign or broken record must
#: neither switch loss detection off (1e308) nor make every reader poll the lease in a hot loop (<= 0).
HEARTBEAT_RANGE: Final = (0.2, 600.0)
#: Compiled code above this many characters is truncated (and ``compiled_code_truncated`` set): a record
#: travels through Redis and XCom, and a waiter should never pull megabytes of SQL it did not ask for.
COMPILED_CODE_LIMIT: Final = 64 * 1024


class NodeStatus(str, enum.Enum):
    """Every terminal status dbt gives a node, plus dbtbus's own ``not_run``."""

    SUCCESS = "success"
    ERROR = "error"
    FAIL = "fail"
    WARN = "warn"
    SKIPPED = "skipped"
    PASS = "pass"
    RUNTIME_ERROR = "runtime error"
    PARTIAL_SUCCESS = "partial success"
    NO_OP = "no-op"
    REUSED = "reused"
    #: dbtbus's own: the run ended (finished or crashed) without dbt reporting this node.
    NOT_RUN = "not_run"

    @property
    def is_success(self) -> bool:
        """True for the statuses ``wait`` returns: success, pass, warn, no-op, reused."""
        return self in SUCCESS_STATUSES

    @property
    def is_failure(self) -> bool:
        """True for the statuses ``wait`` raises :class:`~dbtbus.NodeFailed` for."""
        return self in FAILURE_STATUSES


SUCCESS_STATUSES: Final = frozenset(
    {NodeStatus.SUCCESS, NodeStatus.PASS, NodeStatus.WARN, NodeStatus.NO_OP, NodeStatus.REUSED}
)
FAILURE_STATUSES: Final = frozenset(
    {NodeStatus.ERROR, NodeStatus.FAIL, NodeStatus.RUNTIME_ERROR, NodeStatus.PARTIAL_SUCCESS}
)
def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, slots=True)
class GraphNode:
    """One node of a run's selected graph."""

    resource_type: str
    parents: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProducerInfo:
    """Who produces a run: enough to find the process when something goes wrong."""

    id: str
    host: str = ""
    pid: int = 0
    dbtbus_version: str = ""
    kind: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted:
    """The first record of a run (and of every later attempt of it)."""

    run_id: str
    producer: ProducerInfo
    started_at: datetime = field(default_factory=utcnow)
    command: str = ""
    args: tuple[str, ...] = ()
    dbt_version: str | None = None
    invocation_id: str | None = None
    #: node → its parents, for every selected node, with dbt's test edges in ``build`` (less those another
    #: path implies: each node has the ancestors dbt gives it); ``None`` when the producer cannot know it (a
    #: bare log replay).
    graph: Mapping[str, GraphNode] | None = None
    #: A failure with one of these statuses makes dbt skip the failed node's descendants.
    skip_children_on: frozenset[NodeStatus] = field(default_factory=frozenset)
    #: Nodes configured ``on_error: continue``: their failure skips nothing.
    continue_on_error: frozenset[str] = field(default_factory=frozenset)
    heartbeat_interval: float = 5.0
    attempt: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStarted:
    """dbt began a node (``NodeStart``). Not terminal: consumers use it for progress only."""

    run_id: str
    unique_id: str
    resource_type: str = ""
    started_at: datetime | None = None
    thread: str | None = None
    attempt: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeResult:
    """A node's terminal record."""

    run_id: str
    unique_id: str
    status: NodeStatus
    resource_type: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    execution_time: float | None = None
    message: str | None = None
    adapter_response: Mapping[str, Any] = field(default_factory=dict)
    failures: int | None = None
    thread: str | None = None
    attempt: int = 1
    #: The ancestor whose failure made dbt skip this node (the root of the cascade, not an intermediate).
    skip_cause: str | None = None
    compiled_code: str | None = None
    compiled_code_truncated: bool = False
    relation_name: str | None = None
    #: dbt's phases of the node (``compile``, ``execute``) with their start and end, as run_results.json has.
    timing: tuple[TimingPhase, ...] = ()

    def __post_init__(self) -> None:
        code = self.compiled_code
        if code is not None and len(code) > COMPILED_CODE_LIMIT:
            object.__setattr__(self, "compiled_code", code[:COMPILED_CODE_LIMIT])
            object.__setattr__(self, "compiled_code_truncated", True)

    @property
    def ok(self) -> bool:
        """True when ``wait`` would return this record rather than raise."""
        return self.status.is_success


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchResult:
    """One batch of a microbatch model finished. Not terminal: the model's ``NodeResult`` decides it.

    ``batch`` is the batch's start as dbt names it (``2026-01-01``, ``2026-01-01T05``, ``2026-01``,
    ``2026``: the precision is the model's ``batch_size``); ``batch_index`` counts from 1 to ``total_batches``.
    """

    run_id: str
    unique_id: str
    status: NodeStatus
    batch_index: int = 0
    total_batches: int = 0
    batch: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    execution_time: float | None = None
    message: str | None = None
    adapter_response: Mapping[str, Any] = field(default_factory=dict)
    thread: str | None = None
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class TimingPhase:
    """One of dbt's phases of a node (``compile`` or ``execute``) and when it ran."""

    name: str
    started_at: datetime | None = None
    completed_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """The producer is alive. ``running`` and ``done`` are progress counters, ``peak_rss`` bytes so far."""

    run_id: str
    at: datetime = field(default_factory=utcnow)
    running: int = 0
    done: int = 0
    peak_rss: int | None = None
    #: The attempt this heartbeat belongs to (``None`` in records of producers before 0.2: the current one).
    attempt: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished:
    """dbt returned. ``success`` is dbt's own verdict; ``counts`` maps status → number of nodes."""

    run_id: str
    success: bool
    exit_code: int = 0
    counts: Mapping[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    peak_rss: int | None = None
    finished_at: datetime = field(default_factory=utcnow)
    error: str | None = None
    #: The attempt that ended (``None`` in records of producers before 0.2: the current one).
    attempt: int | None = None
    #: What ``peak_rss`` covers: ``"invocation"`` (this run's own peak), ``"process"`` (the lifetime peak of
    #: the process that ran dbt in process, where the kernel could not reset it), ``None`` (not said).
    peak_rss_scope: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunCrashed:
    """The producer or dbt died before dbt could return (exception, KeyboardInterrupt, SIGTERM, kill)."""

    run_id: str
    error: str
    elapsed: float = 0.0
    peak_rss: int | None = None
    finished_at: datetime = field(default_factory=utcnow)
    exit_code: int | None = None
    #: The attempt that crashed (``None`` in records of producers before 0.2: the current one).
    attempt: int | None = None
    #: What ``peak_rss`` covers: ``"invocation"`` (this run's own peak), ``"process"`` (the lifetime peak of
    #: the process that ran dbt in process, where the kernel could not reset it), ``None`` (not said).
    peak_rss_scope: str | None = None


Record = RunStarted | NodeStarted | NodeResult | BatchResult | Heartbeat | RunFinished | RunCrashed

# ---------------------------------------------------------------------------------------------- encoding


def _ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        # dbt's node_info timestamps are naive UTC; never let a naive value reach the wire ambiguous.
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _node_result_dict(r: NodeResult) -> dict[str, Any]:
    d: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "type": "node_result",
        "run_id": r.run_id,
        "unique_id": r.unique_id,
        "status": r.status.value,
        "resource_type": r.resource_type,
        "started_at": _ts(r.started_at),
        "finished_at": _ts(r.finished_at),
        "execution_time": r.execution_time,
        "message": r.message,
        "adapter_response": dict(r.adapter_response),
        "failures": r.failures,
        "thread": r.thread,
        "attempt": r.attempt,
        "skip_cause": r.skip_cause,
        "relation_name": r.relation_name,
        "timing": [
            {"name": t.name, "started_at": _ts(t.started_at), "completed_at": _ts(t.completed_at)} for t in r.timing
        ],
    }
    if r.compiled_code is not None:
        d["compiled_code"] = r.compiled_code
        d["compiled_code_truncated"] = r.compiled_code_truncated
    return d


def _to_dict(record: Record) -> dict[str, Any]:
    if isinstance(record, NodeResult):
        return _node_result_dict(record)
    if isinstance(record, NodeStarted):
        return {
            "v": SCHEMA_VERSION,
            "type": "node_started",
            "run_id": record.run_id,
            "unique_id": record.unique_id,
            "resource_type": record.resource_type,
            "started_at": _ts(record.started_at),
            "thread": record.thread,
            "attempt": record.attempt,
        }
    if isinstance(record, BatchResult):
        return {
            "v": SCHEMA_VERSION,
            "type": "batch_result",
            "run_id": record.run_id,
            "unique_id": record.unique_id,
            "status": record.status.value,
            "batch_index": record.batch_index,
            "total_batches": record.total_batches,
            "batch": record.batch,
            "started_at": _ts(record.started_at),
            "finished_at": _ts(record.finished_at),
            "execution_time": record.execution_time,
            "message": record.message,
            "adapter_response": dict(record.adapter_response),
            "thread": record.thread,
            "attempt": record.attempt,
        }
    if isinstance(record, RunStarted):
        graph = None
        if record.graph is not None:
            graph = {uid: {"type": n.resource_type, "parents": list(n.parents)} for uid, n in record.graph.items()}
        p = record.producer
        return {
            "v": SCHEMA_VERSION,
            "type": "run_started",
            "run_id": record.run_id,
            "producer": {"id": p.id, "host": p.host, "pid": p.pid, "dbtbus_version": p.dbtbus_version, "kind": p.kind},
            "started_at": _ts(record.started_at),
            "command": record.command,
            "args": list(record.args),
            "dbt_version": record.dbt_version,
            "invocation_id": record.invocation_id,
            "graph": graph,
            "skip_children_on": sorted(s.value for s in record.skip_children_on),
            "continue_on_error": sorted(record.continue_on_error),
            "heartbeat_interval": record.heartbeat_interval,
            "attempt": record.attempt,
        }
    if isinstance(record, Heartbeat):
        return {
            "v": SCHEMA_VERSION,
            "type": "heartbeat",
            "run_id": record.run_id,
            "at": _ts(record.at),
            "running": record.running,
            "done": record.done,
            "peak_rss": record.peak_rss,
            "attempt": record.attempt,
        }
    if isinstance(record, RunFinished):
        return {
            "v": SCHEMA_VERSION,
            "type": "run_finished",
            "run_id": record.run_id,
            "success": record.success,
            "exit_code": record.exit_code,
            "counts": dict(record.counts),
            "elapsed": record.elapsed,
            "peak_rss": record.peak_rss,
            "finished_at": _ts(record.finished_at),
            "error": record.error,
            "attempt": record.attempt,
            "peak_rss_scope": record.peak_rss_scope,
        }
    if isinstance(record, RunCrashed):
        return {
            "v": SCHEMA_VERSION,
            "type": "run_crashed",
            "run_id": record.run_id,
            "error": record.error,
            "elapsed": record.elapsed,
            "peak_rss": record.peak_rss,
            "finished_at": _ts(record.finished_at),
            "exit_code": record.exit_code,
            "attempt": record.attempt,
            "peak_rss_scope": record.peak_rss_scope,
        }
    raise TypeError(f"not a dbtbus record: {type(record).__name__}")


def _json_safe(value: Any) -> Any:
    """Coerce what JSON cannot hold (Decimals, 2**70, sets from an adapter) into strings, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def to_dict(record: Record) -> dict[str, Any]:
    """The record as a JSON-able mapping (its wire form before serialisation); :func:`from_dict` inverts it."""
    return _json_safe(_to_dict(record))  # type: ignore[no-any-return]


def encode(record: Record) -> bytes:
    """Serialise one record to its wire form (compact JSON bytes).

    Free-form values (``adapter_response``) that JSON cannot hold are stored as strings rather than failing:
    a producer must never lose a node's result over an adapter's exotic field.
    """
    obj = _to_dict(record)
    try:
        data = orjson.dumps(obj)
    except TypeError:
        data = orjson.dumps(_json_safe(obj))
    # orjson hands back its whole write buffer (~8 KiB whatever the length): a copy of the exact size is
    # ~20x smaller, which is what a log of thousands of records kept in memory (memory://) costs.
    return bytes(memoryview(data))


# ---------------------------------------------------------------------------------------------- decoding


class _Fields:
    """Typed access to a decoded object; every mistake becomes a DecodeError naming the field."""

    __slots__ = ("data", "obj", "type")

    def __init__(self, obj: dict[str, Any], type_: str, data: bytes | None) -> None:
        self.obj = obj
        self.type = type_
        self.data = data

    def fail(self, key: str, expected: str) -> DecodeError:
        got = type(self.obj.get(key)).__name__ if key in self.obj else "nothing"
        return DecodeError(f"{self.type} record: field {key!r} must be {expected}, got {got}", self.data)

    def req_str(self, key: str) -> str:
        value = self.obj.get(key)
        if not isinstance(value, str):
            raise self.fail(key, "a string")
        return value

    def opt_str(self, key: str, default: str | None = None) -> str | None:
        value = self.obj.get(key, default)
        if value is not None and not isinstance(value, str):
            raise self.fail(key, "a string or null")
        return value

    def text(self, key: str) -> str:
        value = self.opt_str(key)
        return value or ""

    def integer(self, key: str, default: int) -> int:
        value = self.obj.get(key, default)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(key, "an integer")
        return value

    def opt_int(self, key: str) -> int | None:
        value = self.obj.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise self.fail(key, "an integer or null")
        return value

    def opt_float(self, key: str) -> float | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.fail(key, "a number or null")
        return float(value)

    def number(self, key: str, default: float) -> float:
        value = self.opt_float(key)
        return default if value is None else value

    def boolean(self, key: str, default: bool | None = None) -> bool:
        value = self.obj.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "a boolean")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, "an object")
        return value

    def str_list(self, key: str) -> list[str]:
        value = self.obj.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "a list of strings")
        return value

    def dt(self, key: str) -> datetime | None:
        value = self.opt_str(key)
        if value is None:
            return None
        return parse_timestamp(value, self)

    def status(self, key: str) -> NodeStatus:
        value = self.req_str(key)
        try:
            return NodeStatus(value)
        except ValueError:
            raise DecodeError(f"{self.type} record: unknown node status {value!r}", self.data) from None


def parse_timestamp(value: str, fields: _Fields | None = None) -> datetime:
    """Parse an ISO-8601 timestamp into an aware UTC datetime (naive input is taken as UTC, as dbt means it)."""
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        where = f"{fields.type} record: " if fields is not None else ""
        raise DecodeError(f"{where}bad timestamp {value!r}", fields.data if fields else None) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _decode_graph(f: _Fields) -> dict[str, GraphNode] | None:
    raw = f.obj.get("graph")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise f.fail("graph", "an object or null")
    graph: dict[str, GraphNode] = {}
    for uid, spec in raw.items():
        if not isinstance(spec, dict):
            raise DecodeError(f"run_started record: graph node {uid!r} must be an object", f.data)
        parents = spec.get("parents", [])
        rtype = spec.get("type", "")
        if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents) or not isinstance(rtype, str):
            raise DecodeError(f"run_started record: graph node {uid!r} is malformed", f.data)
        graph[uid] = GraphNode(rtype, tuple(parents))
    return graph


def _decode_producer(f: _Fields) -> ProducerInfo:
    p = _Fields(f.mapping("producer"), "run_started.producer", f.data)
    return ProducerInfo(
        id=p.text("id"),
        host=p.text("host"),
        pid=p.integer("pid", 0),
        dbtbus_version=p.text("dbtbus_version"),
        kind=p.text("kind"),
    )


def _decode_statuses(f: _Fields, key: str) -> frozenset[NodeStatus]:
    out = set()
    for value in f.str_list(key):
        try:
            out.add(NodeStatus(value))
        except ValueError:
            raise DecodeError(f"{f.type} record: unknown node status {value!r} in {key!r}", f.data) from None
    return frozenset(out)


def _decode_counts(f: _Fields) -> dict[str, int]:
    counts = f.mapping("counts")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts.values()):
        raise f.fail("counts", "an object of integers")
    return counts


def _clamped_heartbeat(value: float) -> float:
    low, high = HEARTBEAT_RANGE
    if value != value:  # NaN
        return 5.0
    return min(max(value, low), high)


def _run_started(f: _Fields) -> RunStarted:
    return RunStarted(
        run_id=f.req_str("run_id"),
        producer=_decode_producer(f),
        started_at=f.dt("started_at") or utcnow(),
        command=f.text("command"),
        args=tuple(f.str_list("args")),
        dbt_version=f.opt_str("dbt_version"),
        invocation_id=f.opt_str("invocation_id"),
        graph=_decode_graph(f),
        skip_children_on=_decode_statuses(f, "skip_children_on"),
        continue_on_error=frozenset(f.str_list("continue_on_error")),
        heartbeat_interval=_clamped_heartbeat(f.number("heartbeat_interval", 5.0)),
        attempt=f.integer("attempt", 1),
    )


def _node_started(f: _Fields) -> NodeStarted:
    return NodeStarted(
        run_id=f.req_str("run_id"),
        unique_id=f.req_str("unique_id"),
        resource_type=f.text("resource_type"),
        started_at=f.dt("started_at"),
        thread=f.opt_str("thread"),
        attempt=f.integer("attempt", 1),
    )


_STATUS_BY_VALUE: Final[Mapping[str, NodeStatus]] = {status.value: status for status in NodeStatus}
_OPTIONAL_TEXT: Final = ("resource_type", "message", "thread", "skip_cause", "compiled_code", "relation_name")


def _node_result(f: _Fields) -> NodeResult:
    # Every reader decodes every node's record: the usual shape is checked in one pass here, and anything off
    # it goes through the field-by-field path below, which names the field that is wrong.
    obj = f.obj
    get = obj.get
    run_id, unique_id, status = get("run_id"), get("unique_id"), get("status")
    execution_time, failures, attempt = get("execution_time"), get("failures"), get("attempt", 1)
    adapter_response, started_at, finished_at = get("adapter_response"), get("started_at"), get("finished_at")
    truncated = get("compiled_code_truncated", False)
    text = [get(key) for key in _OPTIONAL_TEXT]
    if (
        type(run_id) is str
        and type(unique_id) is str
        and type(status) is str
        and status in _STATUS_BY_VALUE
        and (execution_time is None or type(execution_time) is float or type(execution_time) is int)
        and (failures is None or type(failures) is int)
        and type(attempt) is int
        and (adapter_response is None or type(adapter_response) is dict)
        and (started_at is None or type(started_at) is str)
        and (finished_at is None or type(finished_at) is str)
        and type(truncated) is bool
        and all(value is None or type(value) is str for value in text)
    ):
        resource_type, message, thread, skip_cause, compiled_code, relation_name = text
        return NodeResult(
            run_id=run_id,
            unique_id=unique_id,
            status=_STATUS_BY_VALUE[status],
            resource_type=resource_type or "",
            started_at=None if started_at is None else parse_timestamp(started_at, f),
            finished_at=None if finished_at is None else parse_timestamp(finished_at, f),
            execution_time=None if execution_time is None else float(execution_time),
            message=message,
            adapter_response={} if adapter_response is None else adapter_response,
            failures=failures,
            thread=thread,
            attempt=attempt,
            skip_cause=skip_cause,
            compiled_code=compiled_code,
            compiled_code_truncated=truncated,
            relation_name=relation_name,
            timing=_decode_timing(f),
        )
    return _node_result_checked(f)


def _node_result_checked(f: _Fields) -> NodeResult:
    return NodeResult(
        run_id=f.req_str("run_id"),
        unique_id=f.req_str("unique_id"),
        status=f.status("status"),
        resource_type=f.text("resource_type"),
        started_at=f.dt("started_at"),
        finished_at=f.dt("finished_at"),
        execution_time=f.opt_float("execution_time"),
        message=f.opt_str("message"),
        adapter_response=f.mapping("adapter_response"),
        failures=f.opt_int("failures"),
        thread=f.opt_str("thread"),
        attempt=f.integer("attempt", 1),
        skip_cause=f.opt_str("skip_cause"),
        compiled_code=f.opt_str("compiled_code"),
        compiled_code_truncated=f.boolean("compiled_code_truncated", False),
        relation_name=f.opt_str("relation_name"),
        timing=_decode_timing(f),
    )


def _decode_timing(f: _Fields) -> tuple[TimingPhase, ...]:
    raw = f.obj.get("timing")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise f.fail("timing", "a list")
    phases = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise f.fail("timing", "a list of {name, started_at, completed_at} objects")
        stamps = []
        for key in ("started_at", "completed_at"):
            value = item.get(key)
            if value is not None and not isinstance(value, str):
                raise f.fail("timing", "ISO timestamps")
            stamps.append(parse_timestamp(value, f) if value else None)
        phases.append(TimingPhase(item["name"], stamps[0], stamps[1]))
    return tuple(phases)


def _batch_result(f: _Fields) -> BatchResult:
    return BatchResult(
        run_id=f.req_str("run_id"),
        unique_id=f.req_str("unique_id"),
        status=f.status("status"),
        batch_index=f.integer("batch_index", 0),
        total_batches=f.integer("total_batches", 0),
        batch=f.opt_str("batch"),
        started_at=f.dt("started_at"),
        finished_at=f.dt("finished_at"),
        execution_time=f.opt_float("execution_time"),
        message=f.opt_str("message"),
        adapter_response=f.mapping("adapter_response"),
        thread=f.opt_str("thread"),
        attempt=f.integer("attempt", 1),
    )


def _heartbeat(f: _Fields) -> Heartbeat:
    return Heartbeat(
        run_id=f.req_str("run_id"),
        at=f.dt("at") or utcnow(),
        running=f.integer("running", 0),
        done=f.integer("done", 0),
        peak_rss=f.opt_int("peak_rss"),
        attempt=f.opt_int("attempt"),
    )


def _run_finished(f: _Fields) -> RunFinished:
    return RunFinished(
        run_id=f.req_str("run_id"),
        success=f.boolean("success"),
        exit_code=f.integer("exit_code", 0),
        counts=_decode_counts(f),
        elapsed=f.number("elapsed", 0.0),
        peak_rss=f.opt_int("peak_rss"),
        finished_at=f.dt("finished_at") or utcnow(),
        error=f.opt_str("error"),
        attempt=f.opt_int("attempt"),
        peak_rss_scope=f.opt_str("peak_rss_scope"),
    )


def _run_crashed(f: _Fields) -> RunCrashed:
    return RunCrashed(
        run_id=f.req_str("run_id"),
        error=f.req_str("error"),
        elapsed=f.number("elapsed", 0.0),
        peak_rss=f.opt_int("peak_rss"),
        finished_at=f.dt("finished_at") or utcnow(),
        exit_code=f.opt_int("exit_code"),
        attempt=f.opt_int("attempt"),
        peak_rss_scope=f.opt_str("peak_rss_scope"),
    )


_DECODERS: dict[str, Callable[[_Fields], Record]] = {
    "run_started": _run_started,
    "node_started": _node_started,
    "node_result": _node_result,
    "batch_result": _batch_result,
    "heartbeat": _heartbeat,
    "run_finished": _run_finished,
    "run_crashed": _run_crashed,
}


def decode(data: bytes | bytearray | memoryview | str) -> Record:
    """Parse one record from its wire form.

    Raises :class:`dbtbus.DecodeError` (never anything else) for bytes that are not JSON, not an object,
    not a dbtbus record, from a newer schema major version, of an unknown record type, or with a missing or
    mistyped field. Unknown extra fields are ignored.
    """
    raw = data.encode() if isinstance(data, str) else bytes(data)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not a dbtbus record: invalid JSON ({exc})", raw) from None
    return _from_obj(obj, raw)


def from_dict(obj: Any) -> Record:
    """Build a record from its mapping form (:func:`to_dict`); raises :class:`dbtbus.DecodeError` like ``decode``."""
    return _from_obj(obj, None)


def _from_obj(obj: Any, raw: bytes | None) -> Record:
    if not isinstance(obj, dict):
        raise DecodeError(f"not a dbtbus record: a JSON {type(obj).__name__}, not an object", raw)
    version = obj.get("v")
    if not isinstance(version, int) or isinstance(version, bool):
        raise DecodeError("not a dbtbus record: no integer schema version 'v'", raw)
    if version > SCHEMA_VERSION:
        raise DecodeError(
            f"record schema version {version} is newer than this dbtbus understands ({SCHEMA_VERSION}): upgrade dbtbus",
            raw,
        )
    if version < 1:
        raise DecodeError(f"not a dbtbus record: invalid schema version {version}", raw)
    kind = obj.get("type")
    decoder = _DECODERS.get(kind) if isinstance(kind, str) else None
    if decoder is None or not isinstance(kind, str):
        raise DecodeError(f"not a dbtbus record: unknown record type {kind!r}", raw)
    try:
        return decoder(_Fields(obj, kind, raw))
    except DecodeError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. a timestamp out of range
        raise DecodeError(f"{kind} record: {exc}", raw) from None
