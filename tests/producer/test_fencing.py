"""A superseded producer's appends are fenced (#30): attempt 1 frozen mid-build, attempt 2 takes the run over,
attempt 1 thaws and flushes its pending records before its overdue renewal — none of them is stored.

The producers are real ones (the replay of a recorded ``dbt build`` log: the same normaliser and publishing
engine as ``invoke``), on the memory backend and on a real redis-server.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import dbtbus
from dbtbus.backends.base import Backend
from dbtbus.events import NodeResult, RunStarted, decode
from dbtbus.producer import apublish_log

SHOP_LOG = Path(__file__).parent.parent / "cli" / "data" / "shop_build.jsonl"
LINES = SHOP_LOG.read_bytes().splitlines()
#: Attempt 1 gets this far (its seeds and staging models finished) before its host freezes.
FROZEN_AT = 48
#: ... and dbt, thawed, is still running at this line (its node results so far go out before its ending).
STILL_RUNNING = 100
#: A node attempt 1 finished before it froze, and one it finishes only after it thaws.
BEFORE, AFTER = "model.shop.stg_payments", "model.shop.orders_enriched"


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def url(request: pytest.FixtureRequest, memory_url: str) -> Iterator[str]:
    if request.param == "memory":
        yield memory_url
        return
    from dbtbus.testing.redis_server import RedisServer, find_redis_server

    if find_redis_server() is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set and redis-server is not on PATH", pytrace=False)
        pytest.skip("redis-server is not on PATH")
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the Redis backend runs on asyncio only


class Frozen:
    """Attempt 1's host: its log lines stop at ``FROZEN_AT`` until thawed, and its lease renewals — overdue
    on a thawed host — wait until its thawed appends have been answered (or 5 s), as does the end of its log
    (dbt still running after the thaw: the pending records are flushed as they come, not at the ending)."""

    def __init__(self, backend: Backend) -> None:
        self.thawed = anyio.Event()
        self.renewals = anyio.Event()  # set: renewals go through again
        self.refused: list[BaseException] = []  # what the backend answered attempt 1's appends after the thaw
        self.appended_after_thaw = 0
        real_append, real_renew = backend.append, backend.renew_lease

        async def append(run_id: str, items: Any) -> list[str]:
            try:
                cursors = await real_append(run_id, items)
            except dbtbus.RunClaimed as exc:
                self.refused.append(exc)
                self.renewals.set()
                raise
            if self.thawed.is_set():
                self.appended_after_thaw += len(items)
            return cursors

        async def renew_lease(run_id: str, holder: str, ttl: float) -> bool | None:
            if self.thawed.is_set():
                await self.renewals.wait()
            return await real_renew(run_id, holder, ttl)

        backend.append = append  # type: ignore[method-assign]
        backend.renew_lease = renew_lease  # type: ignore[method-assign]

    async def lines(self) -> AsyncIterator[bytes]:
        for line in LINES[:FROZEN_AT]:
            yield line
        await self.thawed.wait()
        for line in LINES[FROZEN_AT:STILL_RUNNING]:
            yield line
        await self.renewals.wait()  # dbt is still running on the thawed host: its records go out as they come
        for line in LINES[STILL_RUNNING:]:
            yield line

    async def thaw(self) -> None:
        self.thawed.set()
        with anyio.move_on_after(5):  # without fenced appends nothing is refused: the renewal then decides
            await self.renewals.wait()
        self.renewals.set()


async def _records(bus: dbtbus.Bus, run_id: str) -> list[Any]:
    return [decode(e.data) for e in await bus.backend.read(run_id, None, limit=100_000, timeout=0)]


@pytest.mark.anyio
async def test_a_thawed_superseded_producer_stores_nothing_and_stops(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = "frozen-worker"
    caplog.set_level(logging.WARNING, logger="dbtbus.producer")
    async with dbtbus.connect(url) as first_bus, dbtbus.connect(url) as bus:
        assert first_bus.backend.fenced_appends
        frozen = Frozen(first_bus.backend)
        results: dict[int, Any] = {}

        async def attempt_1() -> None:  # a heartbeat of 60 s: its next renewal is 8 s (the longest period) away
            results[1] = await apublish_log(frozen.lines(), first_bus, run_id=run_id, heartbeat_interval=60)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(attempt_1)
                # its records up to the freeze landed (polled: the backend is what tells)
                while await bus.backend.get_node(run_id, BEFORE) is None:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
                # Airflow retries the task elsewhere: attempt 2 takes the run over while attempt 1's lease lives
                lease = await bus.backend.get_lease(run_id)
                assert lease is not None and lease.alive and lease.attempt == 1
                results[2] = await apublish_log(LINES, bus, run_id=run_id, attempt=2)
                await frozen.thaw()
        records = await _records(bus, run_id)
        stored = {uid: await bus.backend.get_node(run_id, uid) for uid in results[2].results}
        outcomes = {uid: await bus.outcome(run_id, uid, timeout=10, include_tests=False) for uid in results[2].results}
        late = await bus.wait(run_id, AFTER, timeout=10)

    second, first = results[2], results[1]
    assert second.rejected is None and not second.crashed, second.error
    # attempt 1 stopped for good, told by its thawed append (its renewal was still overdue)
    assert isinstance(first.rejected, dbtbus.RunClaimed), first
    assert frozen.refused and frozen.appended_after_thaw == 0
    assert "superseded" in str(first.rejected)
    # nothing of attempt 1 after attempt 2's RunStarted
    takeover = next(i for i, r in enumerate(records) if isinstance(r, RunStarted) and r.attempt == 2)
    assert [r for r in records[takeover:] if getattr(r, "attempt", None) == 1] == []
    assert any(isinstance(r, NodeResult) and r.attempt == 1 and r.unique_id == BEFORE for r in records[:takeover])
    # every node's durable record and every waiter's answer is attempt 2's
    assert {uid: decode(data).attempt for uid, data in stored.items() if data is not None} == dict.fromkeys(
        second.results, 2
    )
    assert {uid: o.attempt for uid, o in outcomes.items()} == dict.fromkeys(second.results, 2)
    assert late.attempt == 2
    # one line says so, and it names producers, not secrets
    rejected = [r for r in caplog.records if "rejected run" in r.getMessage()]
    assert len(rejected) == 1 and "superseded" in rejected[0].getMessage()
    assert "password" not in rejected[0].getMessage()

