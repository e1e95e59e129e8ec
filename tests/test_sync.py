"""The blocking twins (dbtbus/_sync.py): dbtbus.wait and dbtbus.wait_many, for code without an event loop."""

from __future__ import annotations

import threading

import anyio
import pytest

import dbtbus
from dbtbus import DbtBusError, NodeNotInRun, WaitTimeout

from ._records import DIAMOND, RUN, result, started

pytestmark = pytest.mark.anyio


def test_wait_sync_from_a_plain_thread(memory_url: str) -> None:
    def produce() -> None:
        async def main() -> None:
            async with dbtbus.connect(memory_url) as bus:
                await anyio.sleep(0.1)
                await bus.renew_lease(RUN, "test-producer", ttl=60)
                await bus.publish([started(DIAMOND), result("seed.s", execution_time=0.1)])

        anyio.run(main)

    thread = threading.Thread(target=produce)
    thread.start()
    record = dbtbus.wait(memory_url, RUN, "seed.s", timeout=5)
    thread.join()
    assert record.execution_time == 0.1
    with pytest.raises(NodeNotInRun):
        dbtbus.wait(memory_url, RUN, "model.nope", timeout=5)
    got = dbtbus.wait_many(memory_url, RUN, ["seed.s", "model.a"], timeout=0.1, return_exceptions=True)
    assert isinstance(got["model.a"], WaitTimeout)


async def test_wait_sync_inside_an_event_loop_is_a_clear_error(memory_url: str) -> None:
    with pytest.raises(DbtBusError, match="inside an event loop"):
        dbtbus.wait(memory_url, RUN, "seed.s", timeout=1)


async def test_a_blocking_twin_inside_an_event_loop_names_its_coroutine(memory_url: str) -> None:
    import dbtbus.export
    import dbtbus.report

    with pytest.raises(DbtBusError, match=r"report\(\) blocks .* use 'await dbtbus.report.areport"):
        dbtbus.report.report(memory_url, RUN)
    with pytest.raises(DbtBusError, match=r"export_run_results\(\) blocks .* use 'await dbtbus.export.aexport_run"):
        dbtbus.export.export_run_results(memory_url, RUN)
