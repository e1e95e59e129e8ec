"""The in-process producer against real dbt-core + DuckDB (the shop example and generated projects)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

import dbtbus
from dbtbus import NodeFailed, NodeNotRun, UpstreamFailed
from dbtbus.backends.base import Append
from dbtbus.backends.memory import MemoryBackend, drop_store, get_store
from dbtbus.events import Heartbeat, NodeResult, NodeStarted, NodeStatus, RunFinished, RunStarted, decode
from dbtbus.producer import Producer, ProducerResult
from dbtbus.producer._callback import make_callback
from dbtbus.producer._normalise import NOT_RUN_MESSAGE

from ._helpers import DBT_VERSION, announced, copy_shop, node_results, read_records, shop_args, started_of

pytestmark = pytest.mark.dbt

SHOP_URL = "memory://producer-shop"
BROKEN = "model.shop.broken"
FAILING_TEST = "test.shop.assert_customers_have_repeat_orders"


class ShopRun:
    def __init__(self, result: ProducerResult, records: list[Any], waited: dict[str, Any]) -> None:
        self.result = result
        self.records = records
        self.results = node_results(records)
        self.waited = waited


def _run_with_waiters(path: Path, run_id: str, args: Sequence[str], watch: Sequence[str]) -> ShopRun:
    waited: dict[str, Any] = {}

    def waiter() -> None:
        waited.update(dbtbus.wait_many(SHOP_URL, run_id, watch, timeout=120, return_exceptions=True))

    thread = threading.Thread(target=waiter)
    thread.start()
    os.environ["DBTBUS_DUCKDB_PATH"] = str(path / f"{run_id}.duckdb")
    try:
        result = Producer(SHOP_URL, run_id=run_id, heartbeat_interval=1.0).invoke(args)
    finally:
        os.environ.pop("DBTBUS_DUCKDB_PATH", None)
    thread.join(30)
    assert not thread.is_alive()
    return ShopRun(result, read_records(SHOP_URL, run_id), waited)


WATCH = (BROKEN, "model.shop.broken_grandchild", "model.shop.top_customers", "model.shop.stg_orders",
         "model.shop.order_payments", FAILING_TEST)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield copy_shop(tmp_path_factory.mktemp("shop"))
    drop_store("producer-shop")


@pytest.fixture(scope="module")
def broken_run(shop: Path) -> ShopRun:
    return _run_with_waiters(shop, "break", shop_args(shop, "--vars", "{shop_break: true}"), WATCH)


@pytest.fixture(scope="module")
def fail_fast_run(shop: Path) -> ShopRun:
    return _run_with_waiters(shop, "ff", shop_args(shop, "--vars", "{shop_break: true}", "--fail-fast"), WATCH)


EXPECTED = {
    "seed.shop.customers": ("seed", "success"),
    "seed.shop.orders": ("seed", "success"),
    "seed.shop.payments": ("seed", "success"),
    "snapshot.shop.orders_snapshot": ("snapshot", "success"),
    "model.shop.stg_customers": ("model", "success"),
    "model.shop.stg_orders": ("model", "success"),
    "model.shop.stg_payments": ("model", "success"),
    "model.shop.order_payments": ("model", "success"),
    "model.shop.orders_enriched": ("model", "success"),
    "model.shop.customers_summary": ("model", "success"),
    "model.shop.customer_ranking": ("model", "skipped"),
    "model.shop.top_customers": ("model", "skipped"),
    BROKEN: ("model", "error"),
    "model.shop.broken_child": ("model", "skipped"),
    "model.shop.broken_grandchild": ("model", "skipped"),
    "test.shop.accepted_values_stg_orders_status__placed__shipped__completed__returned.7511f2d274": ("test", "warn"),
    FAILING_TEST: ("test", "fail"),
    "test.shop.not_null_customer_ranking_customer_id.86c3d8a1c7": ("test", "skipped"),
}


def test_every_node_gets_its_exact_record(broken_run: ShopRun) -> None:
    results = broken_run.results
    assert len(results) == 28
    for uid, (rtype, status) in EXPECTED.items():
        assert (results[uid].resource_type, results[uid].status.value) == (rtype, status), uid
    others = set(results) - set(EXPECTED)
    assert others
    assert all(results[u].status is NodeStatus.PASS and results[u].resource_type == "test" for u in others)
    for r in results.values():
        assert r.run_id == "break" and r.attempt == 1
        assert r.started_at is not None and r.started_at.tzinfo is not None
        assert r.finished_at is not None and r.finished_at.tzinfo is not None and r.finished_at >= r.started_at
        assert r.thread and r.thread.startswith("Thread-")
        assert (r.failures is not None) == (r.resource_type == "test")
    assert results[FAILING_TEST].failures == 3
    assert results[FAILING_TEST].message == "Got 3 results, configured to fail if != 0"
    warn = results["test.shop.accepted_values_stg_orders_status__placed__shipped__completed__returned.7511f2d274"]
    assert warn.failures == 1
    assert "Catalog Error" in (results[BROKEN].message or "") or "Runtime Error" in (results[BROKEN].message or "")
    seed = results["seed.shop.customers"]
    assert seed.message == "INSERT 5" and seed.adapter_response.get("rows_affected") == 5
    assert seed.execution_time is not None and seed.execution_time > 0
    assert "stg_orders" in (results["model.shop.stg_orders"].relation_name or "")


def test_ephemeral_model_gets_a_result(broken_run: ShopRun) -> None:
    assert broken_run.results["model.shop.order_payments"].status is NodeStatus.SUCCESS


def test_skip_causes_are_the_root_down_to_grandchildren(broken_run: ShopRun) -> None:
    r = broken_run.results
    assert r["model.shop.broken_child"].skip_cause == BROKEN
    assert r["model.shop.broken_grandchild"].skip_cause == BROKEN
    for uid in ("model.shop.customer_ranking", "model.shop.top_customers",
                "test.shop.not_null_customer_ranking_customer_id.86c3d8a1c7"):
        assert r[uid].skip_cause == FAILING_TEST, uid
    assert all(x.skip_cause is None for x in r.values() if x.status is not NodeStatus.SKIPPED)


def test_run_lifecycle_and_graph(broken_run: ShopRun) -> None:
    records = broken_run.records
    first = announced(records)
    # announced before dbt is imported: the command and attempt, no graph yet; dbt's graph refines it
    assert first.command == "build" and first.attempt == 1 and first.graph is None and first.dbt_version is None
    started = started_of(records)
    assert started is not first and started.attempt == 1 and started.started_at == first.started_at
    assert started.producer == first.producer
    assert [type(r) for r in records[:2]] == [RunStarted, RunStarted] or isinstance(records[1], Heartbeat)
    assert started.producer.kind == "dbtRunner" and started.dbt_version == DBT_VERSION
    assert started.invocation_id and started.command == "build"
    assert started.graph is not None and set(started.graph) == set(broken_run.results)
    # build's test edges: orders_enriched waits for the tests of its ancestors
    parents = started.graph["model.shop.orders_enriched"].parents
    assert "test.shop.not_null_stg_orders_order_id.81cfe2fe64" in parents and "model.shop.order_payments" in parents
    assert started.skip_children_on == frozenset({NodeStatus.ERROR, NodeStatus.FAIL, NodeStatus.SKIPPED,
                                                  NodeStatus.PARTIAL_SUCCESS})
    end = records[-1]
    assert isinstance(end, RunFinished) and not end.success and end.exit_code == 1
    assert end.counts == {"success": 10, "pass": 10, "warn": 1, "error": 1, "fail": 1, "skipped": 5}
    assert end.peak_rss is not None and end.peak_rss > 50 * 2**20 and end.elapsed > 0
    res = broken_run.result
    assert not res.success and not res.crashed and res.counts == dict(end.counts) and res.peak_rss == end.peak_rss
    assert res.dbt_result is not None and res.dbt_result.success is False
    assert set(res.results) == set(broken_run.results)
    beats = [r for r in records if isinstance(r, Heartbeat)]
    # heartbeat_interval=1: one heartbeat per second from RunStarted (dbt parses before it), give or take one.
    assert len(beats) >= int((end.finished_at - started.started_at).total_seconds()) - 1
    assert all(b.peak_rss for b in beats)

    async def lease() -> object:
        async with dbtbus.connect(SHOP_URL) as bus:
            return await bus.backend.get_lease("break")

    assert anyio.run(lease) is None  # released at the end


def test_the_graph_gives_every_node_the_ancestors_dbts_own_graph_gives_it(broken_run: ShopRun, shop: Path) -> None:
    import pickle

    import networkx as nx

    linked = pickle.loads((shop / "target" / "graph.gpickle").read_bytes())  # dbt's build graph, test edges in
    graph = started_of(broken_run.records).graph
    assert graph is not None
    ours = nx.DiGraph()
    ours.add_nodes_from(graph)
    ours.add_edges_from((parent, uid) for uid, node in graph.items() for parent in node.parents)
    for uid in graph:
        assert nx.ancestors(ours, uid) == nx.ancestors(linked, uid) & set(graph), uid
    # without the test edges another path implies (dbt adds an edge from a test to every node below it)
    assert ours.number_of_edges() < linked.subgraph(graph).number_of_edges()


def test_order_started_before_result_and_parent_before_child(broken_run: ShopRun) -> None:
    records = broken_run.records
    graph = started_of(records).graph
    pos_start = {r.unique_id: i for i, r in enumerate(records) if isinstance(r, NodeStarted)}
    pos_result = {r.unique_id: i for i, r in enumerate(records) if isinstance(r, NodeResult)}
    assert set(pos_start) == set(pos_result)
    for uid, node in graph.items():
        assert pos_start[uid] < pos_result[uid]
        for parent in node.parents:
            assert pos_result[parent] < pos_start[uid], (parent, uid)


def test_waiters_see_every_outcome(broken_run: ShopRun) -> None:
    w = broken_run.waited
    assert isinstance(w[BROKEN], NodeFailed)
    grandchild, top = w["model.shop.broken_grandchild"], w["model.shop.top_customers"]
    assert isinstance(grandchild, UpstreamFailed) and grandchild.cause == BROKEN
    assert isinstance(top, UpstreamFailed) and top.cause == FAILING_TEST
    assert isinstance(w[FAILING_TEST], NodeFailed)
    assert isinstance(w["model.shop.stg_orders"], NodeResult) and w["model.shop.stg_orders"].ok
    assert isinstance(w["model.shop.order_payments"], NodeResult)


def test_fail_fast_marks_unstarted_nodes_not_run(fail_fast_run: ShopRun) -> None:
    results = fail_fast_run.results
    assert len(results) == 28
    assert results[BROKEN].status is NodeStatus.ERROR
    not_run = [r for r in results.values() if r.status is NodeStatus.NOT_RUN]
    assert not_run
    expected = {"Skipping due to fail_fast"}
    if fail_fast_run.result.dbt_result.exception is not None:
        # Under load dbt-duckdb's fail-fast cancel can race ("Connection already closed!"): dbt then returns
        # an exception and no results, and the producer's own message stands.
        expected.add(NOT_RUN_MESSAGE)
        assert fail_fast_run.records[-1].exit_code == 2 and fail_fast_run.records[-1].error
    odd = [(r.unique_id, r.message) for r in not_run if r.message not in expected]
    assert not odd, (fail_fast_run.records[-1], fail_fast_run.result.dbt_result)
    assert results["model.shop.broken_grandchild"].status is NodeStatus.NOT_RUN
    started = {r.unique_id for r in fail_fast_run.records if isinstance(r, NodeStarted)}
    assert all(results[uid].status is NodeStatus.NOT_RUN for uid in set(results) - started)
    # nodes in flight when dbt failed fast report what they did (the stream wins), even after dbt returned
    assert all(results[uid].status is not NodeStatus.NOT_RUN for uid in started)
    end = fail_fast_run.records[-1]
    assert isinstance(end, RunFinished) and not end.success and end.counts.get("not_run") == len(not_run)
    w = fail_fast_run.waited
    assert isinstance(w[BROKEN], NodeFailed)
    # doomed by broken's failure, or not run: either way the waiter never hangs
    assert isinstance(w["model.shop.broken_grandchild"], (UpstreamFailed, NodeNotRun))
    # NodeNotRun — or UpstreamFailed when the cancel interrupted an in-flight ancestor (error) first
    assert isinstance(w["model.shop.top_customers"], (UpstreamFailed, NodeNotRun))


def test_the_callback_never_raises() -> None:
    def push(item: object) -> None:
        raise RuntimeError("boom")

    class Msg:
        class info:
            name = "NodeStart"

    callback = make_callback(push)
    callback(Msg())
    callback(object())  # no .info at all


def _terminate_myself(wait: float = 5) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    threading.Event().wait(wait)  # a handler that raises does so here


def test_the_sigterm_handler_is_the_producers_only_while_dbt_runs_and_never_over_an_ignored_sigterm() -> None:
    from dbtbus.producer._producer import Terminated, _sigterm_as_crash

    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with _sigterm_as_crash():
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
            with pytest.raises(Terminated):
                _terminate_myself()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with _sigterm_as_crash():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
            _terminate_myself(wait=0.05)  # ignored, as the host asked
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_a_signal_landing_in_the_callback_reaches_dbt(interrupt: type[BaseException]) -> None:
    """Ctrl-C or the producer's SIGTERM (SystemExit) raised while dbt's main thread is inside the callback
    stops the run like anywhere else in dbt; swallowed, dbt built on and the interrupt was lost."""

    def push(item: object) -> None:
        raise interrupt()

    class Msg:
        class info:
            name = "NodeStart"

    with pytest.raises(interrupt):
        make_callback(push)(Msg())


class FailingBackend(MemoryBackend):
    async def append(self, run_id: str, items: Sequence[Append]) -> list[str]:
        raise dbtbus.BackendError("append refused")


@pytest.fixture
def small_project(tmp_path: Path) -> Any:
    from dbtbus.testing.projects import generate_project

    return generate_project(tmp_path / "p", models=5, tests_per_model=1, failing=["m002"], threads=2)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_backend_and_normaliser_errors_never_break_dbt(
    small_project: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dbtbus.producer import _publisher

    real = _publisher.extract

    def flaky(name: str, msg: Any) -> Any:
        if name == "NodeStart":
            raise ValueError("injected")
        return real(name, msg)

    monkeypatch.setattr(_publisher, "extract", flaky)
    backend = FailingBackend(get_store("producer-failing"))
    caplog.set_level(logging.WARNING, logger="dbtbus.producer")
    async with dbtbus.connect(backend) as bus:
        producer = Producer(bus, run_id="fails", flush_timeout=0.3)
        result = await producer.ainvoke(["build", *small_project.dbt_args()])
    assert result.dbt_result is not None and result.dbt_result.exception is None
    assert result.exit_code == 1 and not result.crashed  # m002 fails by design; dbt itself ran to the end
    assert result.counts.get("error") == 1 and result.counts.get("success", 0) + result.counts.get("pass", 0) > 0
    assert "append refused" in caplog.text and "could not normalise" in caplog.text
    assert "gave up publishing" in caplog.text
    drop_store("producer-failing")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_ainvoke_waiters_in_the_same_loop(small_project: Any, memory_url: str) -> None:
    project = small_project
    outcomes: dict[str, Any] = {}
    async with dbtbus.connect(memory_url) as bus:

        async def wait_all() -> None:
            outcomes.update(await bus.wait_many("same-loop", project.nodes, timeout=120, return_exceptions=True))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_all)
            result = await Producer(bus, run_id="same-loop", heartbeat_interval=0.5).ainvoke(
                ["build", *project.dbt_args()]
            )
    assert not result.success and result.exit_code == 1
    (failing,) = project.failing
    for uid in project.nodes:
        outcome = outcomes[uid]
        if uid == failing:
            assert isinstance(outcome, NodeFailed)
        elif uid in project.skipped:
            assert isinstance(outcome, UpstreamFailed) and outcome.cause == failing, uid
        else:
            assert isinstance(outcome, NodeResult) and outcome.ok, uid


@pytest.mark.parametrize(
    ("signum", "raised", "reported"),
    [(signal.SIGTERM, SystemExit, "SIGTERM"), (signal.SIGINT, KeyboardInterrupt, "KeyboardInterrupt")],
)
def test_a_signal_in_process_ends_as_crashed_and_propagates(
    tmp_path: Path, signum: signal.Signals, raised: type[BaseException], reported: str
) -> None:
    from dbtbus.events import RunCrashed, decode
    from dbtbus.testing.projects import generate_project

    project = generate_project(tmp_path / "sig", models=20, tests_per_model=0, threads=1)
    name, run_id = f"producer-{signum.name}", signum.name

    def send_signal_once_a_node_runs() -> None:
        store = get_store(name)
        for _ in range(3000):
            if any(isinstance(decode(e.data), NodeStarted) for e in store.read_now(run_id, 0, 100_000)):
                break
            threading.Event().wait(0.02)
        os.kill(os.getpid(), signum)

    # A process started in the background by a non-interactive shell inherits SIGINT ignored, and Python
    # then installs no KeyboardInterrupt handler: os.kill(SIGINT) did nothing and dbt built on. The test
    # is about what the producer does with a KeyboardInterrupt, so it installs Python's own handler.
    previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    thread = threading.Thread(target=send_signal_once_a_node_runs)
    thread.start()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(raised) as info:
            Producer(f"memory://{name}", run_id=run_id).invoke(["build", *project.dbt_args()])
    finally:
        thread.join(10)
        signal.signal(signal.SIGINT, previous_sigint)
    if signum == signal.SIGTERM:
        assert isinstance(info.value, SystemExit) and info.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == previous  # the producer's SIGTERM handler is gone again
    records = read_records(f"memory://{name}", run_id)
    assert isinstance(records[-1], RunCrashed) and reported in records[-1].error
    results = node_results(records)
    assert set(results) == set(project.nodes)  # every node has a terminal record: no waiter left hanging
    assert any(r.status is NodeStatus.NOT_RUN for r in results.values())
    drop_store(name)


def test_an_interrupt_an_adapter_turned_into_its_own_error_still_ends_as_crashed_and_propagates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """dbt-duckdb's cancel of a closed connection fails while dbt handles a Ctrl-C (seen in CI): dbt returns the
    adapter's error, and the KeyboardInterrupt is only its context. The run was interrupted all the same."""
    from types import SimpleNamespace

    import dbt.cli.main

    from dbtbus.events import RunCrashed

    interrupt = KeyboardInterrupt()

    def runner_failing_while_handling(handled: BaseException, error: Exception) -> type:
        """A dbtRunner whose invoke returns ``error``, raised while ``handled`` was being handled."""

        class Runner:
            def __init__(self, callbacks: Sequence[Any]) -> None:
                pass

            def invoke(self, args: Sequence[str]) -> SimpleNamespace:
                try:
                    raise handled
                except BaseException:
                    try:
                        raise error
                    except Exception as returned:
                        return SimpleNamespace(success=False, exception=returned, result=None)

        return Runner

    closed_generator = runner_failing_while_handling(GeneratorExit(), ValueError("an error while a generator closed"))
    monkeypatch.setattr(dbt.cli.main, "dbtRunner", closed_generator)
    assert Producer("memory://adapter-interrupt", run_id="not-interrupted").invoke(["build"]).crashed is False

    adapter_error = ConnectionError("Connection Error: Connection already closed!")
    monkeypatch.setattr(dbt.cli.main, "dbtRunner", runner_failing_while_handling(interrupt, adapter_error))
    with pytest.raises(KeyboardInterrupt) as info:
        Producer("memory://adapter-interrupt", run_id="r").invoke(["build"])
    assert info.value is interrupt
    last = read_records("memory://adapter-interrupt", "r")[-1]
    assert isinstance(last, RunCrashed)
    assert last.error == "interrupted (KeyboardInterrupt), then dbt failed: ConnectionError: Connection Error: " \
        "Connection already closed!"
    drop_store("adapter-interrupt")


