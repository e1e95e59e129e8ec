"""dbtbus's pytest plugin, run the way users run it: in a fresh pytest (pytester, subprocess)."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "testing.md"
SHOP_LOG = ROOT / "tests" / "cli" / "data" / "shop_build.jsonl"
SHOP_MANIFEST = ROOT / "tests" / "cli" / "data" / "shop_manifest.json"

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
"""


def _docs_block(marker: str) -> str:
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {re.escape(marker)} [^>]*-->\s*(?:<!--[^>]*-->\s*)*```python\n(.*?)```", text, re.S)
    assert match is not None, f"no python block after <!-- {marker} ... --> in docs/testing.md"
    return match.group(1)


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makeini(INI)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", *args, timeout=120)


def _all_passed(result: pytest.RunResult, at_least: int) -> None:
    """Every test passed (anyio's default ``anyio_backend`` may run each on asyncio and trio)."""
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= at_least, outcomes
    assert set(outcomes) <= {"passed", "warnings", "warning"}, outcomes


def test_docs_example_test_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_docs_example=_docs_block("dbtbus:example-test"))
    result = _run(pytester)
    _all_passed(result, 3)


def test_docs_pytest_asyncio_example_passes_in_strict_mode(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_asyncio")
    pytester.makepyfile(test_docs_asyncio=_docs_block("dbtbus:example-test-asyncio"))
    result = _run(pytester, "-p", "asyncio", "-o", "asyncio_mode=strict")
    result.assert_outcomes(passed=1)


def test_bus_fixture_under_pytest_asyncio_auto_mode(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_asyncio")
    pytester.makepyfile(
        test_auto="""
        import pytest
        import dbtbus

        async def test_upstream_failed(dbtbus_bus, dbtbus_events):
            run = await dbtbus_events.run("r1", graph={"model.a": [], "model.b": ["model.a"], "model.c": []})
            await run.fail("model.a")
            with pytest.raises(dbtbus.UpstreamFailed):
                await dbtbus_bus.wait("r1", "model.b", timeout=5)
            await run.lose_producer()
            with pytest.raises(dbtbus.ProducerLost):
                await dbtbus_bus.wait("r1", "model.c", timeout=5)

        async def test_second_test_gets_a_fresh_store(dbtbus_bus):
            assert await dbtbus_bus.list_runs() == []
        """
    )
    result = _run(pytester, "-p", "asyncio", "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=2)


EVERY_OUTCOME = """
import pytest
import dbtbus
from dbtbus.events import NodeStatus

GRAPH = {
    "seed.s": [],
    "model.a": ["seed.s"],
    "model.b": ["model.a"],
    "model.c": ["model.b"],
    "test.t": ["model.a"],
    "model.d": [],
    "model.e": [],
}


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


@pytest.mark.anyio
async def test_success_warn_and_failure_with_skip_cause(dbtbus_bus, dbtbus_events):
    run = await dbtbus_events.run("r", graph=GRAPH)
    assert (await run.succeed("seed.s")).status is NodeStatus.SUCCESS
    await run.warn("test.t")
    assert (await dbtbus_bus.wait("r", "test.t", timeout=5)).status is NodeStatus.WARN
    published = await run.fail("model.a", message="boom", skip_descendants=True)
    assert [r.unique_id for r in published] == ["model.a", "model.b", "test.t", "model.c"][: len(published)]
    with pytest.raises(dbtbus.NodeFailed, match="boom"):
        await dbtbus_bus.wait("r", "model.a", timeout=5)
    with pytest.raises(dbtbus.UpstreamFailed) as caught:
        await dbtbus_bus.wait("r", "model.c", timeout=5)
    assert caught.value.cause == "model.a"
    assert caught.value.record is not None and caught.value.record.skip_cause == "model.a"
    await run.not_run("model.d")
    with pytest.raises(dbtbus.NodeNotRun):
        await dbtbus_bus.wait("r", "model.d", timeout=5)
    with pytest.raises(dbtbus.NodeNotInRun):
        await dbtbus_bus.wait("r", "model.zzz", timeout=5)
    with pytest.raises(dbtbus.WaitTimeout):
        await dbtbus_bus.wait("r", "model.e", timeout=0.2)
    finished = await run.finish()
    assert finished.success is False and finished.exit_code == 1
    with pytest.raises(dbtbus.NodeNotRun):
        await dbtbus_bus.wait("r", "model.e", timeout=5)
    assert run.state.finished and run.state.counts()["error"] == 1


@pytest.mark.anyio
async def test_crash_and_lost_producer(dbtbus_bus, dbtbus_events):
    crashed = await dbtbus_events.run("crashed", graph=GRAPH)
    await crashed.crash("SIGKILL")
    with pytest.raises(dbtbus.NodeNotRun, match="crashed: SIGKILL"):
        await dbtbus_bus.wait("crashed", "model.a", timeout=5)
    lost = await dbtbus_events.run("lost", graph=GRAPH, heartbeat_interval=0.2)
    await lost.heartbeat()
    await lost.succeed("seed.s")
    waiter_result = []

    async def waiter():
        try:
            await dbtbus_bus.wait("lost", "model.a", timeout=10)
        except dbtbus.ProducerLost as exc:
            waiter_result.append(exc)

    import anyio
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.3)
        assert not waiter_result  # the lease is alive: still waiting
        await lost.lose_producer()
    assert isinstance(waiter_result[0], dbtbus.ProducerLost)


@pytest.mark.anyio
async def test_run_all_and_run_command(dbtbus_bus, dbtbus_events):
    run = await dbtbus_events.run("r", graph=GRAPH, command="run")
    await run.run_all({"model.b": "fail", "model.d": "warn", "model.e": "not_run"})
    results = await dbtbus_bus.wait_many("r", list(GRAPH), return_exceptions=True, timeout=5)
    assert results["seed.s"].ok and results["model.d"].ok
    assert isinstance(results["model.b"], dbtbus.NodeFailed)
    assert isinstance(results["model.c"], dbtbus.UpstreamFailed)
    assert isinstance(results["model.e"], dbtbus.NodeNotRun)
    assert [type(r).__name__ for r in run.records][0] == "RunStarted"
    assert type(run.records[-1]).__name__ == "RunFinished"


@pytest.mark.anyio
async def test_an_explicit_bus_and_url(dbtbus_bus_factory, dbtbus_events, dbtbus_url):
    async with dbtbus_bus_factory("memory://elsewhere") as other:
        run = await dbtbus_events.run("r", graph={"model.a": []}, bus=other)
        await run.succeed("model.a")
        assert (await other.wait("r", "model.a", timeout=5)).ok
        await other.delete_run("r")
    async with dbtbus_bus_factory() as mine:
        assert await mine.list_runs() == []
    assert dbtbus_url.startswith("memory://dbtbus-test-")


def test_run_ids_are_unique(dbtbus_run_id):
    assert dbtbus_run_id.startswith("test-test-run-ids-are-unique-")


@pytest.mark.anyio
async def test_graph_values_must_be_lists(dbtbus_events):
    with pytest.raises(TypeError):
        await dbtbus_events.run("r", graph={"model.b": "model.a"})
"""


def test_every_fabricated_outcome_on_asyncio_and_trio(pytester: pytest.Pytester) -> None:
    pytest.importorskip("trio")
    pytester.makepyfile(test_outcomes=EVERY_OUTCOME)
    result = _run(pytester)
    result.assert_outcomes(passed=11)


def test_replay_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_replay=f"""
        import pytest
        import dbtbus

        @pytest.mark.anyio
        async def test_replayed_run(dbtbus_bus, dbtbus_replay):
            run_id = await dbtbus_replay({str(SHOP_LOG)!r}, graph={str(SHOP_MANIFEST)!r}, args=["build"])
            assert run_id.startswith("replay-")
            assert (await dbtbus_bus.wait(run_id, "model.shop.orders_enriched", timeout=5)).ok
            with pytest.raises(dbtbus.NodeFailed):
                await dbtbus_bus.wait(run_id, "test.shop.assert_customers_have_repeat_orders", timeout=5)
            with pytest.raises(dbtbus.UpstreamFailed):
                await dbtbus_bus.wait(run_id, "model.shop.top_customers", timeout=5)

        @pytest.mark.anyio
        async def test_replayed_lines_under_a_given_id(dbtbus_bus, dbtbus_replay):
            with open({str(SHOP_LOG)!r}, "rb") as f:
                lines = f.read().splitlines()
            assert await dbtbus_replay(lines, run_id="mine") == "mine"
            state = await dbtbus_bus.run_state("mine")
            assert state.ending is not None and len(state.results) == 28
        """
    )
    result = _run(pytester)
    _all_passed(result, 2)


REDIS_TEST = """
import pytest

@pytest.fixture
def anyio_backend():
    return "asyncio"  # the Redis backend is asyncio-only

@pytest.mark.anyio
async def test_against_redis(dbtbus_redis_bus, dbtbus_events, dbtbus_run_id):
    run = await dbtbus_events.run(dbtbus_run_id, graph={"model.a": []}, bus=dbtbus_redis_bus)
    await run.succeed("model.a")
    assert (await dbtbus_redis_bus.wait(dbtbus_run_id, "model.a", timeout=5)).ok
    await dbtbus_redis_bus.delete_run(dbtbus_run_id)
"""


@pytest.mark.redis
def test_redis_fixture_with_an_explicit_url(pytester: pytest.Pytester, dbtbus_redis_url: str) -> None:
    pytester.makepyfile(test_redis=REDIS_TEST)
    result = _run(pytester, f"--dbtbus-redis-url={dbtbus_redis_url}")
    _all_passed(result, 1)


@pytest.mark.redis
def test_redis_fixture_starts_a_throwaway_server(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    from dbtbus.testing.redis_server import find_redis_server

    if find_redis_server() is None:
        pytest.skip("no redis-server on PATH")
    monkeypatch.delenv("REDIS_URL", raising=False)
    pytester.makepyfile(test_redis=REDIS_TEST)
    result = _run(pytester)
    _all_passed(result, 1)


def test_redis_fixture_skips_with_the_reason(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_SERVER", raising=False)
    python_dir = str(Path(os.__file__).parent)  # any PATH without redis-server
    monkeypatch.setenv("PATH", python_dir)
    pytester.makepyfile(test_redis=REDIS_TEST)
    result = _run(pytester)
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped", 0) >= 1 and "passed" not in outcomes and "failed" not in outcomes, outcomes
    result.stdout.fnmatch_lines(["*dbtbus_redis_bus: no --dbtbus-redis-url, no $REDIS_URL and no redis-server*"])


def test_plugin_can_be_disabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_off=textwrap.dedent(
            """
            def test_no_fixture(request):
                assert "dbtbus_bus" not in request.fixturenames
            """
        )
    )
    result = _run(pytester, "-p", "no:dbtbus", "--fixtures")
    assert "dbtbus_bus" not in result.stdout.str()
    result = _run(pytester, "--fixtures")
    assert "dbtbus_bus" in result.stdout.str()
