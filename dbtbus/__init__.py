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

    from ._bus import Bus as Bus
    from ._bus import LogEntry as LogEntry
    from ._bus import NodeOutcome as NodeOutcome
    from ._bus import connect as connect
    from ._exceptions import (
        BackendError as BackendError,
    )
    from ._exceptions import (
        BackendUnavailable as BackendUnavailable,
    )
    from ._exceptions import (
        ConfigurationError as ConfigurationError,
    )
    from ._exceptions import (
        DbtBusError as DbtBusError,
    )
    from ._exceptions import (
        DecodeError as DecodeError,
    )
    from ._exceptions import (
        InvalidCursor as InvalidCursor,
    )
    from ._exceptions import (
        NodeFailed as NodeFailed,
    )
    from ._exceptions import (
        NodeNotInRun as NodeNotInRun,
    )
    from ._exceptions import (
        NodeNotRun as NodeNotRun,
    )
    from ._exceptions import (
        ProducerLost as ProducerLost,
    )
    from ._exceptions import (
        UnknownBackend as UnknownBackend,
    )
    from ._exceptions import (
        UpstreamFailed as UpstreamFailed,
    )
    from ._exceptions import (
        WaitError as WaitError,
    )
    from ._exceptions import (
        WaitTimeout as WaitTimeout,
    )
    from ._state import RunState as RunState
    from ._sync import wait_many_sync as wait_many_sync
    from ._sync import wait_sync as wait_sync
    from .events import (
        GraphNode as GraphNode,
    )
    from .events import (
        Heartbeat as Heartbeat,
    )
    from .events import (
        NodeResult as NodeResult,
    )
    from .events import (
        NodeStarted as NodeStarted,
    )
    from .events import (
        NodeStatus as NodeStatus,
    )
    from .events import (
        ProducerInfo as ProducerInfo,
    )
    from .events import (
        Record as Record,
    )
    from .events import (
        RunCrashed as RunCrashed,
    )
    from .events import (
        RunFinished as RunFinished,
    )
    from .events import (
        RunStarted as RunStarted,
    )
    from .producer import Producer as Producer
    from .producer import ProducerResult as ProducerResult
    from .producer import publish_log as publish_log

_LAZY: dict[str, str] = {
    "Bus": "._bus",
    "LogEntry": "._bus",
    "NodeOutcome": "._bus",
    "connect": "._bus",
    "RunState": "._state",
    "wait_sync": "._sync",
    "wait_many_sync": "._sync",
    "Producer": ".producer",
    "ProducerResult": ".producer",
    "publish_log": ".producer",
    **dict.fromkeys(
        (
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
        ),
        "._exceptions",
    ),
    **dict.fromkeys(
        (
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
        ),
        ".events",
    ),
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
