"""docs/airflow-quickstart.md runs as written: its blocks, in order, in one bash, under ``airflow standalone``.

The blocks marked ``<!-- airflow-quickstart: ... -->`` run from a scratch directory holding a copy of the
checkout's ``examples/`` (as from the repository's root), with this virtualenv first on ``PATH`` (the page's
install block is the one it leaves out). Two things differ from a user's machine, both ports: the page's
Redis (``localhost:6379``) is this suite's throw-away redis-server, and Airflow's api-server and log servers
get free ports, so the check runs beside anything else on the machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from dbtbus.testing.redis_server import free_port

from .conftest import BIN

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "airflow-quickstart.md"
BLOCK = re.compile(r"<!--\s*airflow-quickstart\b[^>]*-->\s*\n```bash\n(?P<body>.*?)^```", re.S | re.M)


def page_script(redis_port: int) -> str:
    blocks = [m.group("body") for m in BLOCK.finditer(PAGE.read_text(encoding="utf-8"))]
    assert len(blocks) >= 5, f"{PAGE.name}: expected its marked blocks, found {len(blocks)}"
    script = "\n".join(blocks)
    assert "redis://localhost:6379/0" in script, "the page's connection moved: update the substitution here"
    return script.replace("redis://localhost:6379/0", f"redis://localhost:{redis_port}/0")


def test_the_quickstart_runs_as_written(live_redis: str, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples" / "shop", tmp_path / "examples" / "shop",
                    ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*", "dbt_packages"))
    shutil.copytree(ROOT / "examples" / "airflow", tmp_path / "examples" / "airflow",
                    ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    redis_port = int(live_redis.rsplit(":", 1)[1].split("/", 1)[0])
    script = tmp_path / "quickstart.sh"
    script.write_text(page_script(redis_port), encoding="utf-8")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DBTBUS_"))},
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    proc = subprocess.Popen(["bash", "-euo", "pipefail", str(script)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=900)
    finally:
        # The page stops Airflow itself; whatever it left (or a failed run left) goes with its session.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        _stop_standalone(tmp_path)
    log = tmp_path / "airflow-standalone.log"
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else "(no standalone log)"
    assert proc.returncode == 0, f"the page's script failed ({proc.returncode}):\n{output[-4000:]}\n{tail}"
    lines = output.strip().splitlines()
    assert lines[-1] == "the DAG run: failed", output[-3000:]  # red on purpose: the project's failing test
    states = {m.group(1): m.group(2) for m in re.finditer(r"dbt\.(\w+)\s.*?\b(success|failed|upstream_failed)\b",
                                                          output)}
    assert states.get("stg_orders") == "success", output[-3000:]
    assert states.get("customers_summary") == "failed", output[-3000:]
    assert states.get("customer_ranking") in {"failed", "upstream_failed"}, output[-3000:]


def _stop_standalone(scratch: Path) -> None:
    """Every process still working in the page's directory (what ``airflow standalone`` started, should the
    page's own stop have failed), stopped by PID. Found by its working directory: Airflow's components set
    their process titles, which overwrites what /proc shows of their environment."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            continue
        if cwd.is_relative_to(scratch) and int(pid) != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
