"""Render a dbt manifest into an Airflow task group: one producer, one sensor per selected node."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow.sdk import TaskGroup

from .operators import DbtBusProducerOperator
from .sensors import DbtNodeSensor

__all__ = ["render_dbt_task_group", "select_nodes"]

RESOURCE_TYPES = ("model", "seed", "snapshot")
_TASK_ID = re.compile(r"[^A-Za-z0-9_.-]+")


def _load(manifest: str | os.PathLike[str] | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(manifest, Mapping):
        return manifest
    with open(manifest, encoding="utf-8") as fh:
        loaded: Mapping[str, Any] = json.load(fh)
    return loaded


def _wanted(node: Mapping[str, Any], select: set[str] | None) -> bool:
    if select is None:
        return True
    uid = node["unique_id"]
    return uid in select or node.get("name") in select or any(f"tag:{t}" in select for t in node.get("tags", ()))


def select_nodes(
    manifest: str | os.PathLike[str] | Mapping[str, Any],
    *,
    select: Iterable[str] | None = None,
    resource_types: Sequence[str] = RESOURCE_TYPES,
    include_ephemeral: bool = False,
) -> tuple[dict[str, list[str]], dict[str, Mapping[str, Any]]]:
    """The selected nodes and, for each, its nearest selected ancestors (through unselected/ephemeral ones).

    ``select`` holds unique ids, node names or ``tag:<tag>``; ``None`` selects every node of
    ``resource_types``. Ephemeral models have no result of their own and get no sensor unless asked.
    """
    data = _load(manifest)
    nodes: Mapping[str, Mapping[str, Any]] = data.get("nodes", {})
    wanted = set(select) if select is not None else None
    chosen = {
        uid: node
        for uid, node in nodes.items()
        if node.get("resource_type") in resource_types
        and _wanted(node, wanted)
        and (include_ephemeral or node.get("config", {}).get("materialized") != "ephemeral")
    }
    memo: dict[str, set[str]] = {}

    def upstream(uid: str, stack: frozenset[str]) -> set[str]:
        if uid in memo:
            return memo[uid]
        found: set[str] = set()
        for parent in nodes.get(uid, {}).get("depends_on", {}).get("nodes", []):
            if parent in stack:
                continue
            if parent in chosen:
                found.add(parent)
            elif parent in nodes:
                found |= upstream(parent, stack | {parent})
        memo[uid] = found
        return found

    parents = {uid: sorted(upstream(uid, frozenset({uid}))) for uid in chosen}
    return parents, chosen


def _task_id(node: Mapping[str, Any], taken: set[str]) -> str:
    name = _TASK_ID.sub("_", str(node.get("name") or node["unique_id"]))
    rtype = node.get("resource_type")
    base = name if rtype == "model" else f"{name}_{rtype}"
    task_id = base
    if task_id in taken:
        task_id = _TASK_ID.sub("_", node["unique_id"])
    taken.add(task_id)
    return task_id


def render_dbt_task_group(
    manifest_path: str | os.PathLike[str] | Mapping[str, Any],
    bus_url: str,
    dbt_args: Sequence[str],
    *,
    group_id: str = "dbt",
    select: Iterable[str] | None = None,
    resource_types: Sequence[str] = RESOURCE_TYPES,
    producer_kwargs: Mapping[str, Any] | None = None,
    sensor_kwargs: Mapping[str, Any] | None = None,
    sensors_after_producer: bool = False,
    **task_group_kwargs: Any,
) -> TaskGroup:
    """Build a :class:`TaskGroup`: one :class:`DbtBusProducerOperator` running ``dbt_args`` and one
    :class:`DbtNodeSensor` per selected model, seed and snapshot, wired like dbt's graph.

    Tests are not tasks: each sensor waits with ``include_tests=True``, so a model's task fails when one of
    its tests fails (dbt's test edges in ``build`` then also doom the model's children). Sensors do not
    depend on the producer: they start at once (in the triggerer) and wait; a downstream sensor starts when
    its upstream sensors succeeded and usually finds its node already done in one lookup.

    ``sensors_after_producer=True`` makes the root sensors wait for the producer task to finish
    (``trigger_rule="all_done"``) — only for executors that run one task at a time, such as ``dag.test()``,
    where a sensor scheduled before the producer would block the only slot.

    With ``bus_url="xcom://"`` the group also gets a ``dbtbus_carrier`` ``EmptyOperator`` upstream of the
    producer whose task instance carries the run's XComs (Airflow clears a task's XComs when it starts a
    new try, so the producer's own task instance could not keep them across a producer retry).
    """
    parents, chosen = select_nodes(manifest_path, select=select, resource_types=resource_types)
    producer_kwargs = dict(producer_kwargs or {})
    sensor_kwargs = dict(sensor_kwargs or {})
    with TaskGroup(group_id=group_id, **task_group_kwargs) as group:
        run_group = group.group_id
        prefix = f"{run_group}." if run_group else ""
        carrier_task_id: str | None = None
        carrier = None
        from ..backends.xcom import is_bare_xcom_url

        if is_bare_xcom_url(bus_url):
            from airflow.providers.standard.operators.empty import EmptyOperator

            carrier = EmptyOperator(task_id="dbtbus_carrier")
            carrier_task_id = f"{prefix}dbtbus_carrier"
        producer = DbtBusProducerOperator(
            task_id="dbt_producer",
            bus_url=bus_url,
            dbt_args=list(dbt_args),
            run_group=run_group,
            carrier_task_id=carrier_task_id,
            priority_weight=producer_kwargs.pop("priority_weight", 100),
            **producer_kwargs,
        )
        if carrier is not None:
            carrier >> producer
        taken = {"dbt_producer", "dbtbus_carrier"}
        sensors: dict[str, DbtNodeSensor] = {}
        for uid in sorted(chosen, key=lambda u: (len(parents[u]), u)):
            extra = dict(sensor_kwargs)
            if sensors_after_producer and not parents[uid]:
                extra["trigger_rule"] = "all_done"
            sensors[uid] = DbtNodeSensor(
                task_id=_task_id(chosen[uid], taken),
                bus_url=bus_url,
                unique_id=uid,
                include_tests=True,
                run_group=run_group,
                carrier_task_id=carrier_task_id,
                **extra,
            )
        for uid, sensor in sensors.items():
            ups = [sensors[p] for p in parents[uid]]
            if ups:
                ups >> sensor
            elif sensors_after_producer:
                producer >> sensor
    return group
