"""dbt's JSON log lines: parsed one at a time, bounded, read off a blocking source on a thread."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from functools import partial

import anyio
import pytest

from dbtbus.producer._lines import LineParser, read_lines, read_on_a_thread

from .test_replay import line


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


def test_a_threaded_source_hands_over_every_line_in_order_within_its_buffer() -> None:
    read: list[int] = []
    handled: list[bytes | str] = []

    def source() -> Iterator[bytes]:
        for i in range(5_000):
            read.append(i)
            if i % 1_000 == 999:
                time.sleep(0.05)  # a pause: the reader sleeps and must be woken for the next line
            yield b"%d" % i

    async def handle(line: bytes | str) -> None:
        assert len(read) - len(handled) <= 33  # the thread never runs more than the buffer (+ the line in hand) ahead
        handled.append(line)
        if len(handled) % 500 == 0:
            await anyio.sleep(0.01)  # a slow consumer: the thread must wait, not fill memory

    anyio.run(partial(read_on_a_thread, source(), handle, buffer=32))
    assert handled == [b"%d" % i for i in range(5_000)]


def test_a_threaded_source_that_fails_fails_the_read_and_stop_ends_it() -> None:
    def broken() -> Iterator[bytes]:
        yield b"one"
        raise OSError("the pipe broke")

    handled: list[bytes | str] = []

    async def collect(line: bytes | str) -> None:
        handled.append(line)

    with pytest.raises(OSError, match="the pipe broke") as info:
        anyio.run(read_on_a_thread, broken(), collect)
    assert type(info.value) is OSError  # itself, not wrapped in a task group's exception group
    assert handled == [b"one"]  # what was read before the failure is handled first
    seen: list[bytes | str] = []

    async def keep(line: bytes | str) -> None:
        seen.append(line)

    endless = (b"x" for _ in iter(int, 1))
    anyio.run(partial(read_on_a_thread, endless, keep, stop=lambda: len(seen) >= 100))
    assert len(seen) == 100
