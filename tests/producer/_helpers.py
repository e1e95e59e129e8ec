from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

import anyio

import dbtbus
from dbtbus.events import NodeResult, NodeStarted, Record, RunStarted, decode
from dbtbus.testing.projects import copy_shop as copy_shop  # the test modules import it from here

#: The dbt console script of the interpreter running the tests (a venv's bin/ or Scripts/).
DBT = str(Path(sys.executable).with_name("dbt"))
#: The installed dbt-core (``nox -s dbt_versions`` runs these tests on the oldest and newest supported).
DBT_VERSION = version("dbt-core")
DBT_MINOR = tuple(int(part) for part in DBT_VERSION.split(".")[:2])


def shop_args(path: Path, *extra: str) -> list[str]:
    return ["build", "--project-dir", str(path), "--profiles-dir", str(path), *extra]


def read_records(url: str, run_id: str) -> list[Record]:
    async def main() -> list[Record]:
        async with dbtbus.connect(url) as bus:
            entries = await bus.backend.read(run_id, None, limit=1_000_000, timeout=0)
            return [decode(e.data) for e in entries]

    return anyio.run(main)


def node_results(records: list[Record]) -> dict[str, NodeResult]:
    return {r.unique_id: r for r in records if isinstance(r, NodeResult)}


def comparable(results: dict[str, NodeResult]) -> set[tuple[object, ...]]:
    return {
        (r.unique_id, r.status.value, r.skip_cause, r.failures, r.resource_type, r.message, r.relation_name)
        for r in results.values()
    }


def announced(records: list[Record]) -> RunStarted:
    """The attempt's first RunStarted: published before dbt runs, so it knows no graph yet."""
    first = records[0]
    assert isinstance(first, RunStarted), first
    return first


def started_of(records: list[Record]) -> RunStarted:
    """The attempt's RunStarted as refined once dbt told its graph: the last one before any node record."""
    last: RunStarted | None = None
    for record in records:
        if isinstance(record, RunStarted):
            last = record
        elif isinstance(record, (NodeStarted, NodeResult)):
            break
    assert last is not None
    return last
