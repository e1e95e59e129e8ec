"""Issue #27: tenants stay apart. A prefix ends with ':' so no tenant's prefix prefixes another's, and two
ACL users on 'team1:' and 'team10:' can neither read, list nor delete each other's runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import dbtbus
from dbtbus.backends.redis import acl_rule
from dbtbus.testing import EventFactory
from dbtbus.testing.redis_server import RedisServer

from .conftest import run_id


@pytest.fixture
def two_tenants(tmp_path: Path) -> Iterator[RedisServer]:
    acl = tmp_path / "users.acl"
    acl.write_text(
        "user default on nopass ~* &* +@all\n"
        f"user team1 on >pw1 {acl_rule('team1:')}\n"
        f"user team10 on >pw10 {acl_rule('team10:')}\n"
    )
    directory = tmp_path / "redis"
    directory.mkdir()
    with RedisServer(acl_file=acl, directory=directory) as server:
        yield server


def _url(server: RedisServer, user: str, password: str, prefix: str) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0?prefix={prefix}"


@pytest.mark.parametrize("prefix", ["team1", "dbtbus", "a:b", ""])
def test_a_prefix_without_the_trailing_delimiter_is_refused_with_the_reason(prefix: str) -> None:
    with pytest.raises(dbtbus.ConfigurationError, match=r"must end with ':'.*another's"):
        dbtbus.connect(f"redis://localhost:6379/0?prefix={prefix}")
    with pytest.raises(dbtbus.ConfigurationError, match="must end with ':'"):
        dbtbus.connect("redis://localhost:6379/0", prefix=prefix)
    with pytest.raises(dbtbus.ConfigurationError, match="must end with ':'"):
        acl_rule(prefix)


@pytest.mark.anyio
async def test_tenants_team1_and_team10_cannot_read_list_or_delete_each_others_runs(
    two_tenants: RedisServer,
) -> None:
    server = two_tenants
    runs = {"team1": run_id("t1"), "team10": run_id("t10")}
    own = {
        "team1": _url(server, "team1", "pw1", "team1:"),
        "team10": _url(server, "team10", "pw10", "team10:"),
    }
    # Each tenant runs on its own prefix, as itself.
    for team, url in own.items():
        async with dbtbus.connect(url) as bus:
            fake = await EventFactory(url).run(runs[team], {"model.a": []}, bus=bus)
            await fake.succeed("model.a")
            await fake.finish()
            assert await bus.list_runs() == [runs[team]]  # its own run only
            assert (await bus.wait(runs[team], "model.a", timeout=10)).unique_id == "model.a"
    # Each tenant pointed at the other's prefix, with its own credentials: refused at the first command.
    for team, other in (("team1", "team10"), ("team10", "team1")):
        password = "pw1" if team == "team1" else "pw10"
        trespass = _url(server, team, password, f"{other}:")
        async with dbtbus.connect(trespass) as bus:
            with pytest.raises(dbtbus.PermissionDenied):
                await bus.list_runs()
            with pytest.raises(dbtbus.PermissionDenied):
                await bus.run_state(runs[other])
            with pytest.raises(dbtbus.PermissionDenied):
                await bus.wait(runs[other], "model.a", timeout=5)
            with pytest.raises(dbtbus.PermissionDenied):
                await bus.delete_run(runs[other])
    # Nothing of either tenant was touched.
    for team, url in own.items():
        async with dbtbus.connect(url) as bus:
            assert await bus.list_runs() == [runs[team]]
            assert (await bus.outcome(runs[team], "model.a", timeout=5)).kind is dbtbus.OutcomeKind.SUCCESS
