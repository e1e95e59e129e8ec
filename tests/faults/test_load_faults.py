"""Row 2: 20 concurrent runs on a starved machine, default heartbeat — not one false ProducerLost."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

import dbtbus
from dbtbus.testing.redis_server import RedisServer

from ._outcomes import waiters
from .conftest import DBTBUS, run_id

LOG = Path(__file__).resolve().parents[1] / "cli" / "data" / "shop_build.jsonl"
RUNS = 20
SECONDS = 12.0  # each replay dribbles its log over this long: more than two default heartbeats (5 s)


def _nodes(lines: list[str]) -> list[str]:
    uids: list[str] = []
    for line in lines:
        node = json.loads(line).get("data", {}).get("node_info", {}).get("unique_id")
        if node and node.startswith(("model.", "seed.")) and node not in uids:
            uids.append(node)
    return uids


def _dribble(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdin is not None
    pause = SECONDS / len(lines)
    for line in lines:
        process.stdin.write(line + "\n")
        process.stdin.flush()
        time.sleep(pause)
    process.stdin.close()


def _start(args: list[str]) -> subprocess.Popen[str]:
    pipe = subprocess.PIPE
    return subprocess.Popen(args, stdin=pipe, stdout=pipe, stderr=pipe, text=True)


@pytest.mark.anyio
async def test_twenty_concurrent_runs_under_cpu_starvation_lose_no_producer(redis_server: RedisServer) -> None:
    lines = LOG.read_text().splitlines()
    nodes = _nodes(lines)[:5]
    runs = [run_id(f"load{k}") for k in range(RUNS)]
    burners = [_start([sys.executable, "-c", "while True: pass"]) for _ in range(2)]  # CPU starvation
    replays = [_start([DBTBUS, "publish-log", "-", "--bus", redis_server.url, "--run-id", run]) for run in runs]
    feeders = [threading.Thread(target=_dribble, args=(p, lines), daemon=True) for p in replays]
    try:
        async with dbtbus.connect(redis_server.url) as bus:
            live: dict[str, dict[str, list[str]]] = {}

            async def watch(run: str) -> None:
                live[run] = await waiters(bus, run, nodes, per_node=2, timeout=180)

            async with anyio.create_task_group() as tg:
                for run in runs:
                    tg.start_soon(watch, run)
                await anyio.sleep(0.5)
                for feeder in feeders:
                    feeder.start()
        for process in replays:
            await anyio.to_thread.run_sync(process.wait)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
        for process in replays:
            if process.poll() is None:
                process.kill()
                process.wait()
    async with dbtbus.connect(redis_server.url) as late_bus:
        late = {run: await waiters(late_bus, run, nodes, per_node=2, timeout=30) for run in runs}
    lost = [(run, uid) for run, kinds in live.items() for uid, got in kinds.items() if "producer_lost" in got]
    assert lost == []  # 200 waiters, not one false loss
    assert live == late
    assert all(p.returncode == 0 for p in replays), [p.stderr.read() if p.stderr else "" for p in replays][:2]
