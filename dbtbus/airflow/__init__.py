"""Apache Airflow 3 integration (``pip install 'dbtbus[airflow]'``); nothing from Airflow is imported until used.

* :class:`DbtBusProducerOperator` — runs ONE dbt invocation on a bus; retries resume;
* :class:`DbtBusCarrierOperator` — opens a run on the ``xcom://`` bus (its task instance carries the XComs);
* :class:`DbtNodeSensor` — one task per node, deferrable, starts directly in the triggerer;
* :class:`DbtNodeTrigger` — the trigger that awaits the bus;
* :func:`render_dbt_task_group` — manifest.json → a task group of one producer and one sensor per node;
* :func:`dbtbus_run_id` — the run id every task of a DAG run agrees on;
* :func:`dbt_node_asset` — the Airflow asset a node task emits (``emit_assets``), to schedule DAGs on.

See ``docs/airflow.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._assets import dbt_node_asset as dbt_node_asset
    from ._run_id import dbtbus_run_id as dbtbus_run_id
    from .operators import DbtBusCarrierOperator as DbtBusCarrierOperator
    from .operators import DbtBusProducerOperator as DbtBusProducerOperator
    from .render import render_dbt_task_group as render_dbt_task_group
    from .sensors import DbtNodeSensor as DbtNodeSensor
    from .triggers import DbtNodeTrigger as DbtNodeTrigger

_LAZY = {
    "dbt_node_asset": "._assets",
    "dbtbus_run_id": "._run_id",
    "DbtBusCarrierOperator": ".operators",
    "DbtBusProducerOperator": ".operators",
    "DbtNodeSensor": ".sensors",
    "DbtNodeTrigger": ".triggers",
    "render_dbt_task_group": ".render",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dbtbus.airflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
