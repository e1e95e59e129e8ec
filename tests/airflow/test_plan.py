"""What a render reads of a manifest: the selected nodes and their nearest selected parents, cached on disk."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from dbtbus.airflow import _plan
from dbtbus.airflow._plan import plan_for, select_nodes

from .test_render import _chain_manifest


def test_select_nodes_wires_through_ephemeral(shop_template: Path) -> None:
    parents, chosen = select_nodes(shop_template / "target" / "manifest.json")
    assert "model.shop.order_payments" not in chosen  # ephemeral: no result of its own, no sensor
    assert parents["model.shop.orders_enriched"] == ["model.shop.stg_orders", "model.shop.stg_payments"]
    assert parents["model.shop.stg_customers"] == ["seed.shop.customers"]
    assert parents["snapshot.shop.orders_snapshot"] == ["seed.shop.orders"]
    assert not any(uid.startswith("test.") for uid in chosen)
    assert len(chosen) == 14  # 10 models without the ephemeral one, 3 seeds, 1 snapshot


def test_select_nodes_on_a_10000_deep_chain_does_not_recurse() -> None:
    parents, chosen = select_nodes(_chain_manifest(10_000))
    assert len(chosen) == 5_001  # the seed and every non-ephemeral model
    assert parents["model.p.m2"] == ["model.p.m0"]  # through the ephemeral m1
    assert parents["model.p.m0"] == ["seed.p.s"]


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DBTBUS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_plan_is_read_from_the_cache_until_the_manifest_changes(
    shop_template: Path, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = tmp_path / "manifest.json"
    shutil.copy(shop_template / "target" / "manifest.json", manifest)
    first = plan_for(manifest)
    assert len(list(cache_dir.glob("render-*.json"))) == 1
    read: list[object] = []
    monkeypatch.setattr(_plan, "load_manifest", lambda path: read.append(path) or {})
    assert plan_for(manifest) == first and not read  # the manifest was not read again
    assert plan_for(manifest, select=["stg_orders"]).nodes.keys() == set()  # another selection: read (stubbed)
    assert read
    monkeypatch.undo()
    monkeypatch.setenv("DBTBUS_CACHE_DIR", str(cache_dir))
    data = json.loads(manifest.read_text())
    del data["nodes"]["model.shop.stg_orders"]
    manifest.write_text(json.dumps(data))  # rewritten: another size and mtime
    os.utime(manifest, ns=(1, 1))
    assert "model.shop.stg_orders" not in plan_for(manifest).nodes
    assert "model.shop.stg_orders" in first.nodes


def test_a_cache_that_cannot_be_written_only_costs_a_read(shop_template: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory would go")
    monkeypatch.setenv("DBTBUS_CACHE_DIR", str(blocker / "cache"))
    plan = plan_for(shop_template / "target" / "manifest.json")
    assert len(plan.nodes) == 14 and plan.project == "shop" and not plan.relative
