"""dbtbus: one dbt invocation, a live stream of per-node results, any number of consumers.

Importing ``dbtbus`` is cheap: every name below is loaded on first use (PEP 562), so nothing from dbt,
redis, airflow, rich or psutil — nor orjson — is imported until you need it.
"""

from __future__ import annotations

import importlib

from ._version import __version__

# Not ``typing.TYPE_CHECKING``: importing typing alone would cost more than the rest of this module.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._bus import Bus, LogEntry, NodeOutcome, connect
    from ._exceptions import (
        BackendError,
        BackendUnavailable,
        ConfigurationError,
        DbtBusError,
        DecodeError,
        InvalidCursor,
        NodeFailed,
        NodeNotInRun,
        NodeNotRun,
        ProducerLost,
        UnknownBackend,
        UpstreamFailed,
        WaitError,
        WaitTimeout,
    )
    from ._state import RunState
    from ._sync import wait_many_sync, wait_sync
    from .events import (
        GraphNode,
        Heartbeat,
        NodeResult,
        NodeStarted,
        NodeStatus,
        ProducerInfo,
        Record,
        RunCrashed,
        RunFinished,
        RunStarted,
    )

_LAZY: dict[str, str] = {
    "Bus": "._bus",
    "LogEntry": "._bus",
    "NodeOutcome": "._bus",
    "connect": "._bus",
    "RunState": "._state",
    "wait_sync": "._sync",
    "wait_many_sync": "._sync",
    **{
        name: "._exceptions"
        for name in (
            "BackendError",
            "BackendUnavailable",
            "ConfigurationError",
            "DbtBusError",
            "DecodeError",
            "InvalidCursor",
            "NodeFailed",
            "NodeNotInRun",
            "NodeNotRun",
            "ProducerLost",
            "UnknownBackend",
            "UpstreamFailed",
            "WaitError",
            "WaitTimeout",
        )
    },
    **{
        name: ".events"
        for name in (
            "GraphNode",
            "Heartbeat",
            "NodeResult",
            "NodeStarted",
            "NodeStatus",
            "ProducerInfo",
            "Record",
            "RunCrashed",
            "RunFinished",
            "RunStarted",
        )
    },
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'dbtbus' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
