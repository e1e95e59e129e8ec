from __future__ import annotations

import shutil
import sys
from pathlib import Path

import anyio

import dbtbus
from dbtbus.events import NodeResult, Record, decode

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"
#: The dbt console script of the interpreter running the tests (a venv's bin/ or Scripts/).
DBT = str(Path(sys.executable).with_name("dbt"))


def copy_shop(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dbt_project.yml", "profiles.yml", "models", "seeds", "snapshots", "tests"):
        src = SHOP / name
        if src.is_dir():
            shutil.copytree(src, dest / name, dirs_exist_ok=True)
        else:
            shutil.copy(src, dest / name)
    return dest


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
