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

import dataclasses
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final

import orjson

from ._exceptions import DecodeError, InvalidRunId

__all__ = [
    "COMPILED_CODE_LIMIT",
    "FAILURE_STATUSES",
    "HEARTBEAT_RANGE",
    "LEASE_PERIOD_MAX",
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
    "check_run_id",
    "decode",
    "encode",
    "from_dict",
    "lease_period",
    "to_dict",
]

SCHEMA_VERSION: Final = 1
#: The heartbeat intervals (seconds) a decoded ``RunStarted`` may announce: a foreign or broken record must
#: neither switch loss detection off (1e308) nor make every reader poll the lease in a hot loop (<= 0).
HEARTBEAT_RANGE: Final = (0.2, 600.0)
#: The longest lease period (seconds) whatever a run's ``heartbeat_interval`` claims: see :func:`lease_period`.
LEASE_PERIOD_MAX: Final = 8.0


def check_run_id(run_id: object) -> str:
    """``run_id`` if dbtbus may publish under it, else :class:`~dbtbus.InvalidRunId` — THE check (the producer
    and ``Bus.publish`` call it). A run id is shown in logs, terminals, the CLI and HTML reports: one with
    control characters (a newline, an escape sequence, a bidi override) could forge lines there."""
    if not isinstance(run_id, str) or not run_id:
        raise InvalidRunId(f"a run id must be a non-empty string, got {run_id!r}")
    if not run_id.isprintable():
        bad = sorted({f"U+{ord(ch):04X}" for ch in run_id if not ch.isprintable()})
        raise InvalidRunId(
            f"run id {run_id!r} holds control or invisible characters ({', '.join(bad)}): they could forge "
            "lines in logs, terminals and reports; use printable characters only"
        )
    return run_id


def lease_period(heartbeat_interval: float | None) -> float:
    """The liveness period of a run that announced ``heartbeat_interval`` (``None``: not known) — THE rule.

    The producer renews its lease at least this often, for 1.5 periods; readers check the lease every half
    period and declare the producer lost once the lease is absent and they saw no sign of life for 2.5
    periods. So a dead producer is noticed within 3 periods of its last renewal: 3 x heartbeat for short
    heartbeats, and never more than 3 x ``LEASE_PERIOD_MAX`` (24 s) whatever a RunStarted claims (3600 s,
    or a forged value).
    """
    if heartbeat_interval is None or heartbeat_interval != heartbeat_interval:  # unknown, NaN
        return LEASE_PERIOD_MAX
    return min(max(heartbeat_interval, HEARTBEAT_RANGE[0]), LEASE_PERIOD_MAX)
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
    heartbeat_interval: float = field(default=5.0, metadata={"wire": "heartbeat"})
    attempt: int = 1
    #: The producer found the run's claim gone (the backend lost the run's keys: a restart without
    #: persistence, a flush) and republished, right after this record, every terminal record it holds.
    recovered: bool = False
    #: dbt's own arguments of the invocation, as dbt writes them in ``run_results.json`` (``args``), with
    #: secret-looking ``--vars`` values redacted; empty when the producer could not ask dbt (a log replay).
    dbt_args: Mapping[str, Any] = field(default_factory=dict)
    #: When dbt says the invocation started (its ``invocation_started_at``), not when the producer announced it.
    invocation_started_at: datetime | None = None


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
    #: Written only when there is code (and ``compiled_code_truncated`` with it).
    compiled_code: str | None = field(
        default=None, metadata={"wire": "omit_none", "with": ("compiled_code_truncated",)}
    )
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
    #: The attempt this heartbeat belongs to (``None``: the run's current attempt).
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
    #: The attempt that ended (``None``: the run's current attempt).
    attempt: int | None = None
    #: What ``peak_rss`` covers: ``"invocation"`` (this run's own peak), ``"process"`` (the lifetime peak of
    #: the process that ran dbt in process, where the kernel could not reset it), ``None`` (not said).
    peak_rss_scope: str | None = None
    #: dbt's own ``elapsed_time`` of the run (hooks and nodes, without parsing), when dbt said it; ``elapsed``
    #: is the producer's measure of the whole invocation.
    dbt_elapsed: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunCrashed:
    """The producer or dbt died before dbt could return (exception, KeyboardInterrupt, SIGTERM, kill)."""

    run_id: str
    error: str
    elapsed: float = 0.0
    peak_rss: int | None = None
    finished_at: datetime = field(default_factory=utcnow)
    exit_code: int | None = None
    #: The attempt that crashed (``None``: the run's current attempt).
    attempt: int | None = None
    #: What ``peak_rss`` covers: ``"invocation"`` (this run's own peak), ``"process"`` (the lifetime peak of
    #: the process that ran dbt in process, where the kernel could not reset it), ``None`` (not said).
    peak_rss_scope: str | None = None


