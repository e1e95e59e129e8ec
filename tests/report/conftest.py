"""Fixtures of the report tests: one real build of the shop project, shared by the browser and export tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

# ---------------------------------------------------------------------------------------------- a real build


@dataclass(frozen=True)
class ShopBuild:
    url: str
    run_id: str
    project: Path
    counts: dict[str, int]

    @property
    def dbt_run_results(self) -> Path:
        return self.project / "target" / "run_results.json"


@pytest.fixture(scope="session")
def shop_build(tmp_path_factory: pytest.TempPathFactory) -> ShopBuild:
    """ONE real ``dbt build`` of the shop project through the producer (in process, memory bus).

    dbt writes its own target/run_results.json as usual: the export is compared with it.
    """
    from dbtbus.producer import Producer
    from dbtbus.testing.projects import copy_shop

    project = copy_shop(tmp_path_factory.mktemp("report") / "shop")
    url, run_id = "memory://report-shop-build", "shop-build"
    old = os.environ.get("DBTBUS_DUCKDB_PATH")
    os.environ["DBTBUS_DUCKDB_PATH"] = str(project / "shop.duckdb")
    try:
        result = Producer(url, run_id=run_id, heartbeat_interval=0.2).invoke(
            ["build", "--project-dir", str(project), "--profiles-dir", str(project), "--quiet"]
        )
    finally:
        if old is None:
            os.environ.pop("DBTBUS_DUCKDB_PATH", None)
        else:
            os.environ["DBTBUS_DUCKDB_PATH"] = old
    assert not result.crashed, result.error
    return ShopBuild(url, run_id, project, dict(result.counts))
