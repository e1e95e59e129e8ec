"""The fault suite: real redis-servers started, stopped, killed and restarted; real dbt producers.

Every row of issue #11's table is a test here, plus the faults that already held (producer SIGKILL, a Redis
restart with AOF, garbage entries) so they stay held. Tests that time things use generous bounds only
where the issue states a bound; everything else asserts outcomes, counts and log contents.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

try:
    import redis  # noqa: F401
except ImportError:  # pragma: no cover - the test extra installs it
    if os.environ.get("CI"):
        raise
    pytest.skip("redis-py is not installed", allow_module_level=True)

from dbtbus.testing.redis_server import RedisServer, find_redis_server

pytestmark = pytest.mark.redis

PRODUCE = Path(__file__).with_name("_produce.py")
DBTBUS = str(Path(sys.executable).with_name("dbtbus"))
DBT = str(Path(sys.executable).with_name("dbt"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's asyncio client


@pytest.fixture(autouse=True)
def _needs_redis_server() -> None:
    if find_redis_server() is None:
        message = "the fault suite starts its own redis-servers: install redis-server"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A throw-away append-only server (a restart loses nothing)."""
    directory = tmp_path / "redis"
    directory.mkdir()
    with RedisServer(appendonly=True, directory=directory) as server:
        yield server


def run_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------------------------- projects


@dataclass
class SlowProject:
    """A dbt-duckdb project of Python models that sleep: a run long enough to inject faults into."""

    path: Path
    nodes: list[str]

    def args(self, command: str = "build", *extra: str) -> list[str]:
        return [command, "--project-dir", str(self.path), "--profiles-dir", str(self.path), *extra]


def slow_project(
    directory: Path,
    *,
    chains: int = 2,
    length: int = 4,
    sleep: float = 0.5,
    failing: Mapping[str, str] | None = None,
    threads: int = 4,
) -> SlowProject:
    """``chains`` independent chains of ``length`` models (``c<chain>_<i>``), each sleeping ``sleep`` s.

    ``failing`` maps a model name to a file path: the model raises while that file does not exist (create
    the file and ``dbt retry`` succeeds).
    """
    failing = dict(failing or {})
    models = directory / "models"
    models.mkdir(parents=True, exist_ok=True)
    (directory / "dbt_project.yml").write_text(
        "name: slow\nversion: '1.0'\nprofile: slow\nmodels:\n  slow:\n    +materialized: table\n"
    )
    (directory / "profiles.yml").write_text(
        textwrap.dedent(
            f"""\
            slow:
              target: dev
              outputs:
                dev:
                  type: duckdb
                  path: {directory / 'slow.duckdb'}
                  threads: {threads}
            """
        )
    )
    nodes = []
    for chain in range(chains):
        for i in range(length):
            name = f"c{chain}_{i}"
            ref = f"    dbt.ref('c{chain}_{i - 1}')\n" if i else ""
            guard = ""
            if name in failing:
                guard = (
                    "    import os\n"
                    f"    if not os.path.exists({str(failing[name])!r}):\n"
                    f"        raise RuntimeError('{name} is broken until its fix file exists')\n"
                )
            (models / f"{name}.py").write_text(
                f"import time\n\n\ndef model(dbt, session):\n{ref}{guard}"
                f"    time.sleep({sleep})\n    return session.sql('select 1 as id')\n"
            )
            nodes.append(f"model.slow.{name}")
    return SlowProject(directory, nodes)


# ---------------------------------------------------------------------------------------------- producers


@dataclass
class ProducerProcess:
    process: subprocess.Popen[str]

    def result(self, timeout: float = 180) -> dict[str, Any]:
        out, err = self.process.communicate(timeout=timeout)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        assert lines, f"the producer printed no result (exit {self.process.returncode}):\n{err[-3000:]}"
        report: dict[str, Any] = json.loads(lines[-1])
        report["stderr"] = err
        return report


def start_producer(
    url: str, run: str, project: SlowProject, *, heartbeat: float = 5.0, attempt: int = 1, command: str = "build",
    extra: Sequence[str] = (), env: Mapping[str, str] | None = None,
) -> ProducerProcess:  # fmt: skip
    """The real producer (``Producer.invoke``, dbt in process) in a subprocess."""
    args = [sys.executable, str(PRODUCE), url, run, str(heartbeat), str(attempt), "--", *project.args(command, *extra)]
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )
    return ProducerProcess(process)
