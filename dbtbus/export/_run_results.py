"""dbt's ``run_results.json`` (schema v6, as the run's dbt-core 1.8 to 1.11 writes it) from a run's state."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from .._dbt.versions import BATCH_RESULTS_SINCE, INVOCATION_STARTED_AT_SINCE, at_least
from .._state import RunState
from ..events import BatchResult, NodeResult, NodeStatus, RunCrashed

__all__ = ["RUN_RESULTS_SCHEMA", "is_ephemeral", "run_results", "write_run_results"]

RUN_RESULTS_SCHEMA = "https://schemas.getdbt.com/dbt/run-results/v6.json"
#: dbt has no ``not_run``: a node the run never reached is ``skipped`` there (as ``--fail-fast`` does).
_STATUS = {NodeStatus.NOT_RUN: "skipped"}
#: adapter_response numbers that dbt writes as integers (a JSON log carries them as floats: 7.0).
_INTEGER_KEYS = frozenset({"rows_affected"})
#: Resource types that are not dbt's ``CompiledResource``: dbt writes ``compiled``, ``compiled_code`` and
#: ``relation_name`` as null for them, whatever happened.
_NOT_COMPILED = frozenset({"seed", "saved_query", "source", "exposure", "metric", "semantic_model"})


def _ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _adapter_response(response: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(response)
    for key in _INTEGER_KEYS & out.keys():
        value = out[key]
        if isinstance(value, float) and value.is_integer():
            out[key] = int(value)
    return out


def _timing(record: NodeResult, clock: RunState) -> list[dict[str, Any]]:
    """dbt's compile / execute phases, when the record carries them; never invented from the node's span.
    Their times are the producer's, shown on the backend's clock (``clock``: the run's measured skew)."""
    phases = getattr(record, "timing", None) or ()
    out = []
    for phase in phases:
        name = getattr(phase, "name", None)
        if name is None:
            continue
        started_at, completed_at = getattr(phase, "started_at", None), getattr(phase, "completed_at", None)
        out.append({"name": name, "started_at": _ts(started_at and clock.backend_time(started_at)),
                    "completed_at": _ts(completed_at and clock.backend_time(completed_at))})
    return out


def _batch_span(batch: str) -> tuple[datetime, datetime] | None:
    """A batch's [start, end) from dbt's name for it: its start at the precision of the model's batch_size
    (``2026``, ``2026-01``, ``2026-01-01``, ``2026-01-01T05``), the end one batch_size later."""
    try:
        if len(batch) == 4:
            start = datetime(int(batch), 1, 1, tzinfo=timezone.utc)
            return start, start.replace(year=start.year + 1)
        if len(batch) == 7:
            start = datetime.strptime(batch, "%Y-%m").replace(tzinfo=timezone.utc)
            month = start.month % 12 + 1
            return start, start.replace(year=start.year + (start.month == 12), month=month)
        if len(batch) == 10:
            start = datetime.strptime(batch, "%Y-%m-%d").replace(tzinfo=timezone.utc)
            return start, start + timedelta(days=1)
        start = datetime.strptime(batch, "%Y-%m-%dT%H").replace(tzinfo=timezone.utc)
        return start, start + timedelta(hours=1)
    except ValueError:
        return None


def _batch_results(batches: list[BatchResult] | None) -> dict[str, list[list[str]]] | None:
    """dbt's ``batch_results`` of a microbatch model from its batches on the bus: each batch one batch_size
    from its start, as dbt 1.11 plans them (the window's end is ceiled to a batch boundary)."""
    if not batches:
        return None
    out: dict[str, list[list[str]]] = {"successful": [], "failed": []}
    for batch in batches:
        span = _batch_span(batch.batch) if batch.batch else None
        if span is not None:
            side = "successful" if batch.status.is_success else "failed"
            out[side].append([span[0].isoformat(), span[1].isoformat()])
    out["successful"].sort()
    out["failed"].sort()
    return out


def _result(record: NodeResult, clock: RunState, batches: list[BatchResult] | None = None) -> dict[str, Any]:
    status = _STATUS.get(record.status, record.status.value)
    # As dbt writes them: a seed or a saved query is neither compiled nor named by relation in
    # run_results; whatever dbt ran besides was compiled (but a microbatch model, whose batches were); what
    # it skipped was not.
    # A unit test is compiled when it runs (dbt builds a test query from its fixtures); one that errored
    # is written as dbt's uncompiled definition, which has neither.
    seed = record.resource_type in _NOT_COMPILED or (
        record.resource_type == "unit_test" and record.status in (NodeStatus.ERROR, NodeStatus.RUNTIME_ERROR))
    compiled: bool | None = None if seed else not batches
    failures = record.failures
    if batches and failures is None:
        failures = 0  # dbt's microbatch result starts at 0 failures and merging the batches keeps it
    if record.resource_type == "saved_query" and failures is None and record.status.is_success:
        failures = 0  # dbt's saved-query runner writes a result with 0 failures
    if record.status in (NodeStatus.ERROR, NodeStatus.RUNTIME_ERROR) and record.resource_type != "operation":
        failures = None  # dbt's error_result counts none (a test that raised counted nothing)
    if record.status in (NodeStatus.SKIPPED, NodeStatus.NOT_RUN):
        compiled = None if seed else False
        if record.resource_type != "operation":  # a hook dbt skipped counts 1 failure, as dbt writes it
            failures = None  # a test that never ran counted nothing
    return {
        "status": status,
        "timing": _timing(record, clock),
        "thread_id": record.thread or "",
        "execution_time": record.execution_time or 0,
        "adapter_response": _adapter_response(record.adapter_response),
        "message": record.message,
        "failures": failures,
        "unique_id": record.unique_id,
        "compiled": compiled,
        "compiled_code": None if seed else record.compiled_code,
        "relation_name": None if seed or record.resource_type == "unit_test" else record.relation_name,
        "batch_results": _batch_results(batches),
    }


def is_ephemeral(record: NodeResult) -> bool:
    """An ephemeral model: dbt compiles it into its children, never builds it, and leaves it out of its counts
    and of run_results.json. Its record is the only model record without a relation."""
    return record.resource_type == "model" and not record.relation_name


def _finish_key(record: NodeResult) -> tuple[int, float, str]:
    finished = record.finished_at
    return (0 if finished is not None else 1, finished.timestamp() if finished is not None else 0.0, record.unique_id)


def _never_run(state: RunState) -> list[dict[str, Any]]:
    """Selected nodes without a record in a run that is over (crashed, or its producer lost before it could
    say): they did not run, which dbt's schema says as ``skipped``. A live run's pending nodes are left out."""
    if state.ending is None and not state.lost:
        return []
    if isinstance(state.ending, RunCrashed):
        why = f"not run: the run crashed ({state.ending.error})"
    elif state.lost:
        why = "not run: the producer stopped heartbeating (producer lost)"
    else:
        why = "not run: the run ended without running it"
    out = []
    for uid in sorted(state.pending()):
        out.append(
            {
                "status": "skipped",
                "timing": [],
                "thread_id": "",
                "execution_time": 0,
                "adapter_response": {},
                "message": why,
                "failures": None,
                "unique_id": uid,
                "compiled": False,
                "compiled_code": None,
                "relation_name": None,
                "batch_results": None,
            }
        )
    return out


def run_results(state: RunState, *, now: datetime | None = None) -> dict[str, Any]:
    """``run_results.json`` for the run as the state knows it, at any moment — during the run, after a crash
    or a fail-fast: every node with a terminal result (but ephemeral models, as dbt), in the order the nodes
    finished (nodes never reached last). A retried run lists each node's latest result. Nodes still running
    are left out (as dbt's own file leaves out what has not finished).
    """
    moment = now or datetime.now(timezone.utc)
    started = state.started
    ending = state.ending
    dbts = getattr(ending, "dbt_elapsed", None)
    if dbts is not None:
        elapsed = dbts  # dbt's own figure: its hooks and nodes, not parsing
    elif ending is not None and ending.elapsed:
        elapsed = ending.elapsed
    elif started is not None:
        # Both on the producer's clock: its start and end, or now as the producer's clock reads it.
        until = ending.finished_at if ending is not None else state.producer_time(moment)
        elapsed = max(0.0, (until - started.started_at).total_seconds())
    else:
        elapsed = 0.0
    ordered = sorted(state.results.values(), key=_finish_key)
    never = _never_run(state)
    args: dict[str, Any] = {}
    if started is not None and started.dbt_args:
        args = dict(started.dbt_args)  # dbt's own, secret-looking --vars redacted
    elif started is not None:
        args = {"which": started.command, "invocation_command": " ".join(("dbt", *started.args))}
    dbt_version = (started.dbt_version if started is not None else None) or "unknown"
    metadata: dict[str, Any] = {
        "dbt_schema_version": RUN_RESULTS_SCHEMA,
        "dbt_version": dbt_version,
        "generated_at": _ts(moment),
        "invocation_id": started.invocation_id if started is not None else None,
    }
    if at_least(dbt_version, INVOCATION_STARTED_AT_SINCE):  # dbt-core 1.8 and 1.9 do not write it
        invocation_started_at = None
        if started is not None:
            invocation_started_at = state.backend_time(started.invocation_started_at or started.started_at)
        metadata["invocation_started_at"] = _ts(invocation_started_at)
    metadata["env"] = {}
    results = [*(_result(r, state, state.batches.get(r.unique_id)) for r in ordered if not is_ephemeral(r)), *never]
    if not at_least(dbt_version, BATCH_RESULTS_SINCE):  # dbt-core 1.8 has no microbatch models
        for result in results:
            del result["batch_results"]
    return {
        "metadata": metadata,
        "results": results,
        "elapsed_time": elapsed,
        "args": args,
    }


def _umask() -> int:
    """The process's umask: from ``/proc`` where Linux says it, else by setting it and straight back (which
    another thread creating a file in between would see)."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_run_results(state: RunState, path: str | os.PathLike[str], *, now: datetime | None = None) -> Path:
    """Write :func:`run_results` to ``path`` atomically (a reader never sees half a file); return the path.

    The file gets the mode dbt's own has, ``0666`` less the umask (``0644`` typically): the temporary file
    it is renamed from is created ``0600``.
    """
    target = Path(path)
    data = orjson.dumps(run_results(state, now=now), option=orjson.OPT_INDENT_2)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent if str(target.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
