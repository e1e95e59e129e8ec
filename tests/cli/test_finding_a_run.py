"""Finding the run and the node (#26): a run the bus has never seen is said so, not waited on in silence;
``--require-run`` fails fast; ``wait`` takes a node's name; a node not in the run gets close names; ``run``
without a bus says that nobody else can see it."""

from __future__ import annotations

import io
import time

import anyio
import orjson
import pytest

from dbtbus.cli import EXIT_CODES, EXIT_NO_RUN, EXIT_RUN_NOT_FOUND, _commands, main
from dbtbus.cli._commands import close_names, notice_unseen, resolve_node, short_names
from dbtbus.cli._progress import RichProgress
from dbtbus.testing.fake_runs import EventFactory

from .conftest import play_in_thread, publish_now

SECRET_URL = "memory://user:hunter2@finding"


@pytest.fixture
def quick_notice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_commands, "UNSEEN_NOTICE_DELAY", 0.2)


# ---------------------------------------------------------------------------------------------- a run never seen


def test_wait_for_a_run_never_seen_says_so_without_the_password(
    quick_notice: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["wait", "no-such-run", "model.p.b", "--bus", SECRET_URL, "--timeout", "1"]) == 7
    captured = capsys.readouterr()
    assert "run 'no-such-run' has not been seen on memory://user:***@finding yet; still waiting" in captured.err
    assert "--require-run" in captured.err
    assert "has not been seen" in captured.out  # the timeout's line says why there was no outcome
    assert "hunter2" not in captured.err + captured.out


def test_watch_of_a_run_never_seen_says_it_waits_for_it_to_start(
    quick_notice: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["watch", "no-such-run", "--bus", SECRET_URL, "--progress", "plain", "--timeout", "1"]) == 7
    captured = capsys.readouterr()
    assert "has not been seen on memory://user:***@finding yet; still waiting" in captured.err
    assert "within 1 s: it has not started" in captured.err
    assert "0/?" not in captured.err + captured.out
    assert "hunter2" not in captured.err + captured.out
    assert main(["watch", "no-such-run", "--bus", SECRET_URL, "--once"]) == 5
    out = capsys.readouterr().out
    assert "not seen on memory://user:***@finding" in out and "0/?" not in out


