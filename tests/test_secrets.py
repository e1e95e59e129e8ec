"""A bus password, however it is given, appears in no CLI output, exception, repr or report page.

The forms: ``redis://:pw@host``, ``redis://user:pw@host``, ``?password=pw`` (redis-py reads it too) and, where
Airflow is installed, an Airflow connection's password field. The server asks for the password, so every
command below really used it.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

import dbtbus
import dbtbus.report
from dbtbus.cli import main
from dbtbus.testing import EventFactory, RedisServer, find_redis_server, free_port

SECRET = "s3cret-Pw-7q"
WRONG = "wr0ng-Pw-9z"
LOG = Path(__file__).parent / "cli" / "data" / "shop_build.jsonl"


def _airflow_connection(host: str, port: int, password: str) -> str:
    pytest.importorskip("airflow")
    from dbtbus.airflow._urls import bus_url_from_connection

    class Connection:  # the fields Airflow's Connection has
        conn_id, conn_type, login, extra = "dbtbus_default", "redis", None, None

        def __init__(self) -> None:
            self.host, self.port, self.password = host, port, password

    return bus_url_from_connection(Connection())


#: Each way a user hands dbtbus a password: name -> (host, port, password) -> URL.
FORMS: dict[str, Callable[[str, int, str], str]] = {
    "userinfo": lambda host, port, pw: f"redis://:{pw}@{host}:{port}/0",
    "user and password": lambda host, port, pw: f"redis://default:{pw}@{host}:{port}/0",
    "query": lambda host, port, pw: f"redis://{host}:{port}/0?password={pw}",
    "airflow connection": _airflow_connection,
}


def exception_text(exc: BaseException) -> str:
    """Everything a traceback shows of ``exc``: its repr, its message, and those of its causes."""
    return repr(exc) + "".join(traceback.format_exception(exc))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if find_redis_server() is None:
        pytest.skip("redis-server is not on PATH")
    with RedisServer(password=SECRET, directory=tmp_path_factory.mktemp("secret-redis")) as server:
        yield server


@pytest.fixture(scope="module")
def run_id(server: RedisServer) -> str:
    """A run with a success, a failure and a node it took down, published with the password."""

    async def fabricate() -> None:
        run = await EventFactory(server.url).run("secret-run", {"model.a": [], "model.b": ["model.a"], "model.c": []})
        await run.succeed("model.c")
        await run.fail("model.a", skip_descendants=True)
        await run.finish()

    anyio.run(fabricate)
    return "secret-run"


@pytest.mark.parametrize("form", FORMS)
def test_a_bus_and_its_backend_show_no_password(form: str) -> None:
    url = FORMS[form]("127.0.0.1", 6379, SECRET)
    assert SECRET in url  # (the form really carries it)
    bus = dbtbus.connect(url)
    assert SECRET not in repr(bus) and SECRET not in repr(bus.backend) and SECRET not in str(bus)


@pytest.mark.parametrize(
    "url", [f"redis://:{SECRET}@host:notaport/0", f"redis:{SECRET}@host", f"redis:/:{SECRET}@host:6379/0"]
)
def test_a_url_refused_as_malformed_shows_no_password(url: str) -> None:
    with pytest.raises(dbtbus.ConfigurationError) as info:
        dbtbus.connect(url)
    assert SECRET not in exception_text(info.value)


@pytest.mark.redis
@pytest.mark.parametrize("form", FORMS)
def test_errors_and_log_lines_show_no_password(
    form: str, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = FORMS[form]("127.0.0.1", free_port(), SECRET)
    refused = FORMS[form](server.host, server.port, WRONG)

    async def list_runs(url: str) -> None:
        async with dbtbus.connect(url) as bus:
            await bus.list_runs()

    with pytest.raises(dbtbus.BackendUnavailable) as down:
        anyio.run(list_runs, unreachable)
    assert SECRET not in exception_text(down.value)
    with pytest.raises(dbtbus.AuthenticationFailed) as wrong:
        anyio.run(list_runs, refused)
    assert WRONG not in exception_text(wrong.value)
    with pytest.raises(dbtbus.WaitTimeout) as blocking:  # a reader retries an unreachable backend, and logs it
        dbtbus.wait(unreachable, "r", "model.a", timeout=2)
    assert SECRET not in exception_text(blocking.value)
    assert "is unreachable" in caplog.text and SECRET not in caplog.text and WRONG not in caplog.text


@pytest.mark.redis
@pytest.mark.parametrize("form", FORMS)
def test_cli_output_shows_no_password(
    form: str, server: RedisServer, run_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = FORMS[form](server.host, server.port, SECRET)
    commands = [
        ["runs"],
        ["runs", "--json"],
        ["wait", run_id, "model.c", "--timeout", "5"],
        ["wait", run_id, "model.b", "--timeout", "5", "--json"],
        ["watch", run_id, "--progress", "plain"],
        ["report", run_id, "-o", "-"],
        ["export", run_id, "--run-results", "-"],
        ["publish-log", str(LOG), "--run-id", f"secret-log-{form.replace(' ', '-')}"],
        ["gc", "no-such-run", "--dry-run"],
    ]
    codes = []
    for command in commands:
        codes.append(main([*command, "--bus", url]))
        out, err = capsys.readouterr()
        assert SECRET not in out + err, command
    assert codes.count(0) >= 6, codes  # the commands worked with the password (model.b's wait fails on purpose)
    for broken in (FORMS[form]("127.0.0.1", free_port(), SECRET), FORMS[form](server.host, server.port, WRONG)):
        assert main(["runs", "--bus", broken]) != 0
        out, err = capsys.readouterr()
        assert "dbtbus: error:" in err and SECRET not in out + err and WRONG not in out + err


@pytest.mark.redis
@pytest.mark.parametrize("form", FORMS)
def test_a_report_page_shows_no_password(form: str, server: RedisServer, run_id: str) -> None:
    page = dbtbus.report.report(FORMS[form](server.host, server.port, SECRET), run_id)
    assert "model.a" in page and SECRET not in page
