"""The selected graph of a dbt invocation, taken from dbt itself while it runs.

dbt computes the nodes it will run (and the edges between them, with ``build``'s test edges and transitive
edges through unselected nodes) in ``NodeSelector.get_graph_queue``. For the duration of one invocation we
wrap that method: the wrapper lets dbt build its queue, copies the queue's graph (dbt mutates it as nodes
finish) into a plain ``{unique_id: [resource_type, [parents]]}`` payload and hands it to a sink. It runs on
dbt's main thread after parsing and before the first node starts, so the payload is exactly what dbt runs,
at the cost of one pass over the selected graph — no second parse, no second selection.

This module imports nothing outside the standard library at import time, and it is self-contained: the
subprocess producer runs its source verbatim (``python -c``) in the dbt process of another virtualenv, where
dbtbus is not installed, to print the payload as one JSON log line (``"name": "DbtbusGraph"``) before dbt's
own events, and dbt's final per-node results (``"name": "DbtbusResults"``) after them.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from typing import Any

GRAPH_EVENT = "DbtbusGraph"
RESULTS_EVENT = "DbtbusResults"

GraphPayload = dict[str, Any]


def _lookup(manifest: Any, unique_id: str) -> Any:
    for name in ("nodes", "sources", "unit_tests", "exposures", "saved_queries", "functions"):
        table = getattr(manifest, name, None)
        if table is not None and unique_id in table:
            return table[unique_id]
    return None


def _resource_type(node: Any, unique_id: str) -> str:
    rtype = getattr(node, "resource_type", None)
    if rtype is None:
        return unique_id.split(".", 1)[0]
    return str(getattr(rtype, "value", rtype))


def _on_error_continue(node: Any) -> bool:
    config = getattr(node, "config", None)
    if config is None:
        return False
    value = getattr(config, "on_error", None)
    if value is None and hasattr(config, "get"):
        try:
            value = config.get("on_error")
        except Exception:
            value = None
    return str(getattr(value, "value", value)) == "continue"


def payload_from_queue(manifest: Any, queue: Any) -> GraphPayload:
    """Copy a GraphQueue's graph (node → resource type, parents) into a JSON-able payload."""
    graph = queue.graph
    nodes: dict[str, list[Any]] = {}
    continue_on_error: list[str] = []
    for uid in graph.nodes:
        node = _lookup(manifest, uid)
        nodes[uid] = [_resource_type(node, uid), sorted(graph.predecessors(uid))]
        if node is not None and _on_error_continue(node):
            continue_on_error.append(uid)
    return {"nodes": nodes, "continue_on_error": continue_on_error}


def install_graph_hook(sink: Callable[[GraphPayload], None]) -> Callable[[], None]:
    """Wrap ``NodeSelector.get_graph_queue`` so each queue dbt builds is reported to ``sink``.

    Returns the function that restores dbt's method. ``sink`` must not raise (errors are swallowed: the
    graph is a courtesy to consumers, never a reason to fail dbt).
    """
    from dbt.graph.selector import NodeSelector

    original = NodeSelector.__dict__["get_graph_queue"]

    def get_graph_queue(self: Any, *args: Any, **kwargs: Any) -> Any:
        queue = original(self, *args, **kwargs)
        try:
            sink(payload_from_queue(self.manifest, queue))
        except Exception:  # pragma: no cover - defensive
            return queue
        return queue

    NodeSelector.get_graph_queue = get_graph_queue  # type: ignore[method-assign]

    def restore() -> None:
        NodeSelector.get_graph_queue = original  # type: ignore[method-assign]

    return restore


def results_payload(dbt_result: Any) -> list[tuple[str, str, str]]:
    """dbt's final per-node results as ``[(unique_id, status, message), ...]`` (fail-fast reconciliation)."""
    out: list[tuple[str, str, str]] = []
    run_results = getattr(getattr(dbt_result, "result", None), "results", None) or []
    for item in run_results:
        node = getattr(item, "node", None)
        uid = getattr(node, "unique_id", None)
        if uid is None:
            continue
        status = getattr(item, "status", "")
        out.append((uid, str(getattr(status, "value", status)), str(getattr(item, "message", "") or "")))
    return out


def vm_hwm(pid: int | str = "self") -> int | None:
    """Peak RSS in bytes of a live process since its last exec (Linux ``VmHWM``), or None."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _json_line(name: str, data: Any) -> str:
    return json.dumps({"info": {"name": name, "level": "debug", "msg": ""}, "data": data}) + "\n"


def bootstrap_main(argv: list[str]) -> int:  # pragma: no cover - runs in the dbt subprocess
    """Run dbt like its CLI does, printing the selected graph and the final results as JSON log lines."""
    from dbt.cli.main import dbtRunner

    lock = threading.Lock()

    def emit(name: str, data: Any) -> None:
        with lock:
            sys.stdout.write(_json_line(name, data))
            sys.stdout.flush()

    restore = install_graph_hook(lambda payload: emit(GRAPH_EVENT, payload))
    try:
        res = dbtRunner().invoke(argv)
    finally:
        restore()
    payload = {
        "results": results_payload(res),
        "success": bool(res.success),
        "exception": None if res.exception is None else str(res.exception),
        # Measured here, in dbt's own process: the parent's wait4 rusage would count the parent's memory
        # at fork time too.
        "peak_rss": vm_hwm(),
    }
    emit(RESULTS_EVENT, payload)
    if res.success:
        return 0
    return 2 if res.exception is not None else 1


if __name__ == "__main__":  # pragma: no cover - the subprocess entry point
    sys.exit(bootstrap_main(sys.argv[1:]))
