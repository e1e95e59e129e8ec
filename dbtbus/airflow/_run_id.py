"""The dbtbus run id of a DAG run: every task of the run computes the same one, without XCom."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["dbtbus_run_id", "run_id_from_context"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_PART = 60


def _clean(value: str) -> str:
    return _UNSAFE.sub("_", value).strip("_")[:_PART] or "_"


def dbtbus_run_id(dag_id: str, run_id: str, map_index: int | None = -1, task_group_id: str | None = None) -> str:
    """``af-<dag_id>-<run_id>[-m<map_index>][-<group>]-<hash>``: deterministic, safe as a key and an XCom key.

    Every part is reduced to ``[A-Za-z0-9_.-]`` (at most 60 characters each); the trailing 10-hex-digit hash
    of the raw parts keeps two DAG runs whose ids sanitise alike (``a:b`` and ``a_b``) apart.
    """
    parts = ["af", _clean(dag_id), _clean(run_id)]
    if map_index is not None and map_index >= 0:
        parts.append(f"m{map_index}")
    if task_group_id:
        parts.append(_clean(task_group_id))
    raw = "\x1f".join([dag_id, run_id, str(map_index if map_index is not None else -1), task_group_id or ""])
    parts.append(hashlib.sha1(raw.encode("utf-8")).hexdigest()[:10])
    return "-".join(parts)


def run_id_from_context(context: Mapping[str, Any], task_group_id: str | None = None, *,
                        dag_id: str | None = None) -> str:
    """The dbtbus run id for the task instance of an Airflow context (``ti`` gives dag, run and map index)."""
    return run_id_from_ti(context["ti"], task_group_id, dag_id=dag_id)


def run_id_from_ti(ti: Any, task_group_id: str | None = None, *, dag_id: str | None = None) -> str:
    """The same, from a task instance (a trigger's ``self.task_instance``); ``dag_id``: the DAG whose run
    produces it, when not the task's own (a node task in a DAG of its own: it shares the producer's run id,
    and a mapped producer is not supported there)."""
    if dag_id is not None:
        return dbtbus_run_id(dag_id, ti.run_id, -1, task_group_id)
    return dbtbus_run_id(ti.dag_id, ti.run_id, getattr(ti, "map_index", -1), task_group_id)