def test_memray_tracks_the_producer_when_asked(small_project: Any, memory_url: str, tmp_path: Path) -> None:
    import memray  # in the test extra on Linux: missing it is a failure, not a skip
    output = tmp_path / "producer.bin"
    result = Producer(memory_url, run_id="memray", memray_output=output).invoke(["build", *small_project.dbt_args()])
    assert result.counts and not result.crashed
    reader = memray.FileReader(output)
    assert reader.metadata.peak_memory > 1_000_000  # dbt itself ran under the tracker
    assert reader.metadata.total_allocations > 0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_retention_expires_the_run_after_it_ends(small_project: Any, anyio_backend: str) -> None:
    from dbtbus.backends.mock import MockBackend, MockCall

    expiries: list[tuple[str | None, float]] = []
    calls: list[str] = []

    appended_expiries: set[float | None] = set()

    def record_expiry(call: MockCall) -> None:
        calls.append(call.method)
        if call.method == "expire_run":
            expiries.append((call.run_id, call.args[0]))
        if call.method == "append":
            appended_expiries.update(item.expire_after for item in call.args[0])

    async with dbtbus.connect(MockBackend(hook=record_expiry)) as bus:
        result = await Producer(bus, run_id="kept-a-while", retention=3600).ainvoke(
            ["build", *small_project.dbt_args()]
        )
        assert isinstance(result, ProducerResult) and not result.crashed
        # While it runs, each append carries (expiring appends) and each renewal is followed by an expiry of
        # lease (1.5 x 5 s) + retention, so a producer killed at any point leaves keys that expire; its end sets
        # the plain retention, last.
        assert expiries[-1] == ("kept-a-while", 3600)
        assert set(expiries[:-1]) <= {("kept-a-while", 3607.5)}, expiries
        assert appended_expiries == {3607.5}, appended_expiries
        last_append = max(i for i, method in enumerate(calls) if method == "append")
        assert calls[last_append + 1 :].count("expire_run") >= 1, calls  # the plain retention, after the end
        state = await bus.run_state("kept-a-while")
        assert isinstance(state.ending, RunFinished)  # expiry is set after the run's last record


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_run_with_a_retention_expires_whenever_its_producer_dies(
    small_project: Any, anyio_backend: str
) -> None:
    """Each backend call is a moment the producer may be killed at (SIGKILL, OOM): at every one, a run that
    holds records or a claim already has its expiry. Before, an append kept the run for ever and the expiry came
    in the next call: a producer killed in between left a run that never expired. (On memory the claim shares
    the run's expiry; Redis's claim key, which it did not, is checked in tests/backends/test_redis.py.)"""
    from dbtbus.backends.mock import MockBackend, MockCall

    run = "dies-anywhere"
    kept_for_ever: list[str] = []
    backend: MockBackend

    def check(call: MockCall) -> None:
        store = backend.store
        holds = store.read_now(run, 0, 1) or store.get_lease(run) is not None
        if holds and store.expires_in(run) is None:
            kept_for_ever.append(f"{call.method} #{call.number}")

    backend = MockBackend(hook=check)
    async with dbtbus.connect(backend) as bus:
        # Heartbeats every 50 ms: the build publishes some, and a beat is an append like any other (a beat
        # without the expiry kept the run for ever until the next record: a SIGKILL in between left it).
        result = await Producer(bus, run_id=run, retention=3600, heartbeat_interval=0.05).ainvoke(
            ["build", *small_project.dbt_args()]
        )
    assert not result.crashed and result.published > 10
    assert backend.calls["append"] > 1
    beats = [e for e in backend.store.read_now(run, 0, 10_000) if isinstance(decode(e.data), Heartbeat)]
    assert beats, "no heartbeat was published: the test checks nothing about them"
    assert kept_for_ever == [], kept_for_ever
    assert backend.store.expires_in(run) == pytest.approx(3600, abs=60)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_records_published_one_by_one_keep_the_runs_expiry_on_a_backend_without_expiring_appends(
    small_project: Any, anyio_backend: str
) -> None:
    """A backend that refuses a batch as too large gets its records one at a time. On a backend whose appends
    keep the run for ever (no expiring appends), each of them is followed by the run's expiry, as any append
    is: before, that path set none, and a producer killed before its next lease renewal left the run for good."""
    import dataclasses

    from dbtbus import RecordTooLarge
    from dbtbus.backends.mock import MockBackend, MockCall

    run = "one-by-one"
    kept_for_ever: list[str] = []
    refused: list[int] = []

    class WithoutExpiringAppends(MockBackend):
        expiring_appends = False

        async def append(self, run_id: str, items: Sequence[Append]) -> list[str]:
            # Such a backend takes no expiry with an append: the run is kept until expire_run.
            return await super().append(run_id, [dataclasses.replace(item, expire_after=None) for item in items])

    def refuse_batches(call: MockCall) -> None:
        store = backend.store
        if call.method != "expire_run" and store.read_now(run, 0, 1) and store.expires_in(run) is None:
            kept_for_ever.append(f"{call.method} #{call.number}")
        if call.method == "append" and len(call.args[0]) > 1:
            refused.append(len(call.args[0]))
            raise RecordTooLarge("this backend takes one record at a time")

    backend = WithoutExpiringAppends(hook=refuse_batches)
    async with dbtbus.connect(backend) as bus:
        # Records linger 0.2 s before a batch goes: batches of several, which the backend refuses.
        result = await Producer(bus, run_id=run, retention=3600, batch_linger=0.2).ainvoke(
            ["build", *small_project.dbt_args()]
        )
    assert not result.crashed and result.published > 10 and result.oversized == 0
    assert refused, "no batch of several records was refused: the one-by-one path was not taken"
    assert kept_for_ever == [], kept_for_ever
    assert backend.store.expires_in(run) == pytest.approx(3600, abs=60)
