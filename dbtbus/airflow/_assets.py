"""Airflow Assets for dbt nodes: the outlet a model, seed or snapshot task declares, and the asset event it
emits the moment its node succeeds.

**Names.** A node's asset is its relation as OpenLineage names it — the namespace and name ``dbt-ol`` gives
that relation — spelled as an Airflow 3 asset URI: ``<namespace>/<name with "." as "/">``, e.g.
``postgres://db:5432/analytics/public/orders`` for the OpenLineage dataset (``postgres://db:5432``,
``analytics.public.orders``). Airflow 3 validates URIs per scheme, and its ``postgres``, ``mysql`` and
``trino`` schemes want the parts of a table name as path segments (a dotted name is refused), which is also
what Airflow's OpenLineage provider turns back into the OpenLineage (namespace, name) — and what
astronomer-cosmos emits on Airflow 3, so a DAG scheduled on a cosmos asset keeps its schedule. The
(namespace, name) itself is :func:`dataset_names`' to say, the one seam to the naming.

**Events.** Airflow 3.3 registers a task's outlets only when a *worker* reports the task's success (the
Task SDK's ``SucceedTask`` carries ``task_outlets`` and ``outlet_events`` to the execution API, which calls
``TaskInstance.register_asset_changes_in_db``). A task the triggerer ends with ``TaskSuccessEvent`` gets its
state and XComs, never an asset event (``airflow/models/trigger.py``, the ``BaseTaskEndEvent`` handler of
``handle_event_submit``). So a node task with outlets ends its success on a worker (see
:class:`~dbtbus.airflow.triggers.DbtNodeTrigger`'s ``end_on_worker``), which sets the event's metadata
(:func:`asset_extra`) in ``outlet_events``; failures, skips and nodes not run still end in the triggerer
and emit nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .._outcome import Outcome

__all__ = ["asset_extra", "asset_uri", "dataset_names", "dbt_node_asset", "node_asset"]


def dataset_names(manifest: Mapping[str, Any], unique_ids: Iterable[str],
                  dbt_args: Sequence[str] | None = None) -> dict[str, tuple[str, str]]:
    """The OpenLineage (namespace, name) of each node's relation, as ``dbt-ol`` names it: the one seam to the
    naming, which is :mod:`dbtbus.lineage`'s (openlineage-integration-common's).

    The namespace comes from the profile the dbt arguments name (``--project-dir``, ``--profiles-dir``,
    ``--profile``, ``--target``, or dbt's environment variables and defaults), read where the DAG is parsed.

    :raises dbtbus.lineage.LineageUnavailable: OpenLineage is not installed, the profile cannot be read or
        names an adapter dbt-ol does not support, or a node has no relation (a test, an ephemeral model).
    """
    from ..lineage import DatasetNaming, LineageUnavailable

    naming = DatasetNaming.from_dbt_args(dbt_args or (), manifest=manifest)
    out: dict[str, tuple[str, str]] = {}
    for uid in unique_ids:
        dataset = naming.dataset(uid)
        if dataset is None:
            raise LineageUnavailable(f"{uid} has no relation in the warehouse: it has no asset")
        out[uid] = (dataset.namespace, dataset.name)
    return out


def naming_key(dbt_args: Sequence[str]) -> list[Any]:
    """What the names depend on besides the manifest, for a cache key: the profile's location and its file's
    modification time (a new host or port is a new namespace)."""
    from ..lineage import LineageUnavailable
    from ..lineage._naming import _profile_location, dbt_flags  # the naming's own discovery, not a second one

    flags = dbt_flags(dbt_args)
    try:
        where = _profile_location(flags.project_dir, profiles_dir=flags.profiles_dir, profile=flags.profile,
                                  target=flags.target)
    except LineageUnavailable:  # the naming itself raises it, with its reason; nothing is cached then
        return [list(dbt_args)]
    path = where.path
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = None
    return [str(path), mtime, where.profile, where.target]


def asset_uri(namespace: str, name: str) -> str:
    """The Airflow asset URI of an OpenLineage dataset: its name's parts as path segments (the module)."""
    return f"{namespace.rstrip('/')}/{name.replace('.', '/')}"


def node_asset(namespace: str, name: str) -> Any:
    """The :class:`airflow.sdk.Asset` of an OpenLineage dataset: its name is its URI and its group Airflow's
    default, so ``Asset("<that uri>")`` written by hand in a consumer's DAG is the same asset (Airflow keeps
    one definition per name and URI: a second spelling with another group would contend with this one)."""
    from airflow.sdk import Asset

    return Asset(asset_uri(namespace, name))


def dbt_node_asset(manifest: str | os.PathLike[str] | Mapping[str, Any], node: str,
                   dbt_args: Sequence[str] | None = None) -> Any:
    """The asset a rendered node task emits (``render_dbt_task_group(..., emit_assets=...)``): what a DAG
    downstream is scheduled on, without spelling its URI.

    ``node`` is a unique id or a node name; ``dbt_args`` those given to the render (they name the profile the
    naming reads). Raises :class:`KeyError` for a node the manifest lacks (or whose name is ambiguous).
    """
    from ._plan import load_manifest

    data = load_manifest(manifest)
    nodes: Mapping[str, Mapping[str, Any]] = data.get("nodes", {})
    if node in nodes:
        uid = node
    else:
        found = [u for u, n in nodes.items() if n.get("name") == node and n.get("resource_type") != "test"]
        if len(found) != 1:
            raise KeyError(f"{node!r} names {len(found)} nodes of the manifest: give its unique id")
        uid = found[0]
    return node_asset(*dataset_names(data, [uid], dbt_args)[uid])


def asset_extra(outcome: Outcome) -> dict[str, Any]:
    """The metadata of the asset event a succeeded node emits.

    ``rows_affected`` only when the adapter reported a count (dbt's ``adapter_response``); ``run_id`` is the
    dbtbus run id (Airflow's own run id is on the event already).
    """
    record = outcome.record
    extra: dict[str, Any] = {
        "unique_id": outcome.unique_id,
        "run_id": outcome.run_id,
        "attempt": outcome.attempt,
        "status": record.status.value if record is not None else None,
        "execution_time": record.execution_time if record is not None else None,
    }
    rows = (record.adapter_response or {}).get("rows_affected") if record is not None else None
    # dbt says -1 where the database gave no count (a view, a DDL statement): that is not a figure.
    if isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0:
        extra["rows_affected"] = rows
    return extra
