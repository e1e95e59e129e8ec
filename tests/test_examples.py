"""Every example in examples/ runs."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

from dbtbus.testing.fake_runs import EventFactory

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GRAPH = {"model.s.a": [], "model.s.b": ["model.s.a"], "model.s.c": [], "model.s.d": ["model.s.c"]}


async def _fabricate(url: str, run_id: str, *, delay: float = 0.0) -> None:
    await anyio.sleep(delay)
    run = await EventFactory(url).run(run_id, graph=GRAPH)
    await run.succeed("model.s.a")
    await run.fail("model.s.c", message="Catalog Error")
    await run.succeed("model.s.b")
    await run.finish()


# ---------------------------------------------------------------------------------------------- custom operator


def test_custom_operator_demo_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "custom_operator.py")], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "model.shop.a: success: success"
    assert lines[2].startswith("model.shop.c: failed: model.shop.c finished with status 'error'")
    assert lines[3].startswith("model.shop.d: skipped: model.shop.d will not run: upstream model.shop.c failed")


def test_custom_operator_maps_outcomes(memory_url: str) -> None:
    module = _load("custom_operator")

    async def scenario() -> None:
        run = await EventFactory(memory_url).run("op", graph=GRAPH, heartbeat_interval=0.2)
        await run.succeed("model.s.a", relation_name='"db"."main"."a"')
        await run.fail("model.s.c")
        await run.lose_producer()

    anyio.run(scenario)

    def operator(node: str, **kwargs: Any) -> Any:
        return module.WaitForDbtNodeOperator(
            task_id="t", bus_url=memory_url, run_id="op", unique_id=node, timeout=10, **kwargs
        )

    assert operator("model.s.a").execute() == {
        "unique_id": "model.s.a",
        "status": "success",
        "execution_time": 0.01,
        "relation_name": '"db"."main"."a"',
    }
    with pytest.raises(module.AirflowFailException):
        operator("model.s.c").execute()
    with pytest.raises(module.AirflowSkipException):
        operator("model.s.d").execute()
    with pytest.raises(module.AirflowSkipException):
        operator("model.s.zzz").execute()
    with pytest.raises(module.AirflowException) as caught:  # producer lost: retryable, not a hard failure
        operator("model.s.b").execute()
    assert not isinstance(caught.value, (module.AirflowFailException, module.AirflowSkipException))


# ---------------------------------------------------------------------------------------------- consumer


def test_consumer_in_process(memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = _load("consumer")

    async def scenario() -> int:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _fabricate(memory_url, "c1", delay=0.2))  # the consumer starts first
            bad: int = await module.consume(memory_url, "c1", timeout=10)
        return bad

    assert anyio.run(scenario) == 2
    out = capsys.readouterr().out
    assert "waiting for 4 node(s) of run c1" in out
    assert "ready     model.s.a (success in 0.01s)" in out
    assert "FAILED    model.s.c: Catalog Error: alert its owner" in out
    assert "blocked   model.s.d: upstream model.s.c failed; keep yesterday's data" in out


def test_consumer_times_out_when_the_run_never_starts(memory_url: str) -> None:
    module = _load("consumer")
    assert module.main(["--bus", memory_url, "--run-id", "never", "--timeout", "0.2"]) == 1


@pytest.mark.redis
def test_consumer_script_against_redis(dbtbus_redis_url: str) -> None:
    run_id = f"example-{uuid.uuid4().hex[:8]}"
    thread = threading.Thread(target=lambda: anyio.run(lambda: _fabricate(dbtbus_redis_url, run_id, delay=0.5)))
    thread.start()
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "consumer.py"),
            "--bus",
            dbtbus_redis_url,
            "--run-id",
            run_id,
            "--timeout",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    thread.join(10)
    assert proc.returncode == 1, proc.stderr  # one node failed, one upstream failed
    assert "ready     model.s.b" in proc.stdout
    assert "blocked   model.s.d" in proc.stdout
    # only the nodes asked for
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "consumer.py"),
            "model.s.a",
            "model.s.b",
            "--bus",
            dbtbus_redis_url,
            "--run-id",
            run_id,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "waiting for 2 node(s)" in proc.stdout


@pytest.mark.dbt
def test_consumer_follows_a_real_dbt_build_of_the_shop_project(
    tmp_path: Path, memory_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dbtbus import Producer

    module = _load("consumer")
    project = tmp_path / "shop"
    shutil.copytree(EXAMPLES / "shop", project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*"))
    monkeypatch.setenv("DBTBUS_DUCKDB_PATH", str(project / "shop.duckdb"))
    args = ["build", "--project-dir", str(project), "--profiles-dir", str(project), "--quiet"]

    async def scenario() -> int:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: anyio.to_thread.run_sync(lambda: Producer(memory_url, run_id="shop").invoke(args)))
            bad: int = await module.consume(memory_url, "shop", timeout=120)
        return bad

    assert anyio.run(scenario) == 4  # the failing test and the three nodes dbt skips because of it
    out = capsys.readouterr().out
    assert "waiting for 28 node(s) of run shop" in out
    assert "FAILED    test.shop.assert_customers_have_repeat_orders: Got 3 results" in out
    assert "blocked   model.shop.top_customers: upstream test.shop.assert_customers_have_repeat_orders failed" in out
    assert "ready     model.shop.orders_enriched" in out


# ---------------------------------------------------------------------------------------------- compose


def test_compose_file_declares_redis() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((EXAMPLES / "compose.yaml").read_text())
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:")
    assert any(str(port).endswith(":6379") for port in redis["ports"])
    assert "healthcheck" in redis
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            check = subprocess.run(
                [docker, "compose", "-f", str(EXAMPLES / "compose.yaml"), "config", "-q"],
                capture_output=True,
                text=True,
                check=False,
            )
            assert check.returncode == 0, check.stderr


def test_every_example_is_tested() -> None:
    # examples/airflow runs under real Airflow in the airflow session (tests/airflow/test_example.py).
    assert (Path(__file__).parent / "airflow" / "test_example.py").exists()
    tested = {"consumer.py", "custom_operator.py", "compose.yaml", "shop", "airflow"}
    present = {p.name for p in EXAMPLES.iterdir() if not p.name.startswith((".", "__"))}
    assert present <= tested | {"README.md"}, present - tested
