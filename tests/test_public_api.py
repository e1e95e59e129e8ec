"""The public surface: one list of names, each shown at its public home, each module's list in step."""

from __future__ import annotations

import importlib
import pickle
import warnings

import pytest

import dbtbus

PUBLIC = {
    "__version__",
    # the bus
    "Bus", "BusStatistics", "LogEntry", "connect", "wait", "wait_many",
    # what runs mean
    "Outcome", "OutcomeKind", "RunStatus", "RunState",
    # the producer
    "Producer", "ProducerResult", "publish_log", "apublish_log",
    # records
    "BatchResult", "GraphNode", "Heartbeat", "NodeResult", "NodeStarted", "NodeStatus", "ProducerInfo", "Record",
    "RunCrashed", "RunFinished", "RunStarted",
    # errors
    "AuthenticationFailed", "BackendError", "BackendRejected", "BackendUnavailable", "ConfigurationError",
    "DbtBusError", "DecodeError", "InvalidCursor", "MemrayUnavailable", "NodeFailed", "NodeNotInRun", "NodeNotRun",
    "PermissionDenied", "ProducerLost", "RecordTooLarge", "RunClaimed", "RunDataLost", "RunNotFound", "RunError",
    "RunGone", "RunLost",
    "InvalidRunId",
    "UnknownBackend", "UpstreamFailed", "WaitError", "WaitTimeout",
}  # fmt: skip


def test_the_public_names_are_pinned() -> None:
    assert set(dbtbus.__all__) == PUBLIC


def test_each_private_module_exports_exactly_its_names() -> None:
    by_module: dict[str, set[str]] = {}
    for name, module in dbtbus._EXPORTS.items():
        by_module.setdefault(module, set()).add(name)
    for module, names in by_module.items():
        exported = set(importlib.import_module(module, "dbtbus").__all__)
        if module == ".events":  # a public module of its own: it also exports encode/decode and constants
            assert names <= exported
        else:
            assert exported == names, module


def test_names_live_at_their_public_home() -> None:
    for name in dbtbus.__all__:
        value = getattr(dbtbus, name)
        if isinstance(value, type) and name != "Record":
            assert value.__module__ == "dbtbus", name
    error = dbtbus.Outcome(dbtbus.OutcomeKind.NOT_IN_RUN, "r", "model.a").error()
    assert type(error).__name__ == "NodeNotInRun" and repr(type(error)) == "<class 'dbtbus.NodeNotInRun'>"
    assert isinstance(pickle.loads(pickle.dumps(error)), dbtbus.NodeNotInRun)


def test_every_wait_error_has_the_kind_of_its_outcome() -> None:
    kinds = {cls.kind for cls in dbtbus.WaitError.__subclasses__()}
    assert kinds == set(dbtbus.OutcomeKind) - {dbtbus.OutcomeKind.SUCCESS, dbtbus.OutcomeKind.PENDING}


def test_old_twin_names_are_deprecated_aliases(memory_url: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(dbtbus.WaitTimeout):
            dbtbus.wait_sync(memory_url, "r", "model.a", timeout=0)
        with pytest.raises(dbtbus.WaitTimeout):
            dbtbus.wait_many_sync(memory_url, "r", ["model.a"], timeout=0)
    assert [w.category for w in caught] == [DeprecationWarning, DeprecationWarning]


def test_run_errors_pickle() -> None:
    lost = pickle.loads(pickle.dumps(dbtbus.RunLost(run_id="r")))
    assert isinstance(lost, dbtbus.RunLost) and lost.run_id == "r" and "'r'" in str(lost)
