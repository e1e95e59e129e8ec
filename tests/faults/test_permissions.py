"""Row 5: ACL users. Exactly the documented commands run a whole run; a forbidden prefix fails at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis

import dbtbus
from dbtbus.backends.redis import acl_rule
from dbtbus.testing.redis_server import RedisServer

from ._outcomes import waiters
from .conftest import DBTBUS, run_id, slow_project, start_producer


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[RedisServer]:
    acl = tmp_path / "users.acl"
    acl.write_text(f"user default on nopass ~* &* +@all\nuser tenant on >t-pw {acl_rule('tenant:')}\n")
    directory = tmp_path / "redis"
    directory.mkdir()
    with RedisServer(acl_file=acl, directory=directory) as server:
        yield server


def _url(server: RedisServer, prefix: str) -> str:
    return f"redis://tenant:t-pw@127.0.0.1:{server.port}/0?prefix={prefix}"


async def _keys(server: RedisServer) -> list[bytes]:
    raw = aioredis.Redis.from_url(server.url)
    try:
        return sorted(await raw.keys("*"))
    finally:
        await raw.aclose()


@pytest.mark.anyio
async def test_a_whole_run_as_a_user_with_exactly_the_documented_commands(
    acl_server: RedisServer, tmp_path: Path
) -> None:
    project = slow_project(tmp_path / "p", chains=2, length=2, sleep=0.1)
    run = run_id("acl")
    url = _url(acl_server, "tenant:")
    producer = start_producer(url, run, project, heartbeat=1.0)
    async with dbtbus.connect(url) as bus:
        kinds = await waiters(bus, run, project.nodes, per_node=2)
        report = await anyio.to_thread.run_sync(producer.result)
        assert await bus.list_runs() == [run]
        await bus.expire_run(run, 60)
        await bus.delete_run(run)
    assert report.get("success") is True, report
    assert kinds == {uid: ["success"] * 2 for uid in project.nodes}
    assert "NOPERM" not in report["stderr"]
    assert "permission" not in report["stderr"].lower()


@pytest.mark.anyio
async def test_a_waiter_on_a_forbidden_prefix_gets_permission_denied_at_once(acl_server: RedisServer) -> None:
    async with dbtbus.connect(_url(acl_server, "other:")) as bus:
        # at once: the bus hands BackendRejected to the waiter instead of retrying until the timeout
        kinds = await waiters(bus, run_id("nope"), ["model.a"], per_node=3, timeout=20)
    assert kinds == {"model.a": ["PermissionDenied"] * 3}


@pytest.mark.anyio
async def test_a_producer_on_a_forbidden_prefix_says_it_published_nothing(
    acl_server: RedisServer, tmp_path: Path
) -> None:
    project = slow_project(tmp_path / "p", chains=1, length=2, sleep=0.1)
    run = run_id("nope")
    report = await anyio.to_thread.run_sync(
        lambda: start_producer(_url(acl_server, "other:"), run, project, heartbeat=1.0).result()
    )
    assert report.get("success") is not True, report  # not "success: true" with nothing published
    assert "permission" in f"{report.get('error')} {report.get('exception')}".lower(), report
    assert report["stderr"].count("NOPERM") <= 1  # one clear failure, not 49 retried warnings
    assert await _keys(acl_server) == []


def test_cli_run_on_a_forbidden_prefix_exits_non_zero_with_one_line(acl_server: RedisServer, tmp_path: Path) -> None:
    import subprocess

    project = slow_project(tmp_path / "p", chains=1, length=1, sleep=0.1)
    proc = subprocess.run(
        [DBTBUS, "run", "--bus", _url(acl_server, "other:"), "--run-id", run_id("cli"), "--progress", "none",
         "--", *project.args()],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode != 0, proc
    errors = [line for line in proc.stderr.splitlines() if "permission" in line.lower() or "NOPERM" in line]
    assert len(errors) == 1, proc.stderr[-3000:]
