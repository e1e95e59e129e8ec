"""``dbt retry`` is a first-class attempt: real dbt, a failing build, then ``dbt retry`` as attempt 2.

dbt's retry re-runs what failed or was skipped, with the command it retries (``args.which`` of the previous
``run_results.json``) — its own task, its own graph queue. The attempt's RunStarted must carry that graph
and that command's skip rules, and a node skipped again must keep the failure that skipped it.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

import dbtbus
from dbtbus import OutcomeKind
from dbtbus._dbt.rules import SKIP_CHILDREN_ON
from dbtbus.events import NodeResult, NodeStatus, RunFinished, RunStarted
from dbtbus.producer import Producer

from ._helpers import DBT, copy_shop, read_records, shop_args

pytestmark = pytest.mark.dbt

BROKEN = "model.shop.broken"
FAILING_TEST = "test.shop.assert_customers_have_repeat_orders"
RETRIED = {
    BROKEN, "model.shop.broken_child", "model.shop.broken_grandchild", FAILING_TEST,
    "model.shop.customer_ranking", "model.shop.top_customers",
    "test.shop.not_null_customer_ranking_customer_id.86c3d8a1c7",
}

URL = "memory://producer-retry"


@pytest.fixture(scope="module")
def retried(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """attempt 1: a failing ``dbt build``; attempt 2: ``dbt retry`` through the subprocess producer (its
    bootstrap); attempt 3: ``dbt retry`` again, in process."""
    from dbtbus.backends.memory import drop_store

    shop = copy_shop(tmp_path_factory.mktemp("shop-retry"))
    os.environ["DBTBUS_DUCKDB_PATH"] = str(shop / "retry.duckdb")
    try:
        # The subprocesses first: an in-process dbt-duckdb keeps its database file locked afterwards.
        build_args = shop_args(shop, "--vars", "{shop_break: true}")
        first = Producer(URL, run_id="retry").invoke_subprocess(build_args, dbt_executable=DBT)
        retry_args = ["retry", "--project-dir", str(shop), "--profiles-dir", str(shop)]
        second = Producer(URL, run_id="retry", attempt=2).invoke_subprocess(retry_args, dbt_executable=DBT)
        third = Producer(URL, run_id="retry", attempt=3).invoke(retry_args)
    finally:
        os.environ.pop("DBTBUS_DUCKDB_PATH", None)
    yield first, second, third, read_records(URL, "retry")
    drop_store("producer-retry")


def _started(records: list[Any], attempt: int) -> RunStarted:
    mine = [r for r in records if isinstance(r, RunStarted) and r.attempt == attempt]
    assert len(mine) == 2 and mine[0].graph is None  # announced at once, then refined with dbt's graph
    return mine[-1]


@pytest.mark.parametrize("attempt", [2, 3])
def test_a_retry_carries_the_graph_and_skip_rules_of_the_command_it_retries(retried: Any, attempt: int) -> None:
    first, second, third, records = retried
    assert not first.success and first.exit_code == 1
    started = _started(records, attempt)
    assert started.command == "retry"
    assert started.graph is not None and set(started.graph) == RETRIED
    assert started.skip_children_on == SKIP_CHILDREN_ON["build"]  # build's rules: a failing test skips
    result = (second, third)[attempt - 2]
    assert result.exit_code == 1 and set(result.results) == RETRIED


@pytest.mark.parametrize("attempt", [2, 3])
def test_a_node_skipped_again_keeps_its_cause(retried: Any, attempt: int) -> None:
    records = retried[3]
    mine = {r.unique_id: r for r in records if isinstance(r, NodeResult) and r.attempt == attempt}
    assert mine[BROKEN].status is NodeStatus.ERROR and mine[FAILING_TEST].status is NodeStatus.FAIL
    assert mine["model.shop.broken_grandchild"].status is NodeStatus.SKIPPED
    assert mine["model.shop.broken_grandchild"].skip_cause == BROKEN
    assert mine["model.shop.top_customers"].skip_cause == FAILING_TEST
    assert not any(r.status is NodeStatus.NOT_RUN for r in mine.values())


def test_waiters_of_the_retry_get_its_answers(retried: Any) -> None:
    import anyio

    async def main() -> dict[str, Any]:
        async with dbtbus.connect(URL) as bus:
            state = await bus.run_state("retry")
            outcomes = {
                uid: await bus.outcome("retry", uid, timeout=5, min_attempt=3)
                for uid in ("model.shop.top_customers", "model.shop.broken_grandchild", "model.shop.stg_orders")
            }
            return {"state": state, **outcomes}

    got = anyio.run(main)
    top, grandchild = got["model.shop.top_customers"], got["model.shop.broken_grandchild"]
    kept = got["model.shop.stg_orders"]
    assert top.kind is OutcomeKind.UPSTREAM_FAILED and top.cause == FAILING_TEST and top.attempt == 3
    assert grandchild.kind is OutcomeKind.UPSTREAM_FAILED and grandchild.cause == BROKEN
    assert kept.kind is OutcomeKind.SUCCESS and kept.record is not None and kept.record.attempt == 1  # stands
    state = got["state"]
    assert state.attempt == 3 and isinstance(state.ending, RunFinished) and state.ending.attempt == 3
