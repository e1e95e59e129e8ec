"""Replaying a dbt JSON log as a run: what the replay publishes, how it ends, how it reads its source."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import anyio
import orjson
import pytest

import dbtbus
from dbtbus._dbt.graph import add_test_edges, children_index, descendants, graph_from_manifest
from dbtbus.events import NodeResult, NodeStatus, RunCrashed, RunFinished, RunStarted
from dbtbus.producer import apublish_log, publish_log

from ._helpers import read_records, started_of


def line(name: str, data: dict[str, object], level: str = "debug", msg: str = "") -> bytes:
    return (
        orjson.dumps(
            {
                "data": data,
                "info": {
                    "name": name,
                    "level": level,
                    "msg": msg,
                    "ts": "2026-01-01T00:00:00Z",
                    "thread": "MainThread",
                    "invocation_id": "i",
                },
            }
        )
        + b"\n"
    )


def test_publish_log_replays_a_log(memory_url: str) -> None:
    lines = [
        line("MainReportVersion", {"version": "=1.11.16"}),
        line("NodeStart", {"node_info": {"unique_id": "model.p.a", "resource_type": "model"}}),
        b"some adapter print\n",
        line(
            "NodeFinished",
            {
                "node_info": {"unique_id": "model.p.a", "resource_type": "model"},
                "run_result": {"status": "success", "message": "OK"},
            },
        ),
        line("CommandCompleted", {"success": True, "elapsed": 1.5}),
    ]
    result = publish_log(lines, memory_url, run_id="replay")
    assert result.success and result.counts == {"success": 1}
    records = read_records(memory_url, "replay")
    assert isinstance(records[0], RunStarted) and records[0].producer.kind == "log" and records[0].graph is None
    assert isinstance(records[-1], RunFinished) and records[-1].success and records[-1].elapsed == 1.5
    (res,) = [r for r in records if isinstance(r, NodeResult)]
    assert res.status is NodeStatus.SUCCESS and res.message == "OK"


def test_a_truncated_log_ends_as_crashed(memory_url: str) -> None:
    lines = [line("NodeStart", {"node_info": {"unique_id": "model.p.a", "resource_type": "model"}})]
    result = publish_log(lines, memory_url, run_id="cut")
    assert result.crashed
    assert isinstance(read_records(memory_url, "cut")[-1], RunCrashed)


# ------------------------------------------------------------------------------------- replaying a recorded run

DATA = Path(__file__).parent.parent / "cli" / "data"
SHOP_LOG = DATA / "shop_build.jsonl"
SHOP_MANIFEST = DATA / "shop_manifest.json"
FAILING_TEST = "test.shop.assert_customers_have_repeat_orders"


def test_a_replay_learns_its_command_from_the_log(memory_url: str) -> None:
    publish_log(SHOP_LOG.read_bytes().splitlines(), memory_url, run_id="learn")
    started = started_of(read_records(memory_url, "learn"))
    assert started.command == "build"
    assert started.args[:1] == ("build",) and "--project-dir" in started.args
    assert started.skip_children_on >= {NodeStatus.FAIL, NodeStatus.ERROR}


def test_build_test_edges_are_added_to_a_manifest_graph() -> None:
    graph = add_test_edges(graph_from_manifest(SHOP_MANIFEST))
    ranking = graph["model.shop.customer_ranking"]
    # dbt's rule: every test whose dependencies are all upstream of the node becomes its parent.
    assert FAILING_TEST in ranking.parents
    assert "test.shop.not_null_customer_ranking_customer_id.86c3d8a1c7" not in ranking.parents  # tests ranking itself
    # top_customers waits for it too, through ranking: the edge dbt adds straight to it is implied
    assert "model.shop.top_customers" in descendants(children_index(graph), FAILING_TEST)
    assert FAILING_TEST not in graph["model.shop.top_customers"].parents
    assert graph[FAILING_TEST].parents == graph_from_manifest(SHOP_MANIFEST)[FAILING_TEST].parents  # tests unchanged


def test_a_replay_with_a_manifest_names_the_failing_test_as_the_cause(memory_url: str) -> None:
    outcomes: dict[str, object] = {}

    def wait() -> None:
        for uid in ("model.shop.customer_ranking", "model.shop.top_customers"):
            try:
                dbtbus.wait(memory_url, "cause", uid, timeout=30)
            except dbtbus.WaitError as exc:
                outcomes[uid] = exc

    publish_log(SHOP_LOG.read_bytes().splitlines(), memory_url, run_id="cause", graph=SHOP_MANIFEST)
    wait()
    for uid in ("model.shop.customer_ranking", "model.shop.top_customers"):
        error = outcomes[uid]
        assert isinstance(error, dbtbus.UpstreamFailed)
        assert error.cause == FAILING_TEST


def test_a_paused_log_keeps_its_producer_alive(memory_url: str) -> None:
    """A pod log that goes quiet mid-run: heartbeats continue, waiters do not see ProducerLost."""
    lines = SHOP_LOG.read_bytes().splitlines()
    half = len(lines) // 2

    async def paused() -> AsyncIterator[bytes]:
        for line in lines[:half]:
            yield line
        await anyio.sleep(1.5)  # 7 heartbeat intervals of silence
        for line in lines[half:]:
            yield line

    async def main() -> object:
        async with dbtbus.connect(memory_url) as bus, anyio.create_task_group() as tg:
            tg.start_soon(partial(apublish_log, paused(), bus, run_id="paused", heartbeat_interval=0.2))
            return await bus.wait("paused", "model.shop.customers_summary", timeout=30)

    record = anyio.run(main)
    assert isinstance(record, NodeResult) and record.status is NodeStatus.SUCCESS


def test_a_blocking_source_is_read_on_a_thread(memory_url: str) -> None:
    """A pipe (like ``dbt ... | dbtbus publish-log -``) that delivers slowly never stalls the event loop."""
    lines = SHOP_LOG.read_bytes().splitlines(keepends=True)
    read_fd, write_fd = os.pipe()

    def writer() -> None:
        with os.fdopen(write_fd, "wb") as pipe:
            for i, line in enumerate(lines):
                pipe.write(line)
                if i % 200 == 0:
                    pipe.flush()
                    time.sleep(0.3)

    async def main() -> object:
        with os.fdopen(read_fd, "rb") as source:
            async with dbtbus.connect(memory_url) as bus, anyio.create_task_group() as tg:
                tg.start_soon(partial(apublish_log, source, bus, run_id="piped", heartbeat_interval=0.2))
                outcomes = await bus.wait_many(
                    "piped",
                    ["model.shop.customers_summary", "model.shop.top_customers"],
                    timeout=60,
                    return_exceptions=True,
                )
                tg.cancel_scope.cancel()
        return outcomes

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        outcomes = anyio.run(main)
    finally:
        thread.join(30)
    assert isinstance(outcomes, dict)
    assert outcomes["model.shop.customers_summary"].status is NodeStatus.SUCCESS  # type: ignore[union-attr]
    skipped = outcomes["model.shop.top_customers"]  # a skip without a named cause is still an upstream failure
    assert isinstance(skipped, dbtbus.UpstreamFailed) and skipped.cause == ""


@pytest.mark.parametrize("source_kind", ["blocking", "async"])
def test_a_source_that_fails_leaves_the_run_to_its_liveness_not_to_an_ending(memory_url: str, source_kind: str) -> None:
    """The log's source broke (a pod's log stream, a file on a lost mount), not dbt: the error comes back as
    itself, what was read is published, and no end record claims the pending nodes never ran."""
    read = [
        line("MainReportVersion", {"version": "=1.11.16"}),
        line("NodeStart", {"node_info": {"unique_id": "model.p.a", "resource_type": "model"}}),
        line(
            "NodeFinished",
            {
                "node_info": {"unique_id": "model.p.a", "resource_type": "model"},
                "run_result": {"status": "success", "message": "OK"},
            },
        ),
        line("NodeStart", {"node_info": {"unique_id": "model.p.b", "resource_type": "model"}}),
    ]

    def blocking() -> Iterator[bytes]:
        yield from read
        raise OSError("the log stream broke")

    async def asynchronous() -> AsyncIterator[bytes]:
        for item in read:
            yield item
        raise OSError("the log stream broke")

    async def main() -> tuple[object, object, BaseException]:
        async with dbtbus.connect(memory_url) as bus:
            source = blocking() if source_kind == "blocking" else asynchronous()
            with pytest.raises(OSError, match="the log stream broke") as info:
                await apublish_log(source, bus, run_id="broken", heartbeat_interval=0.2)
            assert await bus.backend.get_lease("broken") is None  # released: nobody claims to be producing
            done = await bus.wait("broken", "model.p.a", timeout=5)
            try:
                pending: object = await bus.wait("broken", "model.p.b", timeout=10)
            except dbtbus.WaitError as exc:
                pending = exc
            return done, pending, info.value

    done, pending, error = anyio.run(main)
    assert type(error) is OSError
    assert isinstance(done, NodeResult) and done.status is NodeStatus.SUCCESS
    assert isinstance(pending, dbtbus.ProducerLost)
    records = read_records(memory_url, "broken")
    assert not [r for r in records if isinstance(r, (RunFinished, RunCrashed))]
    assert [r.unique_id for r in records if isinstance(r, NodeResult)] == ["model.p.a"]


def test_a_blocking_source_keeps_the_loop_responsive(memory_url: str) -> None:
    read_fd, write_fd = os.pipe()
    first = SHOP_LOG.read_bytes().splitlines(keepends=True)[:50]

    async def main() -> int:
        ticks = 0
        with os.fdopen(read_fd, "rb") as source:
            async with dbtbus.connect(memory_url) as bus, anyio.create_task_group() as tg:
                tg.start_soon(partial(apublish_log, source, bus, run_id="quiet", heartbeat_interval=0.2))
                for _ in range(10):  # the source is silent: the loop must still run other tasks
                    await anyio.sleep(0.05)
                    ticks += 1
                lease = await bus.backend.get_lease("quiet")
                assert lease is not None and lease.alive
                with os.fdopen(write_fd, "wb") as pipe:
                    pipe.writelines(first)
        return ticks

    assert anyio.run(main) == 10
