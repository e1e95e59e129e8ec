"""Issue #27: what is shown is safe. Run ids with control characters are refused at publish; the HTML report
keeps a hostile node message inside its data and caps every long text it renders."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest

import dbtbus
from dbtbus.events import RunStarted, check_run_id
from dbtbus.producer import Producer
from dbtbus.report import areport
from dbtbus.testing import EventFactory
from dbtbus.testing.redis_server import RedisServer

from .conftest import run_id

HOSTILE = ["nightly\n2026-01-01 INFO all good", "a\rb", "esc\x1b[31mred", "tab\there", "nul\x00", "bidi\u202eevil",
           "line\u2028sep", "del\x7f", ""]  # fmt: skip


@pytest.mark.parametrize("bad", HOSTILE)
def test_a_run_id_with_control_characters_is_refused_by_the_one_check(bad: str) -> None:
    with pytest.raises(dbtbus.InvalidRunId):
        check_run_id(bad)
    with pytest.raises(dbtbus.InvalidRunId):
        Producer("memory://refused", bad)


@pytest.mark.anyio
async def test_the_bus_refuses_to_publish_under_a_hostile_run_id_and_stores_nothing(
    redis_server: RedisServer,
) -> None:
    good = run_id("fine")
    assert check_run_id(good) == good
    async with dbtbus.connect(redis_server.url) as bus:
        for bad in HOSTILE:
            record = RunStarted(run_id=bad, producer=dbtbus.ProducerInfo(id="p", host="h", pid=1))
            with pytest.raises(dbtbus.InvalidRunId, match="run id"):
                await bus.publish(record)
        assert await bus.list_runs() == []


def _script_data(page: str) -> str:
    match = re.search(r'<script type="application/json" id="nodes">(.*?)</script>', page, re.S)
    assert match is not None
    return match.group(1)


@pytest.mark.anyio
async def test_the_report_escapes_a_hostile_message_and_caps_a_one_mib_error(redis_server: RedisServer) -> None:
    run = run_id("shown")
    hostile = "boom <!--<script> </script><script>alert(1)</script> & done"
    huge = "E" * 2**20
    async with dbtbus.connect(redis_server.url) as bus:
        fake = await EventFactory(redis_server.url).run(run, {"model.a": [], "model.b": [], "model.c": []}, bus=bus)
        now = datetime.now(timezone.utc)
        timing = {"started_at": now, "finished_at": now + timedelta(seconds=1), "thread": "Thread-1"}
        await fake.fail("model.a", message=hostile, **timing)
        await fake.fail("model.b", message=huge, **timing)
        await fake.crash(error="crashed: " + huge)
        page = await areport(bus, run)
    data = _script_data(page)
    # Nothing in the embedded JSON can end the script element or open a comment state inside it.
    assert "<" not in data and ">" not in data
    rows = {row["u"]: row for row in json.loads(data)}
    assert rows["model.a"]["m"] == hostile  # the message round-trips intact
    # The page has exactly the script elements of the template: the message did not start one.
    assert page.count("<script") == 2, page.count("<script")
    assert "alert(1)</script>" not in page
    # A 1 MiB error is never printed whole (it appears as a failure and as the crash).
    assert len(page) < 200_000, len(page)
    assert "E" * 4001 not in page
    assert "more characters not shown" in page
