"""The Airflow 3 suite: real Airflow, a throw-away sqlite metadata DB, ``dag.test()``.

Runs in the nox ``airflow`` session (its own virtualenv with apache-airflow). Anywhere without Airflow
(the main ``tests`` session) nothing in this directory is collected — not even skipped — except with
``DBTBUS_REQUIRE_AIRFLOW=1`` (set by the airflow session), where a missing Airflow is an import error, so
the suite can never pass by being left out.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbtbus.testing.projects import copy_shop

HAVE_AIRFLOW = importlib.util.find_spec("airflow") is not None or os.environ.get("DBTBUS_REQUIRE_AIRFLOW") == "1"
if not HAVE_AIRFLOW:
    collect_ignore_glob = ["*.py"]  # Airflow lives in the airflow session's virtualenv only

# Airflow reads its configuration when first imported: point it at a throw-away home before that.
if HAVE_AIRFLOW and not os.environ.get("AIRFLOW_HOME"):
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="dbtbus-airflow-")
_HOME = Path(os.environ.get("AIRFLOW_HOME") or tempfile.gettempdir())
if HAVE_AIRFLOW:
    _configure = os.environ.setdefault
else:  # leave the environment alone

    def _configure(key: str, value: str) -> str:
        return value


_configure("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_HOME / 'airflow.db'}")
_configure("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
_dags = _configure("AIRFLOW__CORE__DAGS_FOLDER", str(_HOME / "dags"))
_configure("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
_configure("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")
_configure("DBTBUS_CACHE_DIR", str(_HOME / "dbtbus-cache"))  # render plans: never the user's cache

if HAVE_AIRFLOW:
    Path(_dags).mkdir(parents=True, exist_ok=True)
    import airflow  # noqa: F401  (a hard ImportError here when DBTBUS_REQUIRE_AIRFLOW=1)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session", autouse=True)
def airflow_db() -> None:
    """``airflow db migrate`` once per session (fast on a fresh sqlite file)."""
    marker = _HOME / ".migrated"
    if not marker.exists():
        subprocess.run([str(BIN / "airflow"), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
        marker.touch()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    from dbtbus.testing.redis_server import RedisServer, find_redis_server, redis_url_from_env

    url = redis_url_from_env()
    if url is not None:
        yield url
        return
    if find_redis_server() is None:
        if os.environ.get("DBTBUS_REQUIRE_AIRFLOW") == "1":
            pytest.fail("redis-server is not on PATH and REDIS_URL is unset")
        pytest.skip("redis-server is not on PATH and REDIS_URL is unset")
    with RedisServer() as server:
        yield server.url


@pytest.fixture(scope="session")
def shop_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shop project, parsed once (target/manifest.json)."""
    path = copy_shop(tmp_path_factory.mktemp("shop-template"))
    subprocess.run(
        [str(BIN / "dbt"), "parse", "--project-dir", str(path), "--profiles-dir", str(path)],
        check=True,
        capture_output=True,
        cwd=path,
        env={**os.environ, "DBTBUS_DUCKDB_PATH": str(path / "shop.duckdb")},
    )
    return path


@pytest.fixture
def shop(shop_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the parsed shop project with its own DuckDB file."""
    path = tmp_path / "shop"
    shutil.copytree(shop_template, path)
    monkeypatch.setenv("DBTBUS_DUCKDB_PATH", str(path / "shop.duckdb"))
    return path


def shop_args(path: Path, *extra: str) -> list[str]:
    return ["build", "--project-dir", str(path), "--profiles-dir", str(path), *extra]


@pytest.fixture(params=["redis", "xcom"])
def bus_url(request: pytest.FixtureRequest) -> str:
    """Each DAG test runs on both buses: a throw-away Redis and Airflow's own XCom."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    return "xcom://?poll=0.05"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the triggerer runs asyncio


@pytest.fixture
def producer_state(monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    """What Airflow answers about the DAG run's task instances (the Task SDK's get_task_states)."""
    from dbtbus.airflow._task_states import TaskStates

    states: dict[str, str | None] = {"dbt.dbt_producer": "running"}
    monkeypatch.setattr(TaskStates, "_ask", lambda self: dict(states))
    monkeypatch.setattr(TaskStates, "_cache", {})
    return states
