"""The rules of dbt's node graph, once: what a test is, children, descendants, manifest → graph.

Pure functions over ``{unique_id: GraphNode}`` mappings, with no I/O beyond reading a manifest file when
given a path. Every walk is iterative: a 10,000-deep chain of models must not overflow the stack.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ..events import GraphNode
from .test_edges import TEST_RESOURCE_TYPES, drop_implied_test_edges, parents_first

__all__ = [
    "TEST_RESOURCE_TYPES",
    "add_test_edges",
    "children_index",
    "descendants",
    "extras_of_manifest",
    "graph_from_manifest",
    "graph_from_payload",
    "is_hook",
    "is_test",
    "topological_order",
]

#: Manifest sections whose entries are nodes dbt can select and run.
_RUNNABLE_SECTIONS: Final = ("nodes", "unit_tests", "functions")
_EXECUTABLE: Final = frozenset({"model", "seed", "snapshot", "test", "unit_test", "function"})
_HOOK_TAGS: Final = frozenset({"on-run-start", "on-run-end"})


def is_test(node: GraphNode | str | None, unique_id: str = "") -> bool:
    """True for a test or unit test: a ``GraphNode``, a resource type, or (no node) a ``test.`` unique id."""
    if isinstance(node, GraphNode):
        return node.resource_type in TEST_RESOURCE_TYPES
    if isinstance(node, str):
        return node in TEST_RESOURCE_TYPES
    return unique_id.startswith(("test.", "unit_test."))


def is_hook(node: GraphNode | None, unique_id: str = "") -> bool:
    """True for a project hook (``on-run-start`` / ``on-run-end``): dbt runs them around every ``run``,
    ``build``, ``seed``, ``snapshot``, ``test`` and ``source freshness`` whatever the selection, so they can
    be neither selected nor excluded."""
    if node is not None:
        return node.resource_type == "operation"
    return unique_id.startswith("operation.")


def children_index(graph: Mapping[str, GraphNode]) -> dict[str, list[str]]:
    """parent → its children in ``graph`` (in the graph's order)."""
    children: dict[str, list[str]] = {}
    for uid, node in graph.items():
        for parent in node.parents:
            children.setdefault(parent, []).append(uid)
    return children


def descendants(children: Mapping[str, Iterable[str]], unique_id: str) -> list[str]:
    """Every node reachable from ``unique_id`` through ``children`` (an index), breadth first, each once."""
    seen: set[str] = {unique_id}
    order: list[str] = []
    queue = deque(children.get(unique_id, ()))
    while queue:
        child = queue.popleft()
        if child in seen:
            continue
        seen.add(child)
        order.append(child)
        queue.extend(children.get(child, ()))
    return order


def topological_order(graph: Mapping[str, GraphNode]) -> list[str]:
    """The graph's nodes, parents before children (Kahn's algorithm; parents outside the graph are ignored).

    Nodes on a cycle (which dbt forbids) come last, in graph order, rather than being dropped.
    """
    return parents_first({uid: node.parents for uid, node in graph.items()})


def add_test_edges(graph: Mapping[str, GraphNode]) -> dict[str, GraphNode]:
    """``graph`` with the extra edges ``dbt build`` adds from tests to the nodes downstream of what they test.

    dbt's rule (``Linker.add_test_edges``): a test becomes a parent of every non-test node whose ancestors
    include all the nodes the test depends on — so a failing test skips the tested model's descendants. Used
    when the graph comes from a ``manifest.json`` (a log replay, a rendered DAG) rather than from dbt's own
    graph queue. The gated nodes are the intersection of the test's parents' descendants; of the edges to
    them, those another path implies are dropped (:func:`~dbtbus._test_edges.drop_implied_test_edges`, as
    for dbt's own graph), so every node has the ancestors dbt gives it in a graph of O(nodes) edges.
    """
    tests = [uid for uid, node in graph.items() if node.resource_type in TEST_RESOURCE_TYPES]
    if not tests:
        return dict(graph)
    children = children_index(graph)
    below: dict[str, frozenset[str]] = {}
    extra: dict[str, set[str]] = {}
    for test in tests:
        parents = [p for p in graph[test].parents if p in graph]
        if not parents:
            continue
        gated: frozenset[str] | None = None
        for parent in parents:
            if parent not in below:
                below[parent] = frozenset(descendants(children, parent))
            gated = below[parent] if gated is None else gated & below[parent]
        for uid in gated or ():
            node = graph[uid]
            if node.resource_type not in TEST_RESOURCE_TYPES and test not in node.parents:
                extra.setdefault(uid, set()).add(test)
    with_tests = {uid: [*node.parents, *sorted(extra.get(uid, ()))] for uid, node in graph.items()}
    kept = drop_implied_test_edges(with_tests, lambda uid: is_test(graph.get(uid), uid))
    return {
        uid: GraphNode(node.resource_type, tuple(kept[uid])) if uid in extra else node
        for uid, node in graph.items()
    }


def graph_from_manifest(
    manifest: Mapping[str, Any] | str | os.PathLike[str], *, test_edges: bool = False
) -> dict[str, GraphNode]:
    """The project's whole graph from a dbt ``manifest.json`` (a parsed mapping or a path).

    Every executable node (models, seeds, snapshots, tests, unit tests, functions; not analyses), with
    ``depends_on`` edges restricted to nodes of the graph (sources and exposures are not nodes dbt runs).
    With ``test_edges`` the edges ``dbt build`` adds are included (:func:`add_test_edges`).
    """
    if not isinstance(manifest, Mapping):
        import orjson

        with open(manifest, "rb") as fh:
            manifest = orjson.loads(fh.read())
        if not isinstance(manifest, Mapping):
            raise ValueError("a manifest.json holds a JSON object")
    graph: dict[str, GraphNode] = {}
    for section in _RUNNABLE_SECTIONS:
        entries = manifest.get(section) or {}
        if not isinstance(entries, Mapping):
            continue
        for uid, node in entries.items():
            if not isinstance(node, Mapping):
                continue
            resource_type = str(node.get("resource_type") or uid.split(".", 1)[0])
            if resource_type not in _EXECUTABLE:
                continue
            depends = node.get("depends_on") or {}
            parents = depends.get("nodes") if isinstance(depends, Mapping) else None
            graph[uid] = GraphNode(resource_type, tuple(p for p in (parents or ()) if isinstance(p, str)))
    for uid, node in list(graph.items()):
        graph[uid] = GraphNode(node.resource_type, tuple(sorted(p for p in node.parents if p in graph)))
    return add_test_edges(graph) if test_edges else graph


def extras_of_manifest(manifest: Mapping[str, Any], graph: Mapping[str, GraphNode]) -> dict[str, GraphNode]:
    """What a ``build`` reports besides ``graph`` (a manifest's runnable nodes): its project hooks and saved queries.

    Project hooks (``operation`` nodes tagged ``on-run-start`` / ``on-run-end``, :func:`is_hook`) run around
    every ``run``, ``build``… and have no parents. A saved query's parents are the nodes of ``graph`` it
    reaches through the metrics and semantic models it depends on, as dbt's queue links it.
    """
    extras: dict[str, GraphNode] = {}
    for uid, node in (manifest.get("nodes") or {}).items():
        tags = set(node.get("tags") or ()) if isinstance(node, Mapping) else set()
        if isinstance(node, Mapping) and node.get("resource_type") == "operation" and tags & _HOOK_TAGS:
            extras[uid] = GraphNode("operation", ())
    between: dict[str, Any] = {}
    for section in ("metrics", "semantic_models"):
        entries = manifest.get(section) or {}
        if isinstance(entries, Mapping):
            between.update(entries)
    for uid, node in (manifest.get("saved_queries") or {}).items():
        if not isinstance(node, Mapping):
            continue
        parents: set[str] = set()
        seen: set[str] = set()
        queue = list(_depends_on(node))
        while queue:
            parent = queue.pop()
            if parent in seen:
                continue
            seen.add(parent)
            if parent in graph:
                parents.add(parent)
            elif isinstance(between.get(parent), Mapping):
                queue.extend(_depends_on(between[parent]))
        extras[uid] = GraphNode("saved_query", tuple(sorted(parents)))
    return extras


def _depends_on(node: Mapping[str, Any]) -> list[str]:
    depends = node.get("depends_on") or {}
    parents = depends.get("nodes") if isinstance(depends, Mapping) else None
    return [p for p in parents or () if isinstance(p, str)]


def graph_from_payload(payload: Mapping[str, Any]) -> tuple[dict[str, GraphNode], frozenset[str]]:
    """The graph and the ``on_error: continue`` nodes from the producer hook's payload (:mod:`.hook`)."""
    nodes = payload.get("nodes") or {}
    graph = {uid: GraphNode(str(spec[0]), tuple(spec[1])) for uid, spec in nodes.items()}
    return graph, frozenset(payload.get("continue_on_error") or ())
