"""What a render needs of a dbt manifest — the selected nodes, their nearest selected parents — kept on disk.

Airflow's dag-processor parses a DAG file again for every batch of task callbacks, and Airflow 3.3 sends one
for every task a trigger ends: while a run's node tasks end, the file that renders the group is parsed about
once a second. Reading a manifest of several MiB and walking its graph is most of that parse; the plan it
yields is a few hundred bytes a node. It is cached under ``DBTBUS_CACHE_DIR`` (default: the user's cache
directory, ``~/.cache/dbtbus``), keyed by the manifest's path, inode, size and modification time and by
what was selected, so a rewritten manifest is read again; a cache that cannot be written is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from .._dbt.graph import graph_from_manifest, topological_order
from .._version import __version__

__all__ = ["Plan", "load_manifest", "plan_for", "select_nodes", "wanted"]

#: What a node task is made from (the rest of a manifest node is not needed to render).
_KEPT: Final = ("unique_id", "name", "resource_type", "fqn", "package_name", "tags")


@dataclass(frozen=True)
class Plan:
    """The nodes a render makes tasks for and, for each, its nearest selected ancestors."""

    parents: dict[str, list[str]]
    nodes: dict[str, dict[str, Any]]
    project: str | None
    #: Nodes whose ``root_path`` is relative (the manifest was parsed with a relative ``--project-dir``),
    #: with the first one's root path.
    relative: list[str]
    relative_root: str | None
    #: unique id → the OpenLineage (namespace, name) of its relation, for the nodes ``plan_for`` was asked to
    #: name (``datasets``, ``name_only``).
    datasets: dict[str, tuple[str, str]] = field(default_factory=dict)


def load_manifest(manifest: str | os.PathLike[str] | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(manifest, Mapping):
        return manifest
    with open(manifest, "rb") as fh:
        loaded: Mapping[str, Any] = orjson.loads(fh.read())
    return loaded


def wanted(node: Mapping[str, Any], select: set[str] | None) -> bool:
    """True when ``select`` (unique ids, names, ``tag:<tag>``; None: all) picks ``node``."""
    if select is None:
        return True
    uid = node["unique_id"]
    return uid in select or node.get("name") in select or any(f"tag:{t}" in select for t in node.get("tags", ()))


def select_nodes(
    manifest: str | os.PathLike[str] | Mapping[str, Any],
    *,
    select: Iterable[str] | None = None,
    resource_types: Sequence[str] = ("model", "seed", "snapshot"),
    include_ephemeral: bool = False,
) -> tuple[dict[str, list[str]], dict[str, Mapping[str, Any]]]:
    """The selected nodes and, for each, its nearest selected ancestors (through unselected/ephemeral ones).

    ``select`` holds unique ids, node names or ``tag:<tag>``; ``None`` selects every node of
    ``resource_types``. Ephemeral models have no result of their own and get no task unless asked.
    """
    data = load_manifest(manifest)
    nodes: Mapping[str, Mapping[str, Any]] = data.get("nodes", {})
    chosen_by = set(select) if select is not None else None
    chosen = {
        uid: node
        for uid, node in nodes.items()
        if node.get("resource_type") in resource_types
        and wanted(node, chosen_by)
        and (include_ephemeral or node.get("config", {}).get("materialized") != "ephemeral")
    }
    # In topological order every parent's answer is known before its children ask: no recursion.
    graph = graph_from_manifest(data)
    nearest: dict[str, frozenset[str]] = {}
    for uid in topological_order(graph):
        found: set[str] = set()
        for parent in graph[uid].parents:
            if parent in chosen:
                found.add(parent)
            else:
                found |= nearest.get(parent, frozenset())
        found.discard(uid)
        nearest[uid] = frozenset(found)
    parents = {uid: sorted(nearest.get(uid, frozenset())) for uid in chosen}
    return parents, chosen


def _make(manifest: Mapping[str, Any], select: Iterable[str] | None, resource_types: Sequence[str],
          datasets: Sequence[str] | None, name_only: Iterable[str] | None) -> Plan:
    parents, chosen = select_nodes(manifest, select=select, resource_types=resource_types)
    names: dict[str, tuple[str, str]] = {}
    if datasets is not None:
        from ._assets import dataset_names

        named_by = set(name_only) if name_only is not None else None
        names = dataset_names(manifest, [uid for uid, node in chosen.items() if wanted(node, named_by)], datasets)
    nodes = {uid: {key: node[key] for key in _KEPT if key in node} for uid, node in chosen.items()}
    all_nodes: Mapping[str, Mapping[str, Any]] = manifest.get("nodes", {})
    relative = sorted(uid for uid, node in all_nodes.items()
                      if isinstance(node.get("root_path"), str) and not os.path.isabs(node["root_path"]))
    project = (manifest.get("metadata") or {}).get("project_name")
    return Plan(parents, nodes, project if isinstance(project, str) else None, relative,
                all_nodes[relative[0]]["root_path"] if relative else None, names)


def _cache_dir() -> Path:
    configured = os.environ.get("DBTBUS_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dbtbus"


def _cache_key(path: Path, select: Iterable[str] | None, resource_types: Sequence[str],
               datasets: Sequence[str] | None, name_only: Iterable[str] | None) -> str | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    from ._assets import naming_key

    what = [str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, __version__,
            None if select is None else sorted(select), list(resource_types),
            None if datasets is None else naming_key(datasets), None if name_only is None else sorted(name_only)]
    return hashlib.sha256(orjson.dumps(what)).hexdigest()[:32]


def plan_for(manifest: str | os.PathLike[str] | Mapping[str, Any], *, select: Iterable[str] | None = None,
             resource_types: Sequence[str] = ("model", "seed", "snapshot"),
             datasets: Sequence[str] | None = None, name_only: Iterable[str] | None = None) -> Plan:
    """The render plan of ``manifest`` (a parsed mapping, or a path whose plan is cached: see the module).

    ``datasets`` (the dbt arguments, which name the profile) also names the relation of each selected node
    that ``name_only`` picks (same syntax as ``select``; None: all) as OpenLineage does
    (:func:`dbtbus.airflow._assets.dataset_names`) — once, cached with the plan: naming reads the profile and
    asks openlineage-integration-common node by node, about a millisecond each.
    """
    if isinstance(manifest, Mapping):
        return _make(manifest, select, resource_types, datasets, name_only)
    path = Path(manifest)
    key = _cache_key(path, select, resource_types, datasets, name_only)
    cached = _cache_dir() / f"render-{key}.json" if key is not None else None
    if cached is not None:
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            data = orjson.loads(cached.read_bytes())
            return Plan(data["parents"], data["nodes"], data["project"], data["relative"], data["relative_root"],
                        {uid: (ns, name) for uid, (ns, name) in data.get("datasets", {}).items()})
    plan = _make(load_manifest(path), select, resource_types, datasets, name_only)
    if cached is not None:
        _write(cached, {"parents": plan.parents, "nodes": plan.nodes, "project": plan.project,
                        "relative": plan.relative, "relative_root": plan.relative_root,
                        "datasets": plan.datasets})
    return plan


def _write(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``path`` atomically; any failure only means no cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".render-", dir=path.parent)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(orjson.dumps(data))
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
