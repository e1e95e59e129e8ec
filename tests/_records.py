"""The core tests' run: its id, its graph, and dbtbus.testing's record factory with the defaults they share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dbtbus.events import ProducerInfo, RunStarted
from dbtbus.testing.records import graph_of as graph
from dbtbus.testing.records import node_result as result
from dbtbus.testing.records import run_started

__all__ = ["DIAMOND", "RUN", "graph", "result", "started"]

RUN = "run-1"


def started(spec: Mapping[str, Sequence[str]] | None, **kwargs: Any) -> RunStarted:
    """:func:`~dbtbus.testing.records.run_started`, by the producer ``test-producer`` (the lease holder)."""
    return run_started(spec, producer=ProducerInfo(id="test-producer"), **kwargs)


# model.a → model.b → model.c, model.a → test.a_ok, model.b → test.b_fails; seed.s → model.a; model.x alone
DIAMOND = {
    "seed.s": [],
    "model.a": ["seed.s"],
    "test.a_ok": ["model.a"],
    "model.b": ["model.a", "test.a_ok"],
    "test.b_fails": ["model.b"],
    "model.c": ["model.b", "test.b_fails"],
    "model.x": [],
}
