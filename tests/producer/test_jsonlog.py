"""JSON log lines: parsing, pass-through of non-JSON lines, bounded reading, replay."""

from __future__ import annotations

import io
import logging

import orjson
import pytest

from dbtbus.events import NodeResult, NodeStatus, RunCrashed, RunFinished, RunStarted
from dbtbus.producer import publish_log
from dbtbus.producer._jsonlog import LineParser, read_lines

from ._helpers import read_records


def line(name: str, data: dict[str, object], level: str = "debug", msg: str = "") -> bytes:
    return orjson.dumps({"data": data, "info": {"name": name, "level": level, "msg": msg, "ts": "2026-01-01T00:00:00Z",
                                                "thread": "MainThread", "invocation_id": "i"}}) + b"\n"


def test_non_json_lines_go_to_the_logger(caplog: pytest.LogCaptureFixture) -> None:
    items: list[object] = []
    parser = LineParser(items.append)
    with caplog.at_level(logging.INFO, logger="dbtbus.dbt"):
        parser.feed(b"Please open https://login.example/xyz\n")
        parser.feed(b"{not json\n")
        parser.feed(line("NodeStart", {"node_info": {"unique_id": "model.p.a"}}))
        parser.feed(line("SQLQuery", {"sql": "select 1"}))
        parser.feed(line("RunResultError", {}, level="error", msg="boom"))
    assert [i[0] for i in items] == ["NodeStart"]  # type: ignore[index]
    texts = [r.getMessage() for r in caplog.records]
    assert "Please open https://login.example/xyz" in texts and "{not json" in texts and "boom" in texts
    assert parser.last_error == "boom"


def test_read_lines_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.BytesIO(b"short\n" + b"x" * 5000 + b"\nafter\nlast-without-newline")
    seen: list[bytes] = []
    read_lines(stream, seen.append, max_line=1024)
    assert seen == [b"short\n", b"after\n", b"last-without-newline"]
    assert "longer than 1024" in caplog.text


def test_publish_log_replays_a_log(memory_url: str) -> None:
    lines = [
        line("MainReportVersion", {"version": "=1.11.16"}),
        line("NodeStart", {"node_info": {"unique_id": "model.p.a", "resource_type": "model"}}),
        b"some adapter print\n",
        line("NodeFinished", {"node_info": {"unique_id": "model.p.a", "resource_type": "model"},
                              "run_result": {"status": "success", "message": "OK"}}),
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
