"""The record factory (dbtbus/testing/records.py) that the fake runs and the tests build records with."""

from __future__ import annotations

import pytest

from dbtbus._dbt.rules import SKIP_CHILDREN_ON
from dbtbus.events import GraphNode, NodeStatus, RunStarted, decode, encode
from dbtbus.testing.records import graph_of, node_result, run_started


def test_a_run_started_says_what_dbt_would_and_round_trips() -> None:
    started = run_started({"seed.s": [], "model.a": ["seed.s"], "test.t": ["model.a"]}, command="build")
    assert started.run_id == "run-1" and started.producer.kind == "fake" and started.attempt == 1
    assert started.skip_children_on == SKIP_CHILDREN_ON["build"]
    assert started.graph == {
        "seed.s": GraphNode("seed"),
        "model.a": GraphNode("model", ("seed.s",)),
        "test.t": GraphNode("test", ("model.a",)),
    }
    assert decode(encode(started)) == started
    told = run_started(None, run_id="r", command="run", skip_children_on={NodeStatus.ERROR}, dbt_version="1.11")
    assert isinstance(told, RunStarted) and told.graph is None and told.skip_children_on == {NodeStatus.ERROR}
    assert told.dbt_version == "1.11"


def test_a_node_result_takes_its_resource_type_from_the_graph_or_its_id() -> None:
    assert node_result("seed.s").resource_type == "seed"
    assert node_result("model.a", "error", message="boom").status is NodeStatus.ERROR
    graph = graph_of({"model.a": []}, types={"model.a": "snapshot"})
    assert node_result("model.a", graph=graph).resource_type == "snapshot"
    assert node_result("model.a", resource_type="seed", graph=graph).resource_type == "seed"


def test_parents_spelled_as_a_string_are_refused() -> None:
    with pytest.raises(TypeError, match="must be a list of unique ids, not a string"):
        graph_of({"model.b": "model.a"})
