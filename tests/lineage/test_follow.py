"""Real runs, real parts: dbt-core + DuckDB building the shop project through the memory and Redis buses, a
consumer following live, its events POSTed by openlineage-python's HTTP transport to an endpoint the test
serves, each validated against the spec; a producer SIGKILLed mid-run; dbt-ol's datasets beside ours."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

import dbtbus
from dbtbus.backends.memory import drop_store
from dbtbus.events import Record
from dbtbus.lineage import aemit_lineage, emit_lineage, lineage_run_id, naming_from_run
from dbtbus.testing.projects import copy_shop
from dbtbus.testing.redis_server import RedisServer, find_redis_server

from ._checks import by_run, check_run, ending_latencies, no_secret, percentile, records_of
from .conftest import REDIS_PASSWORD, LineageEndpoint, SpecValidator, configure_openlineage, serve_endpoint

pytestmark = pytest.mark.dbt
#: The Redis backend runs on asyncio only; the memory test keeps it too, one loop for both.
on_asyncio = pytest.mark.parametrize("anyio_backend", ["asyncio"])

DBT_OL = str(Path(sys.executable).with_name("dbt-ol"))


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One copy of the shop for the module: dbt-ol and dbtbus build the same project into the same DuckDB file,
    so both name the same namespace."""
    path = copy_shop(tmp_path_factory.mktemp("shop"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DBTBUS_DUCKDB_PATH", str(path / "shop.duckdb"))
        yield path


def build_args(shop: Path) -> list[str]:
    return ["build", "--project-dir", str(shop), "--profiles-dir", str(shop), "--quiet"]


async def build_and_follow(url: str, run_id: str, shop: Path) -> dbtbus.ProducerResult:
    """The consumer starts first (the run does not exist yet) and follows it live while dbt builds."""
    result: list[dbtbus.ProducerResult] = []

    async def produce() -> None:
        result.append(await dbtbus.Producer(url, run_id, heartbeat_interval=1.0).ainvoke(build_args(shop)))

    async with anyio.create_task_group() as tg:
        # follow=True; the client configured from OPENLINEAGE_URL; the naming from the run's own dbt arguments
        tg.start_soon(partial(aemit_lineage, url, run_id, naming=naming_from_run))
        await anyio.sleep(0.2)
        tg.start_soon(produce)
    return result[0]


@dataclass
class ShopRun:
    """The shop built once through the memory bus, followed live, its events as an endpoint received them."""

    run_id: str
    result: dbtbus.ProducerResult
    records: list[Record]
    events: list[dict[str, Any]]


@pytest.fixture(scope="module")
def dbt_ol_events(shop: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """What dbt-ol (openlineage-dbt, its live mode: ``--consume-structured-logs``) emits building the shop,
    through its file transport. It runs first: dbt in this process keeps the DuckDB file locked afterwards."""
    events_file = tmp_path_factory.mktemp("dbt-ol") / "events.jsonl"
    env = {**os.environ, "OPENLINEAGE__TRANSPORT__TYPE": "file",
           "OPENLINEAGE__TRANSPORT__LOG_FILE_PATH": str(events_file), "OPENLINEAGE__TRANSPORT__APPEND": "true",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    for name in ("OPENLINEAGE_URL", "OPENLINEAGE_CONFIG", "OPENLINEAGE_NAMESPACE", "OPENLINEAGE_PARENT_ID"):
        env.pop(name, None)
    done = subprocess.run([DBT_OL, "build", "--consume-structured-logs", *build_args(shop)[1:]],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:]  # dbt's own: the shop fails a test on purpose
    return [json.loads(line) for line in events_file.read_text().splitlines()]


@pytest.fixture(scope="module")
def shop_on_memory(shop: Path, dbt_ol_events: list[dict[str, Any]]) -> Iterator[ShopRun]:
    url, run_id = f"memory://lineage-{uuid.uuid4().hex[:8]}", "shop-memory"
    with serve_endpoint() as endpoint, pytest.MonkeyPatch.context() as patch:
        configure_openlineage(patch, endpoint)
        result = anyio.run(build_and_follow, url, run_id, shop)
        yield ShopRun(run_id, result, records_of(url, run_id), endpoint.events)
        drop_store(url.removeprefix("memory://"))


def test_a_live_build_on_the_memory_bus_reaches_the_endpoint_whole_and_valid(
    shop: Path, shop_on_memory: ShopRun, spec: SpecValidator
) -> None:
    run = shop_on_memory
    assert run.result.counts == {"success": 13, "pass": 10, "warn": 1, "fail": 1, "skipped": 3}
    check_run(run.events, run.records, run.run_id, spec)
    endings = {e["job"]["name"]: e for e in run.events if e["eventType"] in ("COMPLETE", "FAIL", "ABORT")}
    assert endings["dbt-run-shop"]["eventType"] == "FAIL"  # dbt's verdict: a test failed
    enriched = endings["model.shop.orders_enriched"]
    assert [d["name"] for d in enriched["inputs"]] == ["shop.main.stg_orders", "shop.main.stg_payments"]
    assert [d["name"] for d in enriched["outputs"]] == ["shop.main.orders_enriched"]
    assert enriched["outputs"][0]["namespace"] == f"duckdb://{shop / 'shop.duckdb'}"
    assert "select" in enriched["job"]["facets"]["sql"]["query"].lower()
    repeat = endings["test.shop.assert_customers_have_repeat_orders"]
    assert repeat["eventType"] == "FAIL"
    [assertion] = repeat["inputs"][0]["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert (assertion["success"], assertion["actual"]) == (False, "3")
    assert endings["model.shop.top_customers"]["eventType"] == "ABORT"


def datasets_by_job(events: list[dict[str, Any]]) -> dict[str, tuple[set[tuple[str, str]], set[tuple[str, str]]]]:
    """job → (its input datasets, its output datasets), over its events' endings."""
    out: dict[str, tuple[set[tuple[str, str]], set[tuple[str, str]]]] = {}
    for event in events:
        if event["eventType"] not in ("COMPLETE", "FAIL", "ABORT"):
            continue
        inputs, outputs = out.setdefault(event["job"]["name"], (set(), set()))
        inputs.update((d["namespace"], d["name"]) for d in event.get("inputs", []))
        outputs.update((d["namespace"], d["name"]) for d in event.get("outputs", []))
    return out


def test_the_datasets_are_dbt_ols_for_the_same_project(
    shop: Path, shop_on_memory: ShopRun, dbt_ol_events: list[dict[str, Any]]
) -> None:
    """dbt-ol builds the same project into the same DuckDB file. Every dbt node is a job of the same name in
    the same namespace, with the same datasets — but for two things dbt-ol names that do not exist in the
    warehouse: an output for every test (its store-failures table, ``<schema>_dbt_test__audit.<test>``,
    never written unless ``store_failures`` is on) and a dataset for the ephemeral model ``order_payments``
    (dbt inlines it as a CTE: dbtbus names what the warehouse reads, ``stg_payments``)."""
    theirs = dbt_ol_events
    ours = shop_on_memory.events
    assert {e["job"]["namespace"] for e in theirs} == {e["job"]["namespace"] for e in ours} == {"dbt"}
    their_jobs = {name: sets for name, sets in datasets_by_job(theirs).items() if ".sql." not in name}
    our_jobs = datasets_by_job(ours)
    assert set(their_jobs) == set(our_jobs)  # every node, and the invocation dbt-run-shop
    ephemeral = ("duckdb://" + str(shop / "shop.duckdb"), "shop.main.order_payments")
    stg_payments = (ephemeral[0], "shop.main.stg_payments")
    compared = 0
    for job, (their_inputs, their_outputs) in their_jobs.items():
        our_inputs, our_outputs = our_jobs[job]
        if job.startswith("test."):
            their_outputs = {d for d in their_outputs if not d[1].startswith("shop.main_dbt_test__audit.")}
        if job == "model.shop.order_payments":
            their_outputs = their_outputs - {ephemeral}
        if ephemeral in their_inputs:
            their_inputs = (their_inputs - {ephemeral}) | {stg_payments}
        assert (our_inputs, our_outputs) == (their_inputs, their_outputs), job
        compared += bool(our_inputs or our_outputs)
    assert compared == len(their_jobs) - 1 == 28  # every node (but the invocation) has datasets in both


@pytest.mark.anyio
@on_asyncio
async def test_a_live_build_on_redis_with_a_password_then_a_restarted_consumer_emits_the_same_runs(
    shop: Path, lineage_env: LineageEndpoint, spec: SpecValidator, secret_redis: RedisServer
) -> None:
    url, run_id = secret_redis.url, "shop-redis"
    assert REDIS_PASSWORD in url
    await build_and_follow(url, run_id, shop)
    live = list(lineage_env.received)
    check_run(lineage_env.events, await anyio.to_thread.run_sync(records_of, url, run_id), run_id, spec)
    assert no_secret(lineage_env.bodies, REDIS_PASSWORD)
    latencies = ending_latencies(live)
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    print(f"\nnode finished -> COMPLETE/FAIL at the endpoint, redis bus, {len(latencies)} nodes: "
          f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")  # fmt: skip
    # Every node dbt ran: 13 success, 10 pass, 1 warn, 1 fail (the 3 skipped end with ABORT).
    assert len(latencies) == 25 and 0 <= p50 <= p99 < 30  # a sanity bound, not a goal: docs/lineage.md has figures

    # A consumer that restarts reads the log again and emits the same runs: no duplicates under new ids.
    result = await anyio.to_thread.run_sync(lambda: emit_lineage(url, run_id, naming=naming_from_run, follow=False))
    again = lineage_env.events[len(live):]
    assert result.ended and result.total == len(again) == len(live)
    assert {(e["run"]["runId"], e["eventType"]) for e in again} == {(r.event["run"]["runId"], r.event["eventType"])
                                                                     for r in live}  # fmt: skip


SLOW_MODEL = """import time


def model(dbt, session):
{ref}    time.sleep(1.5)
    return session.sql('select 1 as id')
"""
PRODUCE = textwrap.dedent("""\
    import sys
    from dbtbus.producer import Producer
    Producer(sys.argv[1], sys.argv[2], heartbeat_interval=0.5).invoke(sys.argv[3:])
""")


def slow_chain(path: Path, length: int = 3) -> list[str]:
    """A chain of Python models that sleep: a run long enough to kill in the middle."""
    (path / "models").mkdir(parents=True)
    (path / "dbt_project.yml").write_text("name: slow\nversion: '1.0'\nprofile: slow\n"
                                          "models:\n  slow:\n    +materialized: table\n")  # fmt: skip
    (path / "profiles.yml").write_text(f"slow:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
                                       f"      path: {path / 'slow.duckdb'}\n      threads: 1\n")  # fmt: skip
    for i in range(length):
        ref = f"    dbt.ref('m{i - 1}')\n" if i else ""
        (path / "models" / f"m{i}.py").write_text(SLOW_MODEL.format(ref=ref))
    return [f"model.slow.m{i}" for i in range(length)]


def test_a_producer_killed_mid_run_leaves_no_run_open(
    tmp_path: Path, lineage_env: LineageEndpoint, spec: SpecValidator, secret_redis: RedisServer
) -> None:
    nodes = slow_chain(tmp_path / "slow")
    url, run_id = secret_redis.url, f"killed-{uuid.uuid4().hex[:6]}"
    args = ["build", "--project-dir", str(tmp_path / "slow"), "--profiles-dir", str(tmp_path / "slow")]
    producer = subprocess.Popen([sys.executable, "-c", PRODUCE, url, run_id, *args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())  # fmt: skip
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(emit_lineage(url, run_id, naming=naming_from_run)))
    thread.start()
    try:
        # Kill once the second model has started: the first ended, the second is open.
        lineage_env.wait_for(lambda events: any(e["job"]["name"] == nodes[1] for e in events), timeout=90)
    finally:
        producer.send_signal(signal.SIGKILL)
        producer.wait(30)
    thread.join(60)
    assert not thread.is_alive() and results and results[0].lost
    events = lineage_env.events
    for event in events:
        spec.validate(event)
    runs = by_run(events)
    endings = {run: [e["eventType"] for e in lifecycle] for run, lifecycle in runs.items()}
    assert endings[lineage_run_id(run_id, nodes[0], 1)] == ["START", "COMPLETE"]
    assert endings[lineage_run_id(run_id, nodes[1], 1)] == ["START", "ABORT"]
    assert endings[lineage_run_id(run_id, "@invocation", 1)] == ["START", "FAIL"]
    assert lineage_run_id(run_id, nodes[2], 1) not in runs  # never started: no run to end
    aborted = runs[lineage_run_id(run_id, nodes[1], 1)][-1]
    assert "lost the run's producer" in aborted["run"]["facets"]["errorMessage"]["message"]
    assert no_secret(lineage_env.bodies, REDIS_PASSWORD)


def test_a_redis_restart_mid_run_loses_no_event(
    tmp_path: Path, lineage_env: LineageEndpoint, spec: SpecValidator
) -> None:
    """Issue #29's goal row: START and one terminal event per node, nothing lost across a Redis restart. The
    server (append-only, so it keeps what it acknowledged) goes down for 2 s while the second model runs; the
    producer and the following consumer both ride it out."""
    executable = find_redis_server()
    assert executable is not None, "no redis-server on PATH: the lineage tests run through a real Redis"
    nodes = slow_chain(tmp_path / "slow", length=4)
    run_id = f"restarted-{uuid.uuid4().hex[:6]}"
    args = ["build", "--project-dir", str(tmp_path / "slow"), "--profiles-dir", str(tmp_path / "slow")]
    with RedisServer(executable=executable, appendonly=True) as server:
        producer = subprocess.Popen([sys.executable, "-c", PRODUCE, server.url, run_id, *args],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        results: list[Any] = []
        thread = threading.Thread(target=lambda: results.append(emit_lineage(server.url, run_id,
                                                                             naming=naming_from_run)))  # fmt: skip
        thread.start()
        try:
            lineage_env.wait_for(lambda events: any(e["job"]["name"] == nodes[1] for e in events), timeout=90)
            server.restart(down_for=2.0)
            assert producer.wait(120) == 0, producer.stderr.read().decode() if producer.stderr else ""
        finally:
            if producer.poll() is None:
                producer.kill()
                producer.wait(30)
        thread.join(90)
        assert not thread.is_alive() and results and results[0].ended and not results[0].lost
        check_run(lineage_env.events, records_of(server.url, run_id), run_id, spec)
    endings = {run: [e["eventType"] for e in lifecycle] for run, lifecycle in by_run(lineage_env.events).items()}
    for node in nodes:
        assert endings[lineage_run_id(run_id, node, 1)] == ["START", "COMPLETE"], node
    assert endings[lineage_run_id(run_id, "@invocation", 1)] == ["START", "COMPLETE"]
