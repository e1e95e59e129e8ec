"""``run_results.json`` from the bus, compared field by field with the one dbt itself wrote for the same build."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from dbtbus.export import RUN_RESULTS_SCHEMA, export_run_results

from .conftest import ShopBuild

#: Compared exactly, per node.
EXACT = ("unique_id", "status", "thread_id", "message", "failures", "adapter_response", "relation_name", "compiled")


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def both(shop_build: ShopBuild, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    ours_path = tmp_path_factory.mktemp("export") / "run_results.json"
    returned = export_run_results(shop_build.url, shop_build.run_id, ours_path)
    ours = json.loads(ours_path.read_text())
    assert ours["results"] == returned["results"]
    theirs = json.loads(shop_build.dbt_run_results.read_text())
    return ours, theirs


def test_the_same_nodes_in_the_same_schema(both: tuple[dict[str, Any], dict[str, Any]]) -> None:
    ours, theirs = both
    assert theirs["metadata"]["dbt_schema_version"] == RUN_RESULTS_SCHEMA  # dbt 1.11 writes v6
    assert set(ours) == set(theirs) == {"metadata", "results", "elapsed_time", "args"}
    assert set(ours["metadata"]) == set(theirs["metadata"])
    assert ours["metadata"]["dbt_version"] == theirs["metadata"]["dbt_version"]
    assert ours["metadata"]["invocation_id"] == theirs["metadata"]["invocation_id"]
    # Ephemeral models are compiled into their children: dbt leaves them out, so does the export.
    assert sorted(r["unique_id"] for r in ours["results"]) == sorted(r["unique_id"] for r in theirs["results"])
    mine_sorted = sorted(ours["results"], key=lambda r: r["unique_id"])
    for mine, dbts in zip(mine_sorted, sorted(theirs["results"], key=lambda r: r["unique_id"]), strict=True):
        assert set(mine) == set(dbts), mine["unique_id"]


def test_every_result_field_by_field(both: tuple[dict[str, Any], dict[str, Any]]) -> None:
    ours, theirs = both
    by_id = {r["unique_id"]: r for r in theirs["results"]}
    for mine in ours["results"]:
        dbts = by_id[mine["unique_id"]]
        for key in EXACT:
            assert mine[key] == dbts[key], (mine["unique_id"], key, mine[key], dbts[key])
        assert mine["execution_time"] == pytest.approx(dbts["execution_time"], abs=1e-6), mine["unique_id"]
        assert mine["timing"] == dbts["timing"], mine["unique_id"]  # dbt's compile/execute phases, exactly
        if mine["compiled_code"] is not None:
            assert mine["compiled_code"] == dbts["compiled_code"]


def test_the_bus_span_of_each_node_encloses_dbts_timing(shop_build: ShopBuild) -> None:
    import anyio

    from dbtbus import connect

    async def state() -> Any:
        async with connect(shop_build.url) as bus:
            return await bus.run_state(shop_build.run_id)

    results = anyio.run(state).results
    theirs = json.loads(shop_build.dbt_run_results.read_text())
    checked = 0
    for dbts in theirs["results"]:
        if not dbts["timing"]:
            continue
        record = results[dbts["unique_id"]]
        first = min(_ts(t["started_at"]) for t in dbts["timing"])
        last = max(_ts(t["completed_at"]) for t in dbts["timing"])
        assert record.started_at <= first and last <= record.finished_at, dbts["unique_id"]
        checked += 1
    assert checked >= 20
