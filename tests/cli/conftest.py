from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from dbtbus.testing.fake_runs import EventFactory, FakeRun
from dbtbus.testing.projects import copy_shop

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
SHOP_LOG = DATA / "shop_build.jsonl"
SHOP_MANIFEST = DATA / "shop_manifest.json"

GRAPH = {
    "seed.p.raw": [],
    "model.p.a": ["seed.p.raw"],
    "model.p.b": ["model.p.a"],
    "model.p.c": ["seed.p.raw"],
    "test.p.not_null_a": ["model.p.a"],
}


async def play(factory: EventFactory, run_id: str, outcome: str, *, delay: float = 0.0) -> FakeRun:
    """Fabricate a run in which ``model.p.b`` ends with ``outcome``."""
    if delay:
        await anyio.sleep(delay)
    run = await factory.run(run_id, graph=GRAPH, heartbeat_interval=0.2)
    await run.succeed("seed.p.raw")
    if outcome == "success":
        await run.succeed("model.p.a")
        await run.succeed("model.p.b")
        await run.finish()
    elif outcome == "failed":
        await run.succeed("model.p.a")
        await run.fail("model.p.b", message="Catalog Error: nope")
        await run.finish()
    elif outcome == "upstream_failed":
        await run.fail("model.p.a", message="boom")
    elif outcome == "producer_lost":
        await run.succeed("model.p.a")
        await run.lose_producer()
    elif outcome == "not_run":
        await run.succeed("model.p.a")
        await run.crash("killed")
    elif outcome == "running":
        await run.succeed("model.p.a")
    else:
        raise AssertionError(outcome)
    return run


def play_in_thread(url: str, run_id: str, outcome: str, *, delay: float = 0.3) -> threading.Thread:
    """Publish the scenario from another thread (its own event loop), as a producer process would."""

    def target() -> None:
        anyio.run(lambda: play(EventFactory(url), run_id, outcome, delay=delay))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def publish_now(url: str, run_id: str, outcome: str) -> None:
    anyio.run(lambda: play(EventFactory(url), run_id, outcome))


@pytest.fixture
def cli_subprocess() -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dbtbus", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            cwd=ROOT,
            check=False,
        )

    return run


@pytest.fixture(scope="session")
def private_redis_url() -> Iterator[str]:
    """A throw-away redis-server of our own: `runs`/`gc` must never see (or delete) anybody else's runs."""
    from dbtbus.testing.redis_server import RedisServer, find_redis_server

    try:
        import redis  # noqa: F401
    except ImportError:
        pytest.skip("redis-py is not installed")
    executable = find_redis_server()
    if executable is None:
        pytest.skip("no redis-server on PATH")
    server = RedisServer(executable=executable)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def shop_copy(tmp_path: Path) -> Path:
    return copy_shop(tmp_path / "shop")