def test_no_notice_for_a_run_that_exists(
    memory_url: str, quick_notice: None, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_now(memory_url, "r1", "running")
    assert main(["wait", "r1", "model.p.b", "--bus", memory_url, "--timeout", "0.5"]) == 7
    assert main(["watch", "r1", "--bus", memory_url, "--progress", "plain", "--timeout", "0.5"]) == 7
    captured = capsys.readouterr()
    assert "not been seen" not in captured.err + captured.out


def test_notice_comes_only_after_the_delay_and_only_if_still_unseen(capsys: pytest.CaptureFixture[str]) -> None:
    async def never() -> bool:
        return False

    async def seen() -> bool:
        return True

    async def scenario() -> None:
        await notice_unseen(seen, "r", "redis://u:pw@h:6379/0", delay=0)
        assert capsys.readouterr().err == ""
        with anyio.move_on_after(0.1):
            await notice_unseen(never, "r", "redis://u:pw@h:6379/0", delay=1)
        assert capsys.readouterr().err == ""
        await notice_unseen(never, "r", "redis://u:pw@h:6379/0?password=pw2", delay=0)

    anyio.run(scenario)
    err = capsys.readouterr().err
    assert "run 'r' has not been seen on redis://u:***@h:6379/0" in err
    assert "pw" not in err.replace("password=***", "")


def test_require_run_fails_fast_with_its_own_exit_code(memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert "--require-run" in EXIT_CODES[EXIT_NO_RUN] and EXIT_NO_RUN == 10
    began = time.monotonic()
    assert main(["wait", "nope", "model.p.b", "--bus", SECRET_URL, "--require-run"]) == EXIT_NO_RUN
    assert main(["watch", "nope", "--bus", SECRET_URL, "--require-run"]) == EXIT_NO_RUN
    assert main(["watch", "nope", "--bus", SECRET_URL, "--require-run", "--once"]) == EXIT_NO_RUN
    assert time.monotonic() - began < 5  # at once (there is no --timeout: without the flag they would wait)
    err = capsys.readouterr().err
    assert err.count("dbtbus: error: run 'nope' has not been seen on memory://user:***@finding (--require-run)") == 3
    assert "hunter2" not in err
    # a run that exists is waited on as usual
    publish_now(memory_url, "r1", "failed")
    assert main(["wait", "r1", "model.p.b", "--bus", memory_url, "--require-run", "-q"]) == 2
    assert main(["watch", "r1", "--bus", memory_url, "--require-run", "--progress", "plain"]) == 2


def _delete(url: str, run_id: str) -> None:
    import dbtbus

    async def delete() -> None:
        async with dbtbus.connect(url) as bus:
            await bus.delete_run(run_id)

    anyio.run(delete)


def test_a_deleted_run_is_said_deleted_not_unseen(memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue #27 item 4: a run its tombstone says was deleted or expired answers at once with exit code 12 —
    ``wait``, ``watch``, ``watch --once`` and ``--require-run`` alike — not "has not been seen" and a wait."""
    publish_now(memory_url, "r1", "running")
    _delete(memory_url, "r1")
    began = time.monotonic()
    assert main(["wait", "r1", "model.p.b", "--bus", memory_url, "--timeout", "30"]) == EXIT_RUN_NOT_FOUND
    out = capsys.readouterr().out
    assert out.startswith("run not found: run 'r1' is no longer on the bus (a tombstone says so)"), out
    assert main(["watch", "r1", "--bus", memory_url, "--progress", "plain", "--timeout", "30"]) == EXIT_RUN_NOT_FOUND
    assert "deleted or expired (a tombstone says so)" in capsys.readouterr().err
    assert main(["watch", "r1", "--bus", memory_url, "--once"]) == EXIT_RUN_NOT_FOUND
    for command in (["wait", "r1", "model.p.b"], ["watch", "r1"]):
        assert main([*command, "--bus", memory_url, "--require-run"]) == EXIT_RUN_NOT_FOUND
        err = capsys.readouterr().err
        assert "dbtbus: error: run 'r1' is no longer on the bus: it was deleted or expired" in err, err
        assert "has not been seen" not in err
    assert time.monotonic() - began < 10  # at once, each: none waited out its --timeout of 30 s


def test_the_unseen_notice_says_deleted_when_a_tombstone_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    async def never() -> bool:
        return False

    async def buried() -> bool:
        return True

    anyio.run(lambda: notice_unseen(never, "r", "redis://u:pw@h:6379/0", delay=0, gone=buried))
    err = capsys.readouterr().err
    assert "run 'r' on redis://u:***@h:6379/0 was deleted or expired (a tombstone says so)" in err
    assert "has not been seen" not in err


def test_rich_watch_before_the_run_starts_shows_waiting_not_a_count() -> None:
    pytest.importorskip("rich")
    from rich.console import Console

    progress = RichProgress("later", io.StringIO())
    try:
        console = Console(file=io.StringIO(), width=100)
        console.print(progress)
        text = console.file.getvalue()  # type: ignore[attr-defined]
    finally:
        progress.close()
    assert "waiting for run later to start" in text
    assert "0/?" not in text


# ---------------------------------------------------------------------------------------------- run without a bus


def test_run_without_a_bus_says_nobody_else_can_see_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("dbt.cli.main")
    monkeypatch.delenv("DBTBUS_URL", raising=False)
    assert main(["run", "--progress", "none", "--", "build", "--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert "dbtbus: note: no bus given" in err
    assert "memory://" in err and "--bus URL" in err and "DBTBUS_URL" in err


def test_run_with_a_bus_has_no_such_note(memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("dbt.cli.main")
    assert main(["run", "--bus", memory_url, "--progress", "none", "--", "build", "--no-such-flag"]) == 2
    assert "no bus given" not in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- node names

SHOP_LIKE = {
    "seed.p.orders": [],
    "model.p.orders": ["seed.p.orders"],
    "model.p.stg_orders": ["seed.p.orders"],
    "model.p.dim.v2": ["model.p.stg_orders"],
    "source.p.raw.payments": [],
    "test.p.not_null_stg_orders_id.abc123": ["model.p.stg_orders"],
}


def test_short_names_and_resolution() -> None:
    assert short_names("model.p.stg_orders") == {"stg_orders", "p.stg_orders"}
    assert "dim" in short_names("model.p.dim.v2") and "dim.v2" in short_names("model.p.dim.v2")
    assert "not_null_stg_orders_id" in short_names("test.p.not_null_stg_orders_id.abc123")
    assert resolve_node("stg_orders", SHOP_LIKE) == ["model.p.stg_orders"]
    assert resolve_node("p.stg_orders", SHOP_LIKE) == ["model.p.stg_orders"]
    assert resolve_node("model.p.stg_orders", SHOP_LIKE) == ["model.p.stg_orders"]
    assert resolve_node("orders", SHOP_LIKE) == ["model.p.orders", "seed.p.orders"]  # ambiguous
    assert resolve_node("raw.payments", SHOP_LIKE) == ["source.p.raw.payments"]
    assert resolve_node("nope", SHOP_LIKE) == []
    assert close_names("stg_order", SHOP_LIKE)[0] == "model.p.stg_orders"
    assert close_names("model.p.stg_ordres", SHOP_LIKE)[0] == "model.p.stg_orders"
    assert close_names("zzzz", SHOP_LIKE) == []


async def _publish_shop_like(url: str, run_id: str) -> None:
    run = await EventFactory(url).run(run_id, graph=SHOP_LIKE)
    await run.succeed("seed.p.orders")
    await run.succeed("model.p.stg_orders")
    await run.fail("model.p.orders", message="boom")


def test_wait_takes_a_short_name(memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    anyio.run(_publish_shop_like, memory_url, "r1")
    assert main(["wait", "r1", "stg_orders", "--bus", memory_url, "--timeout", "5"]) == 0
    assert capsys.readouterr().out.startswith("success: model.p.stg_orders")
    assert main(["wait", "r1", "p.stg_orders", "--bus", memory_url, "--json", "--timeout", "5"]) == 0
    assert orjson.loads(capsys.readouterr().out)["node"] == "model.p.stg_orders"


def test_wait_with_a_short_name_before_the_run_starts(memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    thread = play_in_thread(memory_url, "later", "failed")  # its graph arrives a moment after the waiter starts
    assert main(["wait", "later", "b", "--bus", memory_url, "--timeout", "20"]) == 2
    thread.join(5)
    assert "model.p.b" in capsys.readouterr().out


def test_ambiguous_short_name_is_a_usage_error_listing_candidates(
    memory_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    anyio.run(_publish_shop_like, memory_url, "r1")
    assert main(["wait", "r1", "orders", "--bus", memory_url, "--timeout", "5"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("dbtbus: note:")]
    assert len(errors) == 1 and errors[0].startswith("dbtbus: error: 'orders' names 2 nodes of run r1")
    assert "model.p.orders" in errors[0] and "seed.p.orders" in errors[0]


def test_node_not_in_the_run_suggests_close_names(memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    anyio.run(_publish_shop_like, memory_url, "r1")
    assert main(["wait", "r1", "model.p.stg_ordres", "--bus", memory_url, "--timeout", "5"]) == 6
    captured = capsys.readouterr()
    assert "not in run" in captured.out
    assert "did you mean model.p.stg_orders" in captured.err
    assert main(["wait", "r1", "stg_ordrs", "--bus", memory_url, "--timeout", "5"]) == 6
    assert "did you mean model.p.stg_orders" in capsys.readouterr().err
    assert main(["wait", "r1", "stg_ordrs", "--bus", memory_url, "--json", "--timeout", "5"]) == 6
    assert orjson.loads(capsys.readouterr().out)["did_you_mean"][0] == "model.p.stg_orders"
