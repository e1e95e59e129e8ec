"""``bench/airflow_footprint.py``'s per-task probe against real Airflow: it measures what it says it does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def per_task() -> dict:
    sys.path.insert(0, str(ROOT))
    try:
        from bench.airflow_footprint import per_task_cost

        return per_task_cost(1)
    finally:
        sys.path.remove(str(ROOT))


def test_both_sides_measure_the_same_number_of_tasks_in_dags_of_50(per_task: dict) -> None:
    for side in ("floor", "dbtbus"):
        assert per_task[side]["tasks"] == 200 and per_task[side]["dags"] == 4, side
        for key in ("build_us", "serialize_us", "deserialize_us", "deserialize_cached_us", "bytes"):
            assert per_task[side][key]["median"] > 0, (side, key)


def test_a_node_task_serializes_to_little_more_than_a_trivial_task(per_task: dict) -> None:
    # Each trigger's workload carries its whole DAG: the bytes of a node task are paid once per task of its
    # DAG in the triggerer. Deterministic, so a bound and not a timing.
    floor, mine = per_task["floor"]["bytes"]["median"], per_task["dbtbus"]["bytes"]["median"]
    assert floor < mine <= 1200


def test_the_page_block_names_both_and_their_ratio(per_task: dict) -> None:
    from bench.airflow_footprint import per_task_lines

    text = "\n".join(per_task_lines(per_task))
    assert "floor: trivial" in text and "dbtbus node task" in text and "dbtbus ÷ floor" in text

