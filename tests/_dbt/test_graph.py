"""The graph rules in dbtbus._dbt.graph: pure, iterative, on graphs with known answers."""

from __future__ import annotations

import orjson

from dbtbus._dbt.graph import (
    add_test_edges,
    children_index,
    descendants,
    graph_from_manifest,
    is_test,
    topological_order,
)
from dbtbus.events import GraphNode

from .._records import DIAMOND, graph


def test_is_test() -> None:
    assert is_test(GraphNode("test")) and is_test("unit_test") and not is_test(GraphNode("model"))
    assert is_test(None, "test.shop.x") and not is_test(None, "model.shop.x")


def test_children_and_descendants() -> None:
    children = children_index(graph(DIAMOND))
    assert children["model.a"] == ["test.a_ok", "model.b"]
    assert set(descendants(children, "seed.s")) == set(DIAMOND) - {"seed.s", "model.x"}
    assert descendants(children, "model.x") == []


def test_a_ten_thousand_deep_chain_does_not_overflow() -> None:
    depth = 10_000
    chain = {f"model.m{i}": GraphNode("model", (f"model.m{i - 1}",) if i else ()) for i in range(depth)}
    chain["test.t0"] = GraphNode("test", ("model.m0",))
    assert len(descendants(children_index(chain), "model.m0")) == depth  # every later model and the test
    order = topological_order(chain)
    assert order.index("model.m0") < order.index("model.m9999")
    with_edges = add_test_edges(chain)
    # every descendant of m0 waits for its test: through m1, the one edge from it another path does not imply
    assert "model.m9999" in descendants(children_index(with_edges), "test.t0")
    assert with_edges["model.m1"].parents == ("model.m0", "test.t0")
    assert sum(len(node.parents) for node in with_edges.values()) == depth + 1


def test_topological_order_puts_parents_first_and_keeps_cycles() -> None:
    g = graph(DIAMOND)
    order = topological_order(g)
    for uid, node in g.items():
        for parent in node.parents:
            assert order.index(parent) < order.index(uid)
    cyclic = {"a": GraphNode("model", ("b",)), "b": GraphNode("model", ("a",))}
    assert sorted(topological_order(cyclic)) == ["a", "b"]


def test_build_test_edges_follow_dbts_rule() -> None:
    g = graph({"model.a": [], "model.b": ["model.a"], "test.t": ["model.a"], "model.c": ["model.b"]})
    edges = add_test_edges(g)
    assert "test.t" in edges["model.b"].parents and edges["model.c"].parents == ("model.b",)  # implied through b
    assert set(descendants(children_index(edges), "test.t")) == {"model.b", "model.c"}
    assert edges["test.t"].parents == ("model.a",)
    # A test on two parents gates only nodes downstream of both.
    g2 = graph({"model.a": [], "model.b": [], "test.rel": ["model.a", "model.b"], "model.c": ["model.a"]})
    assert "test.rel" not in add_test_edges(g2)["model.c"].parents


def test_graph_from_manifest(tmp_path: object) -> None:
    manifest = {
        "nodes": {
            "seed.p.s": {"resource_type": "seed", "depends_on": {"nodes": []}},
            "model.p.a": {"resource_type": "model", "depends_on": {"nodes": ["seed.p.s", "source.p.raw.x"]}},
            "test.p.t": {"resource_type": "test", "depends_on": {"nodes": ["model.p.a"]}},
            "model.p.b": {"resource_type": "model", "depends_on": {"nodes": ["model.p.a"]}},
            "analysis.p.q": {"resource_type": "analysis", "depends_on": {"nodes": ["model.p.a"]}},
        },
        "unit_tests": {"unit_test.p.a.u": {"resource_type": "unit_test", "depends_on": {"nodes": ["model.p.a"]}}},
        "sources": {"source.p.raw.x": {}},
    }
    g = graph_from_manifest(manifest)
    assert set(g) == {"seed.p.s", "model.p.a", "test.p.t", "model.p.b", "unit_test.p.a.u"}
    assert g["model.p.a"].parents == ("seed.p.s",)  # the source is not a node dbt runs
    assert g["model.p.b"].parents == ("model.p.a",)
    with_edges = graph_from_manifest(manifest, test_edges=True)
    assert set(with_edges["model.p.b"].parents) == {"model.p.a", "test.p.t", "unit_test.p.a.u"}
    path = tmp_path / "manifest.json"  # type: ignore[operator]
    path.write_bytes(orjson.dumps(manifest))
    assert graph_from_manifest(path) == g
