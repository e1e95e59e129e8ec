from __future__ import annotations

import re

from dbtbus.airflow import dbtbus_run_id
from dbtbus.airflow._run_id import run_id_from_context


def test_deterministic_and_sanitised() -> None:
    a = dbtbus_run_id("shop", "manual__2026-11-21T12:00:00+00:00", -1, "dbt")
    assert a == dbtbus_run_id("shop", "manual__2026-11-21T12:00:00+00:00", -1, "dbt")
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", a)
    assert a.startswith("af-shop-manual__2026-11-21T12_00_00_00_00-dbt-")


def test_parts_keep_runs_apart() -> None:
    ids = {
        dbtbus_run_id("d", "r:1"),
        dbtbus_run_id("d", "r_1"),  # sanitises like r:1, the hash keeps it apart
        dbtbus_run_id("d", "r:1", 0),
        dbtbus_run_id("d", "r:1", 1),
        dbtbus_run_id("d", "r:1", -1, "g"),
        dbtbus_run_id("d2", "r:1"),
    }
    assert len(ids) == 6
    assert "-m3-" in dbtbus_run_id("d", "r", 3)


def test_long_ids_are_capped() -> None:
    run_id = dbtbus_run_id("d" * 300, "r" * 300, -1, "g" * 300)
    assert len(run_id) < 220


def test_from_context() -> None:
    class TI:
        dag_id = "shop"
        run_id = "scheduled__x"
        map_index = 2

    assert run_id_from_context({"ti": TI()}, "dbt") == dbtbus_run_id("shop", "scheduled__x", 2, "dbt")
