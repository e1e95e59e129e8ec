"""dbtbus._dbt.test_edges: build's implied test edges are dropped, and every node keeps its ancestors."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from dbtbus._dbt.test_edges import drop_implied_test_edges


def _is_test(uid: str) -> bool:
    return uid.startswith("test.")


def _ancestors(parents: Mapping[str, Sequence[str]]) -> dict[str, set[str]]:
    """Every node's ancestors, by a plain memoised walk (the answer the bit sets must give)."""
    out: dict[str, set[str]] = {}

    def walk(uid: str) -> set[str]:
        if uid not in out:
            found: set[str] = set()
            for parent in parents.get(uid, ()):
                found.add(parent)
                found |= walk(parent)
            out[uid] = found
        return out[uid]

    for uid in parents:
        walk(uid)
    return out


def _dbt_build_graph(models: int, seed: int) -> dict[str, list[str]]:
    """A random project as ``dbt build`` links it: each model's refs, a test per model, and dbt's test edges
    from each test to EVERY node downstream of what it tests (``add_test_edges_1``'s many implied edges)."""
    rng = random.Random(seed)
    parents: dict[str, list[str]] = {}
    for i in range(models):
        refs = rng.sample(range(i), min(i, rng.randint(0, 3)))
        parents[f"model.m{i}"] = [f"model.m{j}" for j in refs]
        parents[f"test.t{i}"] = [f"model.m{i}"]
    below = _ancestors(parents)
    for i in range(models):
        for uid in list(parents):
            if not _is_test(uid) and f"model.m{i}" in below[uid]:
                parents[uid].append(f"test.t{i}")
    return parents


def test_implied_test_edges_are_dropped_and_every_ancestor_stays() -> None:
    for seed in range(20):
        graph = _dbt_build_graph(60, seed)
        kept = drop_implied_test_edges(graph, _is_test)
        assert list(kept) == list(graph)
        assert _ancestors(kept) == _ancestors(graph), seed
        for uid, parents in kept.items():
            # a node's own dependencies stay, implied or not; of its tests, only the ones no other path gives
            assert [p for p in graph[uid] if not _is_test(p)] == [p for p in parents if not _is_test(p)]
            others = _ancestors({**kept, uid: []})
            for parent in parents:
                if _is_test(parent):
                    assert not any(parent in others[q] for q in parents if q != parent), (seed, uid, parent)


def test_a_chain_keeps_one_test_edge_per_test_however_deep() -> None:
    depth = 10_000
    graph = {f"model.m{i}": [f"model.m{i - 1}"] if i else [] for i in range(depth)}
    graph["test.t0"] = ["model.m0"]
    for i in range(1, depth):
        graph[f"model.m{i}"].append("test.t0")  # dbt's rule: every descendant of m0 waits for its test
    kept = drop_implied_test_edges(graph, _is_test)
    assert kept["model.m1"] == ["model.m0", "test.t0"]
    assert all(kept[f"model.m{i}"] == [f"model.m{i - 1}"] for i in range(2, depth))
    assert sum(map(len, kept.values())) == depth + 1  # from 2 × depth - 1


def test_parents_outside_the_graph_and_cycles_are_kept_whole() -> None:
    graph = {
        "model.a": ["source.outside"],
        "test.t": ["model.a"],
        "model.b": ["model.a", "test.t"],
        "model.c": ["model.b", "test.t"],
        "model.x": ["model.y", "test.t"],
        "model.y": ["model.x"],
    }
    kept = drop_implied_test_edges(graph, _is_test)
    assert kept["model.a"] == ["source.outside"] and kept["model.c"] == ["model.b"]
    assert kept["model.x"] == ["model.y", "test.t"] and kept["model.y"] == ["model.x"]
    assert drop_implied_test_edges({}, _is_test) == {}
