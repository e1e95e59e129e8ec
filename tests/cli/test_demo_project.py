"""dbtbus/_demo_project (shipped in the wheel for `dbtbus demo`) must stay a copy of examples/shop."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from .conftest import ROOT


def _sync_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sync_demo_project", ROOT / "scripts" / "sync_demo_project.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_project_is_a_copy_of_examples_shop() -> None:
    sync = _sync_script()
    assert sync.differences() == [], "run: python scripts/sync_demo_project.py"
    files = sync.project_files(sync.DEST)
    assert "dbt_project.yml" in files and "profiles.yml" in files
    assert not any(p.startswith(("target/", "logs/")) or p.endswith(".duckdb") for p in files)


def test_sync_copies_project_files_only(tmp_path: Path) -> None:
    sync = _sync_script()
    source = tmp_path / "src"
    (source / "models").mkdir(parents=True)
    (source / "models" / "a.sql").write_text("select 1")
    (source / "target" / "compiled").mkdir(parents=True)
    (source / "target" / "compiled" / "a.sql").write_text("select 1")
    (source / "logs").mkdir()
    (source / "logs" / "dbt.log").write_text("")
    (source / "shop.duckdb").write_bytes(b"\0")
    dest = tmp_path / "dest"
    sync.sync(source, dest)
    assert sorted(sync.project_files(dest)) == ["models/a.sql"]
    assert sync.differences(source, dest) == []
    (dest / "models" / "a.sql").write_text("select 2")
    assert sync.differences(source, dest) == ["differs: models/a.sql"]
