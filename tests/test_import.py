from __future__ import annotations

import subprocess
import sys

import pytest

import dbtbus

HEAVY = ("dbt", "redis", "airflow", "rich", "psutil", "google.protobuf", "orjson", "anyio")


def imported_modules(code: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def test_import_dbtbus_imports_nothing_heavy() -> None:
    modules = imported_modules("import dbtbus")
    assert "dbtbus" in modules
    heavy = sorted(m for m in modules if m.split(".")[0] in {h.split(".")[0] for h in HEAVY} or m in HEAVY)
    assert heavy == []


def test_the_cli_module_imports_nothing_heavy() -> None:
    modules = imported_modules("import dbtbus.cli")
    assert not [m for m in modules if m.split(".")[0] in {"dbt", "redis", "airflow", "rich", "psutil"}]


def test_lazy_names_resolve_and_are_listed() -> None:
    for name in dbtbus.__all__:
        assert getattr(dbtbus, name) is not None
    assert set(dbtbus.__all__) <= set(dir(dbtbus))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dbtbus.nope  # noqa: B018
