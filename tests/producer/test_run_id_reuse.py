"""A run id names one run: producing an attempt the bus already holds (say, running the README's producer
twice) is refused before anything is published, instead of mixing a new run into the old one's records (#26)."""

from __future__ import annotations

from pathlib import Path

import pytest

import dbtbus
from dbtbus.events import RunStarted
from dbtbus.producer import Producer, publish_log

from ._helpers import copy_shop, read_records, shop_args

SHOP_LOG = Path(__file__).parent.parent / "cli" / "data" / "shop_build.jsonl"


def test_replaying_into_a_finished_runs_id_is_refused_and_the_old_run_untouched(memory_url: str) -> None:
    lines = SHOP_LOG.read_bytes().splitlines()
    first = publish_log(lines, memory_url, run_id="once")
    assert not first.crashed
    before = read_records(memory_url, "once")
    second = publish_log(lines, memory_url, run_id="once")
    assert second.crashed
    assert "already has attempt 1" in str(second.error) and "use a new run id" in str(second.error)
    assert read_records(memory_url, "once") == before  # nothing of the second run was published
    # a later attempt of the run is what a retry produces: that is still allowed
    third = publish_log(lines, memory_url, run_id="once", attempt=2)
    assert not third.crashed
    started = [r for r in read_records(memory_url, "once") if isinstance(r, RunStarted)]
    assert {r.attempt for r in started} == {1, 2}


@pytest.mark.dbt
def test_a_second_producer_after_the_first_finished_raises_run_claimed(memory_url: str, tmp_path: Path) -> None:
    shop = copy_shop(tmp_path / "shop")
    args = [*shop_args(shop), "--select", "resource_type:seed", "--quiet"]
    args[0] = "seed"
    env_path = str(tmp_path / "shop.duckdb")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DBTBUS_DUCKDB_PATH", env_path)
        assert Producer(memory_url, run_id="twice").invoke(args).success
        before = read_records(memory_url, "twice")
        with pytest.raises(dbtbus.RunClaimed, match="already has attempt 1"):
            Producer(memory_url, run_id="twice").invoke(args)
    assert read_records(memory_url, "twice") == before