Record = RunStarted | NodeStarted | NodeResult | BatchResult | Heartbeat | RunFinished | RunCrashed

# ---------------------------------------------------------------------------------------------- wire codec
#
# Written once, generated from the records' fields: each record type's encoder, fast decoder (the usual shape
# checked in one pass) and checked decoder (field by field, naming the field that is wrong) are compiled at
# import from ``dataclasses.fields()`` and the table of kinds below. Adding a field to a record is one edit.
# A field's ``metadata`` may say ``{"wire": "omit_none"}`` (left out of the wire form while None, with the
# fields it names in "with") or ``{"wire": "heartbeat"}`` (clamped to HEARTBEAT_RANGE when read).


def _ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        # dbt's node_info timestamps are naive UTC; never let a naive value reach the wire ambiguous.
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _graph_dict(graph: Mapping[str, GraphNode] | None) -> dict[str, Any] | None:
    if graph is None:
        return None
    return {uid: {"type": n.resource_type, "parents": list(n.parents)} for uid, n in graph.items()}


def _producer_dict(p: ProducerInfo) -> dict[str, Any]:
    return {"id": p.id, "host": p.host, "pid": p.pid, "dbtbus_version": p.dbtbus_version, "kind": p.kind}


def _timing_list(timing: tuple[TimingPhase, ...]) -> list[dict[str, Any]]:
    return [{"name": t.name, "started_at": _ts(t.started_at), "completed_at": _ts(t.completed_at)} for t in timing]


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



@dataclass(frozen=True)
class _Kind:
    """How one kind of field goes on the wire and comes back, as code templates of the generated functions.

    ``encode`` makes the wire value of ``{v}``; ``fast`` tests a raw value ``{x}`` for the usual shape and
    ``convert`` makes the field from it (no ``fast``: the checked form serves both paths); ``checked`` reads
    key ``{k}`` through the accessor ``f``, naming the field when it is wrong (``{default}``, ``{factory}``:
    the field's default and default factory).
    """

    encode: str
    checked: str
    fast: str | None = None
    convert: str = "{x}"


_KINDS: Final[Mapping[str, _Kind]] = {
    "str": _Kind("{v}", "f.req_str({k})", "type({x}) is str"),
    "str | None": _Kind("{v}", "f.opt_str({k})", "{x} is None or type({x}) is str"),
    "str=": _Kind("{v}", "f.text({k})", "{x} is None or type({x}) is str", "{x} or ''"),
    "int=": _Kind("{v}", "f.integer({k}, {default})", "type({x}) is int"),
    "int | None": _Kind("{v}", "f.opt_int({k})", "{x} is None or type({x}) is int"),
    "float=": _Kind("{v}", "f.number({k}, {default})", "type({x}) is float or type({x}) is int", "float({x})"),
    "float | None": _Kind("{v}", "f.opt_float({k})", "{x} is None or type({x}) is float or type({x}) is int",
                          "None if {x} is None else float({x})"),
    "bool": _Kind("{v}", "f.boolean({k})", "type({x}) is bool"),
    "bool=": _Kind("{v}", "f.boolean({k}, {default})", "type({x}) is bool"),
    "datetime": _Kind("_ts({v})", "f.dt({k}) or {factory}()"),
    "datetime | None": _Kind("_ts({v})", "f.dt({k})", "{x} is None or type({x}) is str",
                             "None if {x} is None else parse_timestamp({x}, f)"),
    "NodeStatus": _Kind("{v}.value", "f.status({k})", "type({x}) is str and {x} in _STATUS_BY_VALUE",
                        "_STATUS_BY_VALUE[{x}]"),
    "Mapping[str, Any]": _Kind("dict({v})", "f.mapping({k})", "{x} is None or type({x}) is dict",
                               "{{}} if {x} is None else {x}"),
    "Mapping[str, int]": _Kind("dict({v})", "_decode_counts(f)"),
    "tuple[str, ...]": _Kind("list({v})", "tuple(f.str_list({k}))"),
    "frozenset[str]": _Kind("sorted({v})", "frozenset(f.str_list({k}))"),
    "frozenset[NodeStatus]": _Kind("sorted(s.value for s in {v})", "_decode_statuses(f, {k})"),
    "Mapping[str, GraphNode] | None": _Kind("_graph_dict({v})", "_decode_graph(f)"),
    "ProducerInfo": _Kind("_producer_dict({v})", "_decode_producer(f)"),
    "tuple[TimingPhase, ...]": _Kind("_timing_list({v})", "_decode_timing(f)"),
}


