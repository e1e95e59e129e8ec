"""The record factory: a run's ``RunStarted`` and its nodes' results, made by hand with only what a test says.

The one place records are fabricated: :class:`~dbtbus.testing.EventFactory` and :class:`~dbtbus.testing.FakeRun`
publish what these build, and a test that wants records without a bus (a ``RunState`` folded by hand, a codec
case, a report page) calls them directly::

    started = run_started({"seed.s": [], "model.a": ["seed.s"]})          # run "run-1", command build
    failed = node_result("model.a", "error", message="boom")             # resource type from the prefix

Pure and synchronous; nothing here imports pytest.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..events import GraphNode, NodeResult, NodeStatus, ProducerInfo, RunStarted

__all__ = ["graph_of", "node_result", "resource_type_of", "run_started"]

#: The run id the factory (and the pytest fixtures) use when a test names none.
DEFAULT_RUN_ID = "run-1"


def resource_type_of(unique_id: str, graph: Mapping[str, GraphNode] | None = None) -> str:
    """A node's resource type: the graph's, or as its unique id spells it (``model.shop.orders`` → ``model``)."""
    node = graph.get(unique_id) if graph is not None else None
    if node is not None:
        return node.resource_type
    kind = unique_id.split(".", 1)[0]
    return kind if kind else "model"


def graph_of(
    spec: Mapping[str, Sequence[str] | GraphNode], types: Mapping[str, str] | None = None
) -> dict[str, GraphNode]:
    """A run's graph from ``{unique_id: parents}`` (or ready :class:`~dbtbus.GraphNode` values); each node's
    resource type is ``types[unique_id]`` or its unique id's prefix."""
    types = types or {}
    nodes: dict[str, GraphNode] = {}
    for uid, parents in spec.items():
        if isinstance(parents, GraphNode):
            nodes[uid] = parents
        elif isinstance(parents, str):
            raise TypeError(f"the parents of {uid} must be a list of unique ids, not a string")
        else:
            nodes[uid] = GraphNode(types.get(uid, resource_type_of(uid)), tuple(parents))
    return nodes


def fake_producer() -> ProducerInfo:
    """The producer of a fabricated run: this process, kind ``fake``."""
    from .. import __version__

    return ProducerInfo(
        id=f"fake-{uuid.uuid4().hex[:8]}", host="pytest", pid=os.getpid(), dbtbus_version=__version__, kind="fake"
    )


def run_started(
    graph: Mapping[str, Sequence[str] | GraphNode] | None = None,
    *,
    run_id: str = DEFAULT_RUN_ID,
    command: str = "build",
    attempt: int = 1,
    heartbeat_interval: float = 5.0,
    continue_on_error: Iterable[str] = (),
    skip_children_on: Iterable[NodeStatus] | None = None,
    producer: ProducerInfo | None = None,
    **fields: Any,
) -> RunStarted:
    """A run's ``RunStarted``: its graph (``None``: not known yet), dbt's skip rule for ``command`` (unless
    ``skip_children_on`` says otherwise), and any other field of the record given by name (``args``,
    ``dbt_version``, ``started_at``…)."""
    from .._dbt.rules import skip_children_on as rule_of

    return RunStarted(
        run_id=run_id,
        producer=producer if producer is not None else fake_producer(),
        command=command,
        graph=graph_of(graph) if graph is not None else None,
        skip_children_on=frozenset(skip_children_on) if skip_children_on is not None else rule_of(command or "build"),
        continue_on_error=frozenset(continue_on_error),
        heartbeat_interval=heartbeat_interval,
        attempt=attempt,
        **fields,
    )


def node_result(
    unique_id: str,
    status: NodeStatus | str = NodeStatus.SUCCESS,
    *,
    run_id: str = DEFAULT_RUN_ID,
    graph: Mapping[str, GraphNode] | None = None,
    **fields: Any,
) -> NodeResult:
    """A node's result; its resource type is the graph's (when given) or its unique id's prefix, unless
    ``resource_type`` is given. Every other field of the record is given by name."""
    fields.setdefault("resource_type", resource_type_of(unique_id, graph))
    return NodeResult(run_id=run_id, unique_id=unique_id, status=NodeStatus(status), **fields)
