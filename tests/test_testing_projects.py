"""Tests for the synthetic dbt project generator in ``dbtbus.testing.projects``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dbtbus.testing.projects import GeneratedProject, generate_project


def _file_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_deterministic(tmp_path: Path) -> None:
    a = generate_project(tmp_path / "a", models=30, fanout=3, seed=7)
    b = generate_project(tmp_path / "b", models=30, fanout=3, seed=7)
    c = generate_project(tmp_path / "c", models=30, fanout=3, seed=8)
    assert a.parents == b.parents
    assert a.nodes == b.nodes
    tree_a, tree_b = _file_tree(a.path), _file_tree(b.path)
    tree_a.pop("profiles.yml")  # holds the absolute duckdb path
    tree_b.pop("profiles.yml")
    assert tree_a == tree_b
    assert a.parents != c.parents


def test_shape(tmp_path: Path) -> None:
    p = generate_project(tmp_path, models=25, tests_per_model=2, fanout=2, failing=["m010"])
    assert len(p.models) == 25
    assert len(p.tests) == 50
    assert p.nodes[0] == p.seed == "seed.gen.raw"
    assert p.parents[p.seed] == ()
    order = {uid: i for i, uid in enumerate(p.nodes)}
    for uid in p.models:
        ups = p.parents[uid]
        assert 1 <= len(ups) <= 2
        assert all(order[up] < order[uid] for up in ups)  # acyclic: parents come earlier
    for uid in p.tests:
        assert len(p.parents[uid]) == 1
        assert p.parents[uid][0] in p.models
    assert p.failing == frozenset({"model.gen.m010"})
    assert p.skipped == p.descendants("model.gen.m010")
    assert p.expected_status("model.gen.m010") == "error"


def test_rejects_unknown_failing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model"):
        generate_project(tmp_path, models=3, failing=["m999"])
    with pytest.raises(ValueError, match="unknown model"):
        generate_project(tmp_path, models=3, failing=["model.other.m001"])


def _build(project: GeneratedProject) -> tuple[Any, dict[str, str]]:
    from dbt.cli.main import dbtRunner

    finished: dict[str, str] = {}

    def callback(msg: Any) -> None:
        if msg.info.name == "NodeFinished":
            finished[msg.data.node_info.unique_id] = msg.data.run_result.status

    res = dbtRunner(callbacks=[callback]).invoke(["build", *project.dbt_args(), "--log-level", "none"])
    return res, finished


def _manifest_parents(project: GeneratedProject) -> dict[str, tuple[str, ...]]:
    manifest = json.loads((project.path / "target" / "manifest.json").read_text())
    return {
        uid: tuple(sorted(node.get("depends_on", {}).get("nodes", [])))
        for uid, node in manifest["nodes"].items()
    }


@pytest.mark.dbt
def test_dbt_build_succeeds(tmp_path: Path) -> None:
    project = generate_project(tmp_path / "proj", models=20, tests_per_model=1)
    res, finished = _build(project)
    assert res.exception is None
    assert res.success is True
    statuses = {r.node.unique_id: str(r.status) for r in res.result.results}
    assert len(statuses) == len(project.nodes) == 1 + 20 + 20
    assert set(statuses) == set(project.nodes)  # incl. the hashed test unique ids
    assert statuses == {uid: project.expected_status(uid) for uid in project.nodes}
    assert finished == statuses
    assert _manifest_parents(project) == dict(project.parents)


@pytest.mark.dbt
def test_dbt_build_failing_model_skips_descendants(tmp_path: Path) -> None:
    # The DAG depends only on (models, fanout, seed), so probe it to pick a model with grandchildren.
    probe = generate_project(tmp_path / "probe", models=20, tests_per_model=1)
    children = probe.children()
    target = next(
        uid
        for uid in probe.models
        if any(grand in probe.models for kid in children[uid] for grand in children[kid])
    )
    project = generate_project(
        tmp_path / "proj", models=20, tests_per_model=1, failing=[target.rsplit(".", 1)[-1]]
    )
    assert project.parents == probe.parents
    model_children = [c for c in children[target] if c in project.models]
    assert model_children
    assert set(model_children) <= project.skipped

    res, finished = _build(project)
    assert res.exception is None
    assert res.success is False
    statuses = {r.node.unique_id: str(r.status) for r in res.result.results}
    assert statuses[target] == "error"
    for uid in project.skipped:
        assert statuses[uid] == "skipped", uid
    assert statuses == {uid: project.expected_status(uid) for uid in project.nodes}
    assert finished == statuses
