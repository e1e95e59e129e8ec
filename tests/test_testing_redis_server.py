from __future__ import annotations

from pathlib import Path

from dbtbus.testing.redis_server import log_tail


def test_log_tail_gives_the_last_lines_of_a_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {i}\n" for i in range(20)))
    assert log_tail(log, 3) == "line 17\nline 18\nline 19"
    assert log_tail(log).splitlines() == [f"line {i}" for i in range(10, 20)]


def test_log_tail_of_a_log_that_cannot_be_read_is_empty(tmp_path: Path) -> None:
    assert log_tail(tmp_path / "never-written.log") == ""