class _Codec:
    """A record type's wire form: ``encode(record) -> dict``; ``decode(fields) -> record`` (fast, else checked)."""

    def __init__(self, cls: type, tag: str) -> None:
        self.cls, self.tag = cls, tag
        namespace: dict[str, Any] = {**globals(), "_cls": cls}
        written: list[str] = []
        optional: list[str] = []
        reads = ["    get = obj.get"]
        tests: list[str] = []
        fast_args: list[str] = []
        checked_args: list[str] = []
        together = {extra for fld in dataclasses.fields(cls) for extra in fld.metadata.get("with", ())}
        for index, fld in enumerate(dataclasses.fields(cls)):
            name, wire = fld.name, fld.metadata.get("wire")
            kind = _KINDS.get(_kind_name(fld))
            if kind is None:
                raise TypeError(f"{cls.__name__}.{name}: no wire kind for {fld.type!r}")
            namespace[f"_default_{index}"] = fld.default
            namespace[f"_factory_{index}"] = fld.default_factory
            checked = kind.checked.format(k=repr(name), default=f"_default_{index}", factory=f"_factory_{index}")
            if wire == "heartbeat":
                checked = f"_clamped_heartbeat({checked})"
            checked_args.append(f"{name}={checked}")
            if wire == "omit_none":
                optional.append(f"    if r.{name} is not None:")
                optional.extend(f"        d[{extra!r}] = r.{extra}" for extra in (name, *fld.metadata["with"]))
            elif name not in together:
                written.append(f"{name!r}: {kind.encode.format(v=f'r.{name}')}")
            if kind.fast is None or wire is not None:
                fast_args.append(f"{name}={checked}")
                continue
            raw = f"x{index}"
            missing = "None" if fld.default is dataclasses.MISSING else f"_default_{index}"
            reads.append(f"    {raw} = get({name!r}, {missing})")
            tests.append("(" + kind.fast.format(x=raw) + ")")
            fast_args.append(f"{name}={kind.convert.format(x=raw)}")
        source = "\n".join([
            "def encode(r):",
            f"    d = {{'v': {SCHEMA_VERSION}, 'type': {tag!r}, " + ", ".join(written) + "}",
            *optional,
            "    return d",
            "def checked(f):",
            f"    return _cls({', '.join(checked_args)})",
            "def fast(obj, f):",
            *reads,
            f"    if not ({' and '.join(tests) or 'True'}):",
            "        return None",
            f"    return _cls({', '.join(fast_args)})",
        ])
        exec(compile(source, f"<dbtbus codec {tag}>", "exec"), namespace)
        self.encode: Callable[[Any], dict[str, Any]] = namespace["encode"]
        self.checked: Callable[[_Fields], Any] = namespace["checked"]
        self.fast: Callable[[dict[str, Any], _Fields], Any] = namespace["fast"]

    def decode(self, f: _Fields) -> Record:
        record: Record | None = self.fast(f.obj, f)
        if record is None:
            record = self.checked(f)
        return record


def _kind_name(fld: dataclasses.Field[Any]) -> str:
    """The kind of a field: its annotation, with ``=`` for a plain type that has a default."""
    name = str(fld.type)
    has_default = fld.default is not dataclasses.MISSING or fld.default_factory is not dataclasses.MISSING
    if has_default and name in ("str", "int", "float", "bool"):
        return name + "="
    return name


_STATUS_BY_VALUE: Final[Mapping[str, NodeStatus]] = {status.value: status for status in NodeStatus}
_CODECS: Final[dict[str, _Codec]] = {
    tag: _Codec(cls, tag)
    for tag, cls in (("run_started", RunStarted), ("node_started", NodeStarted), ("node_result", NodeResult),
                     ("batch_result", BatchResult), ("heartbeat", Heartbeat), ("run_finished", RunFinished),
                     ("run_crashed", RunCrashed))
}
_CODEC_OF: Final[dict[type, _Codec]] = {codec.cls: codec for codec in _CODECS.values()}


def _to_dict(record: Record) -> dict[str, Any]:
    codec = _CODEC_OF.get(type(record))
    if codec is None:
        raise TypeError(f"not a dbtbus record: {type(record).__name__}")
    return codec.encode(record)


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
    codec = _CODECS.get(kind) if isinstance(kind, str) else None
    if codec is None or not isinstance(kind, str):
        raise DecodeError(f"not a dbtbus record: unknown record type {kind!r}", raw)
    try:
        return codec.decode(_Fields(obj, kind, raw))
    except DecodeError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. a timestamp out of range
        raise DecodeError(f"{kind} record: {exc}", raw) from None
