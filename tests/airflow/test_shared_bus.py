"""One bus per event loop and URL, shared by every trigger of a triggerer."""

from __future__ import annotations

import uuid

import anyio
import pytest
from airflow.triggers.base import TaskSuccessEvent, TriggerEvent

from dbtbus.airflow import DbtNodeTrigger, _shared_bus
from dbtbus.airflow._shared_bus import shared_bus
from dbtbus.events import NodeResult, NodeStatus

from ._triggers import first_event, started


@pytest.mark.anyio
async def test_triggers_in_one_loop_share_one_bus() -> None:
    """A triggerer runs many triggers in one event loop: they share one bus (one reader per run)."""
    url = f"memory://trig-{uuid.uuid4().hex}"
    async with shared_bus(url) as first, shared_bus(url) as second:
        assert first is second
        await first.publish([started("r"), NodeResult(run_id="r", unique_id="model.p.a", status=NodeStatus.SUCCESS)])
        await first.renew_lease("r", "t", 30)
        results: list[TriggerEvent] = []
        async with anyio.create_task_group() as tg:

            async def one(uid: str) -> None:
                results.append(await first_event(DbtNodeTrigger(url, "r", uid, timeout=5)))

            tg.start_soon(one, "model.p.a")
            tg.start_soon(one, "model.p.b")
            await anyio.sleep(0.2)
            await first.publish(NodeResult(run_id="r", unique_id="model.p.b", status=NodeStatus.SUCCESS))
        assert all(isinstance(r, TaskSuccessEvent) for r in results) and len(results) == 2
        assert len([k for k in _shared_bus._SHARED if k[1] == url]) == 1
