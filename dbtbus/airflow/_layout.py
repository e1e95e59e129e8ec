"""Which DAG holds which node's task: all in the rendering DAG, or spread over small DAGs of their own.

Airflow 3.3 starts a ``start_from_trigger`` task by shipping its whole serialized DAG to the triggerer and
deserializing it there (twice: in the supervisor and in the trigger runner), and it deserializes the whole
DAG again to end a task as failed. With one task per dbt node in one DAG that is O(nodes) work per task:
O(nodes²) per run (docs/airflow.md, "At scale"). Past ``ONE_DAG_UP_TO`` nodes the node tasks therefore live
in small DAGs of their own — at most ``max_tasks`` tasks each — whose runs the producer starts with the same
run id as its own; each costs the triggerer O(max_tasks) per task whatever the project's size.

Nodes are packed by folder (a dbt project's folders are its layers and domains): whole folders in their
order, a folder larger than ``max_tasks`` in chunks. A DAG is named after its first folder, so adding a
model moves no other folder's tasks to another DAG unless the packing must change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = ["DEFAULT_MAX_TASKS_PER_DAG", "ONE_DAG_UP_TO", "Layout", "NodeDag", "check_dag_ids", "node_dags",
           "wants_split"]

#: Measured (docs/airflow.md, "At scale"): the triggerer's CPU per node task grows by ~0.3 ms for every task
#: in its DAG, over a floor of ~20 ms per task; at 50 a task costs ~1.7x the floor, at 300 ~5x.
DEFAULT_MAX_TASKS_PER_DAG: Final = 50
#: ``layout="auto"`` keeps every node task in the rendering DAG up to this many nodes: node DAGs' runs start
#: only once the producer does, which costs a few seconds a run, more than the larger DAG costs up to here
#: (docs/benchmarks.md, "Airflow: one DAG or node DAGs").
ONE_DAG_UP_TO: Final = 100

Layout = Literal["auto", "one_dag", "split"]
_LAYOUTS: Final = ("auto", "one_dag", "split")
_DIRECTORY: Final = {"model": "models", "seed": "seeds", "snapshot": "snapshots"}
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class NodeDag:
    """A small DAG of node tasks: its id, the folders it holds, its nodes (unique ids, in order)."""

    dag_id: str
    folders: tuple[str, ...]
    nodes: tuple[str, ...]


@dataclass
class _Pack:
    name: str
    folders: list[str]
    nodes: list[str]
    full: bool = False


def wants_split(layout: Layout, nodes: int, max_tasks: int) -> bool:
    """Whether the node tasks go into DAGs of their own (``auto``: past ONE_DAG_UP_TO nodes, or ``max_tasks``
    when it is larger)."""
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(_LAYOUTS)}, got {layout!r}")
    if max_tasks < 1:
        raise ValueError(f"max_tasks_per_dag must be at least 1, got {max_tasks}")
    return layout == "split" or (layout == "auto" and nodes > max(ONE_DAG_UP_TO, max_tasks))


def _folder(node: Mapping[str, Any], root_package: str | None) -> str:
    """``models/staging/stripe`` as ``models_staging_stripe`` (a package's name first when not the project's)."""
    fqn = [str(part) for part in node.get("fqn") or ()]
    package = fqn[0] if fqn else str(node.get("package_name") or "")
    parts = [] if package == root_package or not package else [package]
    parts.append(_DIRECTORY.get(str(node.get("resource_type")), str(node.get("resource_type") or "nodes")))
    parts.extend(fqn[1:-1])
    return _UNSAFE.sub("_", "_".join(parts)).strip("_") or "nodes"


def node_dags(
    chosen: Mapping[str, Mapping[str, Any]],
    *,
    dag_id: str,
    group_id: str | None,
    max_tasks: int,
    root_package: str | None = None,
) -> list[NodeDag]:
    """Pack the chosen nodes into DAGs of at most ``max_tasks`` tasks, folder by folder (see the module doc)."""
    folders: dict[str, list[str]] = {}
    for uid in sorted(chosen):
        folders.setdefault(_folder(chosen[uid], root_package), []).append(uid)
    packed: list[_Pack] = []
    for folder in sorted(folders):
        uids = folders[folder]
        if len(uids) > max_tasks:  # a folder of its own, in chunks that take no other folder
            for index, start in enumerate(range(0, len(uids), max_tasks), 1):
                packed.append(_Pack(f"{folder}_{index:02d}", [folder], uids[start:start + max_tasks], full=True))
            continue
        last = packed[-1] if packed else None
        if last is not None and not last.full and len(last.nodes) + len(uids) <= max_tasks:
            last.folders.append(folder)
            last.nodes.extend(uids)
        else:
            packed.append(_Pack(folder, [folder], list(uids)))
    prefix = f"{dag_id}.{group_id}" if group_id else dag_id
    return [NodeDag(f"{prefix}.{pack.name}", tuple(pack.folders), tuple(pack.nodes)) for pack in packed]


def check_dag_ids(dags: Sequence[NodeDag]) -> None:
    """Airflow caps a DAG id at 250 characters of ``[A-Za-z0-9_.-]``."""
    for dag in dags:
        if len(dag.dag_id) > 250:
            raise ValueError(f"the node DAG id {dag.dag_id[:80]}… is longer than Airflow's 250 characters: "
                             "give render_dbt_task_group a shorter group_id")
