"""Issue #27, item 7: a producer whose clock is 90 s ahead of (or behind) the Redis server's.

The producer runs under libfaketime against a real redis-server; every time a record carries is then 90 s
off. Before, outcomes were right but every time shown was the producer's, unmarked: the report had the run
start after the page was generated, ``export`` wrote ``completed_at`` 88 s after its own ``generated_at``,
``runs`` said "-88s ago" and ``gc --older-than`` measured ages off by the skew (a run finished seconds ago,
its producer 90 s behind, was "older than 60s"). Now readers measure the skew against the server's clock
(the stream ids Redis stamps each entry with) and show every time on it.
"""

from __future__ import annotations

import glob
import html
import json
import os
import re
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import anyio
import pytest

import dbtbus
from dbtbus.events import RunStarted
from dbtbus.testing.redis_server import RedisServer

from .conftest import DBTBUS, SlowProject, run_id, slow_project, start_producer

SKEW = 90.0


def _libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + glob.glob("/usr/lib/faketime/libfaketime.so.1"))
    if not found:
        message = "the clock-skew test runs its producer under libfaketime: apt-get install faketime"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found[0]


def _sql_project(directory: Path) -> SlowProject:
    """Three chained SQL models. Not the fault suite's Python models: they call time.sleep, which fails with
    EINVAL under libfaketime with the monotonic clock left real (and faking that one too hangs waits)."""
    project = slow_project(directory, chains=1, length=3, sleep=0)
    for i, uid in enumerate(project.nodes):
        name = uid.rsplit(".", 1)[1]
        (directory / "models" / f"{name}.py").unlink()
        ref = f"select * from {{{{ ref('c0_{i - 1}') }}}}" if i else "select 1 as id"
        (directory / "models" / f"{name}.sql").write_text(ref + "\n")
    return project


def _cli(*args: str) -> str:
    proc = subprocess.run([DBTBUS, *args], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"dbtbus {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-2000:]}"
    return proc.stdout


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.anyio
@pytest.mark.parametrize("skew", [SKEW, -SKEW], ids=["ahead", "behind"])
async def test_times_are_shown_on_the_servers_clock_whatever_the_producers(
    redis_server: RedisServer, tmp_path: Path, skew: float
) -> None:
    project = _sql_project(tmp_path / "p")
    run = run_id("skew")
    url = redis_server.url
    env = {
        "LD_PRELOAD": _libfaketime(),
        "FAKETIME": f"{skew:+.0f}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # timeouts and sleeps keep their length; only the wall clock is off
    }
    began = time.time()  # this machine's clock is the server's (both on loopback, no faketime)
    producer = start_producer(url, run, project, heartbeat=1.0, env=env)
    report = await anyio.to_thread.run_sync(producer.result)
    assert report.get("success") is True, {**report, "stderr": report["stderr"][-4000:]}
    ended = datetime.now(timezone.utc)

    # The producer's clock really was off: its RunStarted is stamped `skew` away from when Redis stored it.
    async with dbtbus.connect(url) as bus:
        entries = [entry async for entry in bus.history(run)]
        state = await bus.run_state(run)
    first = next(entry for entry in entries if isinstance(entry.record, RunStarted))
    assert isinstance(first.record, RunStarted)
    stored = int(first.cursor.split("-")[0]) / 1000
    assert abs(first.record.started_at.timestamp() - stored - skew) < 5
    assert state.clock_skew is not None and abs(state.clock_skew - skew) < 2, state.clock_skew

    # runs: the skew shown, times on the server's clock, no age from the future.
    (line,) = [json.loads(row) for row in _cli("runs", "--bus", url, "--json").splitlines() if run in row]
    assert abs(line["producer_clock_skew"] - skew) < 2
    for name in ("started_at", "last_activity"):
        at = _utc(line[name])
        assert began - 1 < at.timestamp() <= ended.timestamp() + 1, (name, at, began, ended)
    (row,) = [row for row in _cli("runs", "--bus", url).splitlines() if row.startswith(run)]
    seconds = int(re.search(r"(-?\d+)s ago", row).group(1))  # type: ignore[union-attr]
    assert 0 <= seconds < 60, row

    # export: no phase completes after the file was generated, nor the invocation starts after it.
    out = tmp_path / "run_results.json"
    _cli("export", run, "--bus", url, "--run-results", str(out))
    data = json.loads(out.read_text())
    generated = _utc(data["metadata"]["generated_at"]).timestamp()
    phases = [phase for result in data["results"] for phase in result["timing"]]
    assert phases, data["results"]
    for phase in phases:
        for name in ("started_at", "completed_at"):
            at = _utc(phase[name]).timestamp()
            assert began - 1 < at <= generated, (name, phase, began, data["metadata"])
    if "invocation_started_at" in data["metadata"]:
        assert _utc(data["metadata"]["invocation_started_at"]).timestamp() <= generated

    # report: the run starts before the page is generated, and the page says the producer's clock is off.
    page = tmp_path / "report.html"
    _cli("report", run, "--bus", url, "-o", str(page))
    text = html.unescape(page.read_text())
    started = re.search(r"<b>started</b>([0-9-]+ [0-9:]+) UTC", text)
    generated_at = re.search(r"Generated by dbtbus \S+ at ([0-9-]+ [0-9:]+) UTC", text)
    assert started is not None and generated_at is not None, text[:3000]
    shown = datetime.fromisoformat(started.group(1)).replace(tzinfo=timezone.utc)
    made = datetime.fromisoformat(generated_at.group(1)).replace(tzinfo=timezone.utc)
    assert began - 1 < shown.timestamp() <= made.timestamp(), (shown, began, made)
    assert f"producer's clock {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the bus's" in text

    # gc --older-than measures age on one clock: a run that ended seconds ago is not "older than 60s" (its
    # producer 90 s behind made it so), and is older than 2 s once 2 s have passed (90 s ahead, it never was).
    assert f"would delete {run}" not in _cli("gc", "--older-than", "60s", "--bus", url, "--dry-run")
    await anyio.sleep(max(0.0, 2.5 - (time.time() - ended.timestamp())))
    assert f"would delete {run}" in _cli("gc", "--older-than", "2s", "--bus", url, "--dry-run")
