"""``bench/airflow_footprint.py``'s probes against real Airflow: they measure what they say they do."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def bench_importable() -> Iterator[None]:
    sys.path.insert(0, str(ROOT))
    yield
    sys.path.remove(str(ROOT))


@pytest.fixture(scope="module")
def per_task() -> dict:
    from bench.airflow_footprint import per_task_cost

    return per_task_cost(1)


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


def test_started_sensors_are_every_sensor_of_one_dag_past_the_split_threshold(redis_url: str) -> None:
    # 120 models: render_dbt_task_group's default layout would put them in node DAGs; the probe measures the
    # copy of one whole DAG per trigger, so it renders them in one.
    from bench.airflow_footprint import triggerer_memory

    measured = triggerer_memory(redis_url, 120, 1, started="release")
    assert measured["sensors"] == 121 and measured["all_waiting"]
