"""The dbtRunner callback (runs on dbt's threads) and the protobuf → JSON-shape extraction (runs off them).

The callback does O(1) work: one frozenset lookup on the event name, one ``deque.append`` of a 2-tuple and,
only when the publisher sleeps, one thread-safe wake-up. It never raises (a raising NodeStart callback hangs
dbt; a raising NodeFinished callback turns a built model into an error) and never blocks on I/O. Only a
KeyboardInterrupt or SystemExit that a signal raises in the main thread while it runs there passes through,
as it would anywhere else in dbt (signals never raise in dbt's worker threads, where nodes run).

The EventMsg is safe to read later on another thread: ``EventManager.fire_event`` builds a fresh message per
event (``msg_from_base_event``) and nothing keeps or mutates it after the callbacks return; ``node_info`` is
copied into the message when the event is created.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ._normalise import WANTED

logger = logging.getLogger("dbtbus.producer")

Item = tuple[str, Any]


def make_callback(push: Callable[[Item], None]) -> Callable[[Any], None]:
    """Return the callback to give ``dbtRunner(callbacks=[...])``: FIFO hand-off of the wanted events."""
    wanted = WANTED

    def callback(msg: Any) -> None:
        try:
            name = msg.info.name
            if name in wanted:
                push((name, msg))
        except Exception:  # a bad event or a producer bug never breaks dbt
            pass
        # Not BaseException: Ctrl-C or the producer's SIGTERM landing in here is meant for the run.

    return callback


def _node_info(ni: Any) -> dict[str, Any]:
    return {
        "unique_id": ni.unique_id,
        "resource_type": ni.resource_type,
        "node_status": ni.node_status,
        "node_started_at": ni.node_started_at,
        "node_finished_at": ni.node_finished_at,
        "node_relation": {"relation_name": ni.node_relation.relation_name},
    }


def _struct(value: Any) -> dict[str, Any]:
    json_format = importlib.import_module("google.protobuf.json_format")
    result: dict[str, Any] = json_format.MessageToDict(value)
    return result


def _ts(info: Any) -> datetime | None:
    ts = info.ts
    if not ts.seconds and not ts.nanos:
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=timezone.utc)


def _stamp(ts: Any) -> datetime | None:
    if not ts.seconds and not ts.nanos:
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=timezone.utc)


def extract(name: str, msg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields the normaliser reads, from an EventMsg, in the shape of a JSON log line's data/info."""
    info = msg.info
    info_d: dict[str, Any] = {"ts": _ts(info), "thread": info.thread, "invocation_id": info.invocation_id}
    d = msg.data
    data: dict[str, Any]
    if name == "NodeFinished":
        rr = d.run_result
        data = {
            "node_info": _node_info(d.node_info),
            "run_result": {
                "status": rr.status,
                "message": rr.message,
                "execution_time": rr.execution_time,
                "num_failures": rr.num_failures,
                "thread": rr.thread,
                "adapter_response": _struct(rr.adapter_response),
                "timing_info": [
                    {"name": t.name, "started_at": _stamp(t.started_at), "completed_at": _stamp(t.completed_at)}
                    for t in rr.timing_info
                ],
            },
        }
    elif name in ("NodeStart", "SkippingDetails"):
        data = {"node_info": _node_info(d.node_info)}
    elif name in ("LogStartBatch", "LogBatchResult"):
        data = {
            "node_info": _node_info(d.node_info),
            "description": d.description,
            "batch_index": d.batch_index,
            "total_batches": d.total_batches,
        }
        if name == "LogBatchResult":
            data["status"] = d.status
            data["execution_time"] = d.execution_time
    elif name in ("LogHookStartLine", "LogHookEndLine"):
        data = {"node_info": _node_info(d.node_info), "statement": d.statement, "index": d.index, "total": d.total}
        if name == "LogHookEndLine":
            data["status"] = d.status
            data["execution_time"] = d.execution_time
    elif name == "MarkSkippedChildren":
        data = {"unique_id": d.unique_id, "status": d.status}
    elif name == "GenericExceptionOnRun":
        data = {"unique_id": d.unique_id, "exc": d.exc, "node_info": _node_info(d.node_info)}
    elif name == "MainReportVersion":
        data = {"version": d.version}
    elif name == "CommandCompleted":
        data = {"success": d.success, "elapsed": d.elapsed, "command": d.command}
    else:
        data = {}
    return data, info_d
