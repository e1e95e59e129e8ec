"""dbtbus: one dbt invocation, a live stream of per-node results, any number of consumers.

Importing ``dbtbus`` is cheap: every name below is loaded on first use (PEP 562), so nothing from dbt,
redis, airflow, rich or psutil — nor orjson or anyio — is imported until you need it.

Naming rule for twins: a blocking call has the plain name and its coroutine twin an ``a`` prefix
(``Producer.invoke`` / ``ainvoke``, ``publish_log`` / ``apublish_log``, ``dbtbus.report.report`` / ``areport``,
``dbtbus.export.export_run_results`` / ``aexport_run_results``); the module-level ``wait`` and
``wait_many`` are the blocking twins of the :class:`Bus` coroutines of the same name, as ``httpx.get`` is of
``AsyncClient.get``. Old names live on for a release as deprecated aliases, all in one table
(``dbtbus/_deprecated.py``).
"""

from __future__ import annotations

from ._version import __version__

#: The one list of public names: name → the private module that defines it. ``__all__``, the lazy loader
#: and ``tests/test_public_api.py`` read it; the block below only tells type checkers the same thing.
_EXPORTS: dict[str, str] = {
    # the bus
    "Bus": "._bus",
    "BusStatistics": "._bus",
    "LogEntry": "._bus",
    "connect": "._bus",
    "wait": "._sync",
    "wait_many": "._sync",
    # what runs mean
    "Outcome": "._outcome",
    "OutcomeKind": "._kinds",
    "RunStatus": "._kinds",
    "RunState": "._state",
    # the producer
    "Producer": ".producer",
    "ProducerResult": ".producer",
    "publish_log": ".producer",
    "apublish_log": ".producer",
    # records
    "BatchResult": ".events",
    "GraphNode": ".events",
    "Heartbeat": ".events",
    "NodeResult": ".events",
    "NodeStarted": ".events",
    "NodeStatus": ".events",
    "ProducerInfo": ".events",
    "Record": ".events",
    "RunCrashed": ".events",
    "RunFinished": ".events",
    "RunStarted": ".events",
    # errors
    "AuthenticationFailed": "._exceptions",
    "BackendError": "._exceptions",
    "BackendRejected": "._exceptions",
    "BackendUnavailable": "._exceptions",
    "ConfigurationError": "._exceptions",
    "DbtBusError": "._exceptions",
    "DecodeError": "._exceptions",
    "InvalidCursor": "._exceptions",
    "MemrayUnavailable": "._exceptions",
    "InvalidRunId": "._exceptions",
    "NodeFailed": "._outcome",
    "NodeNotInRun": "._outcome",
    "NodeNotRun": "._outcome",
    "PermissionDenied": "._exceptions",
    "ProducerLost": "._outcome",
    "RecordTooLarge": "._exceptions",
    "RunClaimed": "._exceptions",
    "RunDataLost": "._outcome",
    "RunNotFound": "._outcome",
    "RunError": "._exceptions",
    "RunGone": "._exceptions",
    "RunLost": "._exceptions",
    "UnknownBackend": "._exceptions",
    "UpstreamFailed": "._outcome",
    "WaitError": "._outcome",
    "WaitTimeout": "._outcome",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

# Not ``typing.TYPE_CHECKING``: importing typing alone would cost more than the rest of this module.
TYPE_CHECKING = False
if TYPE_CHECKING:  # each module's ``__all__`` holds exactly its names above (tests/test_public_api.py)
    from typing import Any

    from ._bus import *  # noqa: F403
    from ._exceptions import *  # noqa: F403
    from ._kinds import *  # noqa: F403
    from ._outcome import *  # noqa: F403
    from ._state import *  # noqa: F403
    from ._sync import *  # noqa: F403
    from .events import (  # noqa: F401 - events.__all__ also holds encode/decode and constants, public there only
        BatchResult,
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
    from .producer import *  # noqa: F403


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:  # an old name (warns) or none at all (AttributeError)
        from ._deprecated import renamed

        return renamed(__name__, name)
    import importlib

    value = getattr(importlib.import_module(module_name, __name__), name)
    if isinstance(value, type) or callable(value):
        # Shown (and pickled) as ``dbtbus.Name``, its public home, as httpx does.
        try:  # noqa: SIM105 - contextlib would cost `import dbtbus` a module
            value.__module__ = __name__
        except (AttributeError, TypeError):  # pragma: no cover - builtins and the like
            pass
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
