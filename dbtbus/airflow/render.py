"""Render a dbt manifest into an Airflow task group: one producer, one task per selected node.

The node tasks live in the rendering DAG (``layout="one_dag"``) or, past ``max_tasks_per_dag`` nodes, in
small DAGs of their own whose runs the producer starts (``"split"``; ``"auto"`` picks): see ``_layout.py``
for why and docs/airflow.md ("At scale") for the measurements.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow.sdk import DAG, TaskGroup

from ._layout import DEFAULT_MAX_TASKS_PER_DAG, Layout, NodeDag, check_dag_ids, node_dags, wants_split
from ._plan import Plan, plan_for, select_nodes, wanted
from .operators import DbtBusCarrierOperator, DbtBusProducerOperator
from .sensors import DbtNodeDagSensor, DbtNodeSensor

__all__ = ["render_dbt_task_group", "select_nodes"]

RESOURCE_TYPES = ("model", "seed", "snapshot")
_TASK_ID = re.compile(r"[^A-Za-z0-9_.-]+")


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
    bus_url: str | None,
    dbt_args: Sequence[str],
    *,
    group_id: str = "dbt",
    select: Iterable[str] | None = None,
    resource_types: Sequence[str] = RESOURCE_TYPES,
    producer_kwargs: Mapping[str, Any] | None = None,
    sensor_kwargs: Mapping[str, Any] | None = None,
    sensors_after_producer: bool = False,
    bus_conn_id: str | None = None,
    layout: Layout = "auto",
    max_tasks_per_dag: int = DEFAULT_MAX_TASKS_PER_DAG,
    emit_assets: bool | Iterable[str] = False,
    openlineage: bool | None = None,
    **task_group_kwargs: Any,
) -> TaskGroup:
    """Build a :class:`TaskGroup`: one :class:`DbtBusProducerOperator` running ``dbt_args`` and one
    :class:`DbtNodeSensor` per selected model, seed and snapshot, wired like dbt's graph.

    Tests are not tasks: each sensor waits with ``include_tests=True``, so a model's task fails when one of
    its tests fails (dbt's test edges in ``build`` then also doom the model's children).

    **Push-bound, not chain-bound.** The edges between sensors show dbt's graph, but every sensor has
    ``trigger_rule="always"``: the scheduler hands all of them to the triggerer the moment the DAG run
    starts, and each ends the instant the bus decides its node — a failure's descendants end (failed, their
    logs naming the root cause) seconds after dbt publishes it, not one scheduling round per level.
    ``sensors_after_producer=True`` keeps Airflow's default rule and makes the root sensors wait for the
    producer task (``all_done``) — only for executors that run one task at a time, such as ``dag.test()``.

    **At scale.** Airflow 3.3 pays for every node task in proportion to the size of its DAG (it ships and deserializes
    the whole DAG per task it starts in the triggerer), so with ``layout="auto"`` (default) a project of more than 100
    selected nodes (or ``max_tasks_per_dag``, when larger) gets its node tasks spread over small DAGs of their own,
    ``<dag_id>.<group_id>.<folder>``, packed by dbt folder, at most ``max_tasks_per_dag`` tasks each. Their runs are
    started by the producer with this DAG run's run id (same run id, so their tasks find the run on the bus), and this
    group keeps one :class:`DbtNodeDagSensor` per node DAG that ends when that DAG's nodes are decided: ``group >>
    downstream`` waits for every node, as with one DAG. ``layout`` forces one way (``"one_dag"``, ``"split"``). Node
    DAGs inherit this DAG's ``default_args``, ``tags`` (plus ``dbtbus``), ``max_active_runs`` and ``dagrun_timeout``,
    and are created unpaused. A smaller ``max_tasks_per_dag`` trades the dag-processor's CPU for the triggerer's
    memory (each trigger's workload carries its whole DAG): docs/airflow.md ("The size of node DAGs") has both.

    Sensors retry as often as the producer does unless ``sensor_kwargs`` says otherwise (or, when the producer
    is given no ``retries`` either, as the DAG's ``default_args`` say): a sensor that failed in the producer's
    attempt N waits on its retry for attempt N+1. A sensor given an ``on_success_callback`` (by
    ``sensor_kwargs`` or the DAG's ``default_args``) ends its success with one short worker run, the only place
    Airflow 3.3 runs that callback; failure and retry callbacks cost nothing extra.

    With ``bus_url="xcom://"`` the group also gets a ``dbtbus_carrier`` task upstream of the producer whose
    task instance carries the run's XComs (Airflow clears a task's XComs when it starts a new try, so the
    producer's own task instance could not keep them across a producer retry). ``bus_conn_id`` names an
    Airflow connection holding the bus address instead of ``bus_url`` (no password in the DAG file).

    **Airflow Assets.** ``emit_assets=True`` gives every node task its relation as an outlet (the asset named
    as OpenLineage names the relation, see :mod:`dbtbus.airflow._assets`), and the task emits an asset event
    with the node's metadata the moment its node succeeds; a selection (unique ids, names, ``tag:<tag>``)
    gives outlets to those nodes only. Off by default: Airflow 3.3 registers outlets only from a worker's
    success report, so each emitting task ends its success with one short worker run instead of in the
    triggerer — pay it for the relations other DAGs are scheduled on (docs/airflow.md, "Airflow Assets"). A
    selector that picks none of the selected nodes raises :class:`ValueError` (a typo would emit nothing).

    **OpenLineage.** The producer task emits every node's OpenLineage events as dbt runs, each node's run
    nested under its node task's OpenLineage run (both layouts): ``openlineage=None`` (default) when Airflow's
    OpenLineage provider is installed and configured, ``True`` always, ``False`` never (see
    :class:`DbtBusProducerOperator`; docs/lineage.md, "In Airflow").

    Parse the manifest with an absolute ``--project-dir``: a relative one is stored as the nodes'
    ``root_path`` and makes a build started from a worker's directory fail. A warning says so, with the whole
    fix, where the DAG is parsed and again in the producer task's log, where the failure shows.
    """
    emit = _emit_selection(emit_assets)
    plan = plan_for(manifest_path, select=select, resource_types=resource_types,
                    datasets=list(dbt_args) if emit is not False else None,
                    name_only=emit if isinstance(emit, list) else None)
    manifest_warnings: list[str] = []
    if plan.relative:
        manifest_warnings.append(_relative_root_message(manifest_path, plan.relative[0], plan.relative_root))
        warnings.warn(manifest_warnings[-1], UserWarning, stacklevel=2)
    if bus_url is None and bus_conn_id is None:
        raise ValueError("render_dbt_task_group needs bus_url or bus_conn_id")
    parents, chosen = plan.parents, plan.nodes
    split = wants_split(layout, len(chosen), max_tasks_per_dag)
    if split and sensors_after_producer:
        raise ValueError("sensors_after_producer=True runs every task in one DAG: use layout='one_dag' with it")
    producer_kwargs = dict(producer_kwargs or {})
    sensor_kwargs = dict(sensor_kwargs or {})
    if "retries" in producer_kwargs:
        sensor_kwargs.setdefault("retries", producer_kwargs["retries"])
    if sensor_kwargs.get("retry_delay") is None and "retry_delay" in producer_kwargs:
        sensor_kwargs["retry_delay"] = producer_kwargs["retry_delay"]
    bus: dict[str, Any] = {"bus_url": bus_url, "bus_conn_id": bus_conn_id}
    outlets = _outlets(plan, emit)
    with TaskGroup(group_id=group_id, **task_group_kwargs) as group:
        run_group = group.group_id
        prefix = f"{run_group}." if run_group else ""
        carrier_task_id: str | None = None
        carrier = None
        from ..backends.xcom import is_bare_xcom_url

        if bus_url is not None and is_bare_xcom_url(bus_url):
            carrier = DbtBusCarrierOperator(task_id="dbtbus_carrier", run_group=run_group,
                                            priority_weight=producer_kwargs.get("priority_weight", 100))
            carrier_task_id = f"{prefix}dbtbus_carrier"
        dags: list[NodeDag] = []
        if split:
            dags = node_dags(chosen, dag_id=group.dag.dag_id, group_id=run_group, max_tasks=max_tasks_per_dag,
                             root_package=plan.project)
            check_dag_ids(dags)
        producer = DbtBusProducerOperator(
            task_id="dbt_producer",
            dbt_args=list(dbt_args),
            run_group=run_group,
            carrier_task_id=carrier_task_id,
            priority_weight=producer_kwargs.pop("priority_weight", 100),
            node_dag_ids=[dag.dag_id for dag in dags],
            manifest_warnings=manifest_warnings,
            openlineage=producer_kwargs.pop("openlineage", openlineage),  # the operator's own option wins
            **bus,
            **producer_kwargs,
        )
        if carrier is not None:
            carrier >> producer
        common = {"run_group": run_group, "carrier_task_id": carrier_task_id, **bus}
        if split:
            for node_dag in dags:
                DbtNodeDagSensor(task_id=f"nodes_{node_dag.dag_id.rsplit('.', 1)[1]}", node_dag_id=node_dag.dag_id,
                                 unique_ids=list(node_dag.nodes), producer_task_id=producer.task_id,
                                 trigger_rule="always", **common)
        else:
            tasks = _node_tasks(chosen, parents, sensor_kwargs, common, producer, sensors_after_producer, outlets)
            producer.openlineage_tasks = {uid: (group.dag.dag_id, task_id) for uid, task_id in tasks.items()}
    if split:
        producer.openlineage_tasks = _node_dags(group.dag, dags, chosen, parents, sensor_kwargs, common,
                                                producer.task_id, outlets)
    return group


def _emit_selection(emit_assets: bool | Iterable[str]) -> bool | list[str]:
    """``emit_assets`` as False (off), True (every node task) or the list of its selectors."""
    if isinstance(emit_assets, bool):
        return emit_assets
    if isinstance(emit_assets, str):
        raise TypeError("emit_assets takes True, False or a list of selectors (a str is not a list)")
    return sorted(emit_assets)


def _outlets(plan: Plan, emit: bool | list[str]) -> dict[str, list[Any]]:
    """unique id → the outlets of its task: the nodes ``emit`` picks, which the plan has named."""
    if emit is False:
        return {}
    if isinstance(emit, list):
        unmatched = [s for s in emit if not any(wanted(node, {s}) for node in plan.nodes.values())]
        if unmatched:
            raise ValueError(f"emit_assets: {', '.join(unmatched)} picks none of the rendered nodes")
    from ._assets import node_asset

    return {uid: [node_asset(namespace, name)] for uid, (namespace, name) in plan.datasets.items()}


def _node_tasks(chosen: Mapping[str, Mapping[str, Any]], parents: Mapping[str, list[str]],
                sensor_kwargs: Mapping[str, Any], common: Mapping[str, Any], producer: DbtBusProducerOperator,
                sensors_after_producer: bool, outlets: Mapping[str, list[Any]]) -> dict[str, str]:
    """One sensor per node in the rendering DAG, wired like dbt's graph; returns each node's task id."""
    taken = {"dbt_producer", "dbtbus_carrier"}
    sensors: dict[str, DbtNodeSensor] = {}
    for uid in sorted(chosen, key=lambda u: (len(parents[u]), u)):
        extra = dict(sensor_kwargs)
        if sensors_after_producer:
            if not parents[uid]:
                extra["trigger_rule"] = "all_done"
        else:
            extra.setdefault("trigger_rule", "always")
        extra.setdefault("producer_task_id", producer.task_id)
        if uid in outlets:
            extra["outlets"] = outlets[uid]
        sensors[uid] = DbtNodeSensor(task_id=_task_id(chosen[uid], taken), unique_id=uid, include_tests=True,
                                     **common, **extra)
    for uid, sensor in sensors.items():
        ups = [sensors[p] for p in parents[uid]]
        if ups:
            ups >> sensor
            sensor.set_upstream_sensors([u.task_id for u in ups])
        elif sensors_after_producer:
            producer >> sensor
    return {uid: sensor.task_id for uid, sensor in sensors.items()}


def _node_dags(parent: Any, dags: Sequence[NodeDag], chosen: Mapping[str, Mapping[str, Any]],
               parents: Mapping[str, list[str]], sensor_kwargs: Mapping[str, Any], common: Mapping[str, Any],
               producer_task_id: str, outlets: Mapping[str, list[Any]]) -> dict[str, tuple[str, str]]:
    """The node DAGs of the split layout, each registered with the DAG file like any DAG made in a ``with``;
    returns each node's (DAG id, task id)."""
    where: dict[str, tuple[str, str]] = {}  # unique id → (node DAG id, task id)
    for node_dag in dags:
        taken: set[str] = set()
        for uid in node_dag.nodes:
            where[uid] = (node_dag.dag_id, _task_id(chosen[uid], taken))
    tags = sorted({*(getattr(parent, "tags", None) or ()), "dbtbus"})
    for node_dag in dags:
        with DAG(
            dag_id=node_dag.dag_id,
            schedule=None,
            catchup=False,
            is_paused_upon_creation=False,
            default_args=dict(getattr(parent, "default_args", None) or {}),
            max_active_runs=getattr(parent, "max_active_runs", 16),
            dagrun_timeout=getattr(parent, "dagrun_timeout", None),
            tags=tags,
            description=(f"dbt nodes of {parent.dag_id} ({', '.join(node_dag.folders)}): runs started by its "
                         f"task {producer_task_id}"),
        ) as dag:
            sensors: dict[str, DbtNodeSensor] = {}
            for uid in node_dag.nodes:
                extra = dict(sensor_kwargs)
                extra.setdefault("trigger_rule", "always")
                extra.setdefault("producer_task_id", producer_task_id)
                if uid in outlets:
                    extra["outlets"] = outlets[uid]
                sensors[uid] = DbtNodeSensor(task_id=where[uid][1], unique_id=uid, include_tests=True,
                                             run_dag_id=parent.dag_id, dag=dag, task_group=dag.task_group,
                                             **common, **extra)
            for uid, sensor in sensors.items():
                refs = []
                for up in parents[uid]:
                    up_dag, up_task = where[up]
                    if up_dag == node_dag.dag_id:
                        sensors[up] >> sensor
                        refs.append(up_task)
                    else:
                        refs.append(f"{up_dag}/{up_task}")
                if refs:
                    sensor.set_upstream_sensors(refs)
    return where


def _relative_root_message(manifest_path: object, node: str, root: str | None) -> str:
    """What to do about a manifest parsed with a relative ``--project-dir`` — all of it: dbt keeps the
    relative ``root_path`` in ``target/partial_parse.msgpack`` too, so parsing again with an absolute
    directory alone does not fix it (seeds still fail) until the partial-parse cache is bypassed."""
    where = "" if isinstance(manifest_path, Mapping) else f" {manifest_path}"
    return (f"the dbt manifest{where} was parsed with a relative --project-dir (root_path of {node} is {root!r}): "
            "seeds fail when a worker starts dbt from another directory. Parse it again with an absolute "
            "--project-dir and without dbt's partial-parse cache, which keeps the relative root_path: "
            "dbt parse --no-partial-parse --project-dir /absolute/path/to/project (or delete "
            "target/partial_parse.msgpack first)")
