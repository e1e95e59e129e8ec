"""The live-scheduler suite: a real Airflow 3 deployment (api-server, scheduler, dag-processor, triggerer),
LocalExecutor, a throw-away PostgreSQL database and a throw-away redis-server.

Runs in the nox ``airflow_live`` session (``DBTBUS_REQUIRE_AIRFLOW_LIVE=1``): there a missing Airflow,
PostgreSQL or redis-server FAILS the suite. Anywhere without Airflow nothing here is collected.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REQUIRED = os.environ.get("DBTBUS_REQUIRE_AIRFLOW_LIVE") == "1"
if importlib.util.find_spec("airflow") is None and not REQUIRED:
    collect_ignore_glob = ["*.py"]

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent

# The gated model: it reads the CSV named by the ``gate`` var, so it fails while that file is missing.
GATED = "m005"
# The slow model keeps dbt (and so the producer task) running while its flag file exists (at most 90 s).
SLOW_PY = '''import os
import time

FLAG = {flag!r}


def model(dbt, session):
    dbt.config(materialized="table")
    deadline = time.monotonic() + 90
    while os.path.exists(FLAG) and time.monotonic() < deadline:
        time.sleep(0.2)
    return session.sql("select 1 as id, 1 as value")
'''


def _unavailable(why: str) -> None:
    if REQUIRED:
        pytest.fail(f"the live suite needs it: {why}", pytrace=False)
    pytest.skip(why)


#: The scale scenarios' project: what render_dbt_task_group splits into node DAGs by default.
SCALE_MODELS = 200


def _gated_project(path: Path, models: int, *, slow: bool) -> Path:
    """A generated project (absolute paths) whose model GATED reads the ``gate`` var's CSV; parsed once."""
    from dbtbus.testing.projects import generate_project

    generate_project(path, models=models, tests_per_model=1, threads=4)
    gated = path / "models" / f"{GATED}.sql"
    gate = "\nwhere exists (select 1 from read_csv_auto('{{ var(\"gate\") }}'))\n"
    gated.write_text(gated.read_text().rstrip() + gate)
    if slow:
        (path / "models" / "slow.py").write_text(SLOW_PY.format(flag=str(path / "slow.flag")))
    proc = subprocess.run([str(BIN / "dbt"), "parse", "--project-dir", str(path), "--profiles-dir", str(path)],
                          capture_output=True, text=True, cwd=path, check=False,
                          env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shutil.copy(path / "target" / "manifest.json", path / "manifest.render.json")
    manifest = json.loads((path / "manifest.render.json").read_text())
    assert manifest["metadata"]["project_name"] == "gen"
    return path


@pytest.fixture(scope="session")
def live_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated 12-model project, one gated model, one slow Python model."""
    return _gated_project(tmp_path_factory.mktemp("live-project").resolve(), 12, slow=True)


@pytest.fixture(scope="session")
def scale_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated SCALE_MODELS-model project with the same gated model and slow Python model."""
    return _gated_project(tmp_path_factory.mktemp("scale-project").resolve(), SCALE_MODELS, slow=True)


@pytest.fixture(scope="session", autouse=True)
def _write_figures() -> Iterator[None]:
    """The scenarios' timings (``_scenario.FIGURES``), printed and written to ``DBTBUS_LIVE_FIGURES``."""
    from ._scenario import FIGURES

    yield
    text = json.dumps(FIGURES, indent=2, sort_keys=True)
    print("\nlive-suite figures:\n" + text)
    path = os.environ.get("DBTBUS_LIVE_FIGURES")
    if path:
        Path(path).write_text(text + "\n")


@pytest.fixture(scope="session")
def live_redis() -> Iterator[str]:
    from dbtbus.testing.redis_server import RedisServer, find_redis_server

    if find_redis_server() is None:
        _unavailable("redis-server is not on PATH")
    with RedisServer() as server:
        yield server.url


@pytest.fixture(scope="session")
def lineage_endpoint() -> Iterator[object]:
    """An OpenLineage HTTP endpoint for the suite, started before the deployment that sends to it."""
    from tests.lineage.conftest import serve_endpoint

    with serve_endpoint() as endpoint:
        yield endpoint


def _live_env(live_project: Path, scale_project: Path, live_redis: str, lineage_endpoint: Any) -> dict[str, str]:
    return {"DBTBUS_LIVE_PROJECT": str(live_project), "DBTBUS_LIVE_SCALE_PROJECT": str(scale_project),
            "DBTBUS_LIVE_REDIS": live_redis,
            # The OpenLineage provider's transport, for the one scenario that asks for lineage (openlineage=True);
            # disabled, so the provider's listener and every other scenario (openlineage=None) send nothing.
            "AIRFLOW__OPENLINEAGE__DISABLED": "True", "AIRFLOW__OPENLINEAGE__NAMESPACE": "dbtbus-live",
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "http", "url": lineage_endpoint.url, "timeout": 5})}


@contextlib.contextmanager
def _live_deployment(home: Path, env: dict[str, str], workers: tuple[str, ...] = ()) -> Iterator[Any]:
    """A deployment with the live DAGs and the sensors' re-run pool, stopped (every process group) at exit."""
    if importlib.util.find_spec("airflow") is None:
        _unavailable("Apache Airflow is not installed")
    if importlib.util.find_spec("psycopg2") is None or importlib.util.find_spec("asyncpg") is None:
        _unavailable("psycopg2-binary and asyncpg are not installed")
    if workers and importlib.util.find_spec("airflow.providers.celery") is None:
        _unavailable("apache-airflow-providers-celery is not installed")
    from ._deployment import deployment, postgres_available

    why = postgres_available()
    if why is not None:
        _unavailable(f"PostgreSQL does not answer on 127.0.0.1:5432: {why}")
    with deployment(home, BIN, env, workers=workers) as af:
        af.create_pool("dbt_rerun", 1)
        shutil.copy(HERE / "live_dags.py", af.dags / "dbtbus_live_dags.py")
        yield af


@pytest.fixture(scope="session")
def airflow(live_project: Path, scale_project: Path, live_redis: str, lineage_endpoint: Any,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The LocalExecutor deployment, started once for the suite."""
    home = tmp_path_factory.mktemp("airflow-home").resolve()
    with _live_deployment(home, _live_env(live_project, scale_project, live_redis, lineage_endpoint)) as af:
        yield af


#: The CeleryExecutor deployment's workers: two hosts as far as Airflow can tell.
CELERY_WORKERS = ("worker-a", "worker-b")


@pytest.fixture(scope="module")
def celery_airflow(live_project: Path, scale_project: Path, live_redis: str, lineage_endpoint: Any,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A CeleryExecutor deployment (two workers, a Redis broker of its own, the result backend on PostgreSQL)
    for test_celery.py's module only: it never runs beside the LocalExecutor one."""
    from dbtbus.testing.redis_server import RedisServer

    home = tmp_path_factory.mktemp("airflow-celery-home").resolve()
    with RedisServer() as broker:
        env = {**_live_env(live_project, scale_project, live_redis, lineage_endpoint),
               "AIRFLOW__CELERY__BROKER_URL": broker.url}
        with _live_deployment(home, env, CELERY_WORKERS) as af:
            yield af
