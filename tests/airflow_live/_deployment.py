"""A real Airflow 3 deployment on this machine, for the live-scheduler suite.

api-server, scheduler, dag-processor and triggerer run as separate processes, each in its own process group,
on a throw-away PostgreSQL database. With the LocalExecutor task processes are children of the scheduler's
group; with the CeleryExecutor (``workers=("worker-a", "worker-b")``) each Celery worker is a process group
of its own, with its own working directory and the hostname Airflow records for its task instances (what
``TaskState.hostname`` reads), a Redis broker (``AIRFLOW__CELERY__BROKER_URL`` in ``extra_env``) and the
result backend on the deployment's PostgreSQL database. :meth:`Deployment.stop` ends every group and drops
the database, whatever happened before.
The test process never imports Airflow: it talks to the deployment through its REST API and reads task
states straight from the metadata database.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbtbus.testing.redis_server import free_port

PG_DSN = os.environ.get("DBTBUS_LIVE_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TERMINAL = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
_PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Celery worker slots each (the deployment's parallelism is 4).
CELERY_CONCURRENCY = 2
#: Seconds without a task heartbeat before the scheduler fails a task instance as lost (Airflow's default is
#: 300): what a SIGKILLed or frozen Celery worker costs before its task is retried elsewhere.
TASK_HEARTBEAT_TIMEOUT = 20
# The hostname Airflow records for a task instance (``[core] hostname_callable``): the worker's name, so two
# workers on one machine tell their task instances apart as two hosts would.
_HOSTNAME_MODULE = """import os
import socket


def hostname() -> str:
    return os.environ.get("DBTBUS_LIVE_HOSTNAME") or socket.getfqdn()
"""


class DeploymentError(RuntimeError):
    pass


def _pg(dsn: str) -> Any:
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def _same_group(pid: int, group: int) -> bool:
    try:
        return os.getpgid(pid) == group
    except (ProcessLookupError, PermissionError):
        return False


def postgres_available(dsn: str = PG_DSN) -> str | None:
    """None when PostgreSQL answers at ``dsn``, else why not."""
    try:
        _pg(dsn).close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


@dataclass
class TaskState:
    task_id: str
    state: str | None
    try_number: int
    start: float | None
    end: float | None
    queued: bool
    hostname: str


class Deployment:
    """``with Deployment(home, bin_dir, env) as af:`` — start, wait until healthy, stop everything at exit."""

    def __init__(self, home: Path, bin_dir: Path, extra_env: Mapping[str, str], *, parallelism: int = 4,
                 workers: Sequence[str] = ()) -> None:
        self.home = home
        self.workers = tuple(workers)
        self.bin = bin_dir
        self.port = free_port()
        self.db = f"dbtbus_live_{secrets.token_hex(4)}"
        base = PG_DSN.rsplit("/", 1)[0]
        self.dsn = f"{base}/{self.db}"
        self.dags = home / "dags"
        self.logs = home / "logs"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._token: str | None = None
        sqlalchemy_url = self.dsn.replace("postgresql://", "postgresql+psycopg2://", 1)
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy_url,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # A triggerer whose heartbeat is older than this loses its triggers to another (default 30 s):
            # the triggerer-death scenarios wait one threshold.
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
            "DO_NOT_TRACK": "1",
            "SCARF_NO_ANALYTICS": "true",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "PYTHONFAULTHANDLER": "1",
            "DBTBUS_CACHE_DIR": str(home / "dbtbus-cache"),
            **extra_env,
        }
        self.env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD", None)
        if self.workers:
            pylib = home / "pylib"
            self.env.update({
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + sqlalchemy_url,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(CELERY_CONCURRENCY),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TASK_HEARTBEAT_TIMEOUT),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "dbtbus_live_hostname.hostname",
                "PYTHONPATH": os.pathsep.join(p for p in (str(pylib), os.environ.get("PYTHONPATH", "")) if p),
            })
            if "AIRFLOW__CELERY__BROKER_URL" not in self.env:
                raise DeploymentError("a CeleryExecutor deployment needs AIRFLOW__CELERY__BROKER_URL in extra_env")

    # ------------------------------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Deployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.dags.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        admin = _pg(PG_DSN)
        try:
            with admin.cursor() as cur:
                cur.execute(f'create database "{self.db}"')
        finally:
            admin.close()
        self._created_db = True
        migrate = subprocess.run([str(self.bin / "airflow"), "db", "migrate"], env=self.env, capture_output=True,
                                 text=True, check=False)
        if migrate.returncode != 0:
            raise DeploymentError(f"airflow db migrate failed:\n{migrate.stdout[-2000:]}\n{migrate.stderr[-4000:]}")
        if self.workers:
            (self.home / "pylib").mkdir(exist_ok=True)
            (self.home / "pylib" / "dbtbus_live_hostname.py").write_text(_HOSTNAME_MODULE)
        for name in _PROCESSES:
            self.start_process(name)
        for name in self.workers:
            self.start_worker(name)
        self._wait_healthy(timeout=240)
        for name in self.workers:
            self.wait_worker(name)

    def start_process(self, name: str, command: str | Sequence[str] | None = None, *, cwd: Path | None = None,
                      env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``airflow <command>`` (default: ``name``) as process ``name``, in a process group of its own."""
        args = [command or name] if command is None or isinstance(command, str) else list(command)
        log = open(self.home / f"{name}.out", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [str(self.bin / "airflow"), *args], env={**self.env, **(env or {})}, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(cwd or self.home),
        )
        log.close()
        self.procs[name] = proc
        return proc

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        """Start Celery worker ``name`` in its own working directory, under its own hostname. Logs go to the
        shared logs folder (as with remote logging, every process reads every task's log)."""
        cwd = self.home / name
        cwd.mkdir(exist_ok=True)
        return self.start_process(
            name, ["celery", "worker", "--celery-hostname", f"{name}@%h", "--skip-serve-logs", "--without-mingle",
                   "--without-gossip"], cwd=cwd, env={"DBTBUS_LIVE_HOSTNAME": name})

    def wait_worker(self, name: str, timeout: float = 120) -> None:
        """Wait until Celery worker ``name`` consumes from the broker."""
        deadline = time.monotonic() + timeout
        log = self.home / f"{name}.out"
        while time.monotonic() < deadline:
            self.check_alive()
            if log.exists() and f"{name}@" in log.read_text(errors="replace") and " ready." in log.read_text(
                    errors="replace"):
                return
            time.sleep(0.5)
        raise DeploymentError(f"Celery worker {name} was not ready in {timeout:.0f} s\n{self.tails()}")

    def signal_tree(self, name: str, sig: int) -> list[int]:
        """Send ``sig`` to every process of process ``name``: its group and every descendant that left it (a
        Celery worker, its pool, each task's supervisor and task process, dbt's own children). Returns the
        pids signalled. SIGKILL is the host lost; SIGSTOP freezes it whole, SIGCONT thaws it."""
        import psutil

        root = psutil.Process(self.procs[name].pid)
        tree = [root, *root.children(recursive=True)]
        group = {p for p in psutil.process_iter() if _same_group(p.pid, root.pid)}
        pids = sorted({p.pid for p in tree} | {p.pid for p in group})
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        if sig == signal.SIGKILL:
            self.procs.pop(name).wait(timeout=30)
        return pids

    def restart_process(self, name: str, timeout: float = 60) -> None:
        """Stop process ``name`` as a service manager would (SIGTERM to its group, then wait), start a new one."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"airflow {name} did not stop in {timeout:.0f} s\n{self.tails()}") from None
        self.start_process(name)

    def kill_process(self, name: str) -> None:
        """SIGKILL process ``name``'s whole group (a triggerer: its supervisor and its trigger runner)."""
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def signal_process(self, name: str, sig: int) -> None:
        """Send ``sig`` to process ``name``'s group (SIGSTOP freezes it whole, SIGCONT thaws it)."""
        os.killpg(self.procs[name].pid, sig)

    def wait_triggerers(self, healthy: int, timeout: float = 120) -> None:
        """Wait until ``healthy`` triggerers heartbeat (the metadata DB's ``job`` table)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.query("select count(*) from job where job_type = 'TriggererJob' and state = 'running' "
                              "and latest_heartbeat > now() - interval '10 seconds'")
            if rows and int(rows[0][0]) >= healthy:
                return
            time.sleep(0.5)
        raise DeploymentError(f"{healthy} triggerer(s) never heartbeat in {timeout:.0f} s\n{self.tails()}")

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                health = self._http("GET", "/api/v2/monitor/health", auth=False)
                jobs = {k: (v or {}).get("status") for k, v in health.items()}
                if all(jobs.get(k) == "healthy" for k in ("metadatabase", "scheduler", "triggerer",
                                                          "dag_processor")):
                    return
                last = json.dumps(jobs)
            except (OSError, DeploymentError) as exc:
                last = str(exc)
            time.sleep(1)
        raise DeploymentError(f"Airflow did not become healthy in {timeout:.0f} s: {last}\n{self.tails()}")

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise DeploymentError(f"airflow {name} exited with {proc.returncode}\n{self.tails()}")

    def tails(self, lines: int = 30) -> str:
        out = []
        for name in sorted({*_PROCESSES, *self.procs}):
            path = self.home / f"{name}.out"
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {name} ---\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self) -> None:
        """SIGTERM every process group, SIGKILL what is left after 20 s (and every descendant that left its
        group), drop the database."""
        import psutil

        strays: list[psutil.Process] = []
        for proc in self.procs.values():
            with contextlib.suppress(psutil.Error):
                strays.extend(psutil.Process(proc.pid).children(recursive=True))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGCONT)  # a frozen process cannot act on SIGTERM
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group: task processes and log servers too
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for stray in strays:
            with contextlib.suppress(psutil.Error):
                stray.kill()
        self.procs.clear()
        if getattr(self, "_created_db", False):
            self._created_db = False
            with contextlib.suppress(Exception):
                admin = _pg(PG_DSN)
                try:
                    with admin.cursor() as cur:
                        cur.execute(f'drop database if exists "{self.db}" with (force)')
                finally:
                    admin.close()

    # ------------------------------------------------------------------------------------------ REST API

    def _http(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise DeploymentError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:500]!r}") from None
        return json.loads(raw) if raw else None

    def token(self) -> str:
        if self._token is None:
            self._token = str(self._http("GET", "/auth/token", auth=False)["access_token"])
        return self._token

    def create_pool(self, name: str, slots: int) -> None:
        self._http("POST", "/api/v2/pools", {"name": name, "slots": slots, "include_deferred": False})

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            errors = self._http("GET", "/api/v2/importErrors")
            if errors and errors.get("import_errors"):
                raise DeploymentError(f"DAG import errors: {errors['import_errors']}")
            with contextlib.suppress(DeploymentError):
                self._http("GET", f"/api/v2/dags/{dag_id}")
                return
            time.sleep(1)
        raise DeploymentError(f"DAG {dag_id} was not parsed in {timeout:.0f} s\n{self.tails()}")

    def trigger(self, dag_id: str, run_id: str, conf: Mapping[str, Any] | None = None) -> float:
        """Unpause and trigger ``dag_id``; return the wall time of the trigger call."""
        self.wait_for_dag(dag_id)
        self._http("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        started = time.time()
        self._http("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                   {"dag_run_id": run_id, "logical_date": None, "conf": dict(conf or {})})
        return started

    # ------------------------------------------------------------------------------------------ metadata DB

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = _pg(self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def dag_run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("select state from dag_run where dag_id=%s and run_id=%s", dag_id, run_id)
        return str(rows[0][0]) if rows else None

    def dag_run_times(self, dag_id: str, run_id: str) -> tuple[float | None, float | None]:
        rows = self.query("select extract(epoch from start_date), extract(epoch from end_date) from dag_run "
                          "where dag_id=%s and run_id=%s", dag_id, run_id)
        if not rows:
            return None, None
        start, end = rows[0]
        return (float(start) if start is not None else None, float(end) if end is not None else None)

    def tasks(self, dag_id: str, run_id: str) -> dict[str, TaskState]:
        rows = self.query(
            "select task_id, state, try_number, extract(epoch from start_date), extract(epoch from end_date), "
            "queued_dttm is not null, coalesce(hostname, '') from task_instance where dag_id=%s and run_id=%s",
            dag_id, run_id)
        return {
            r[0]: TaskState(r[0], r[1], int(r[2] or 0), float(r[3]) if r[3] is not None else None,
                            float(r[4]) if r[4] is not None else None, bool(r[5]), str(r[6]))
            for r in rows
        }

    def history(self, dag_id: str, run_id: str) -> list[TaskState]:
        """Every earlier try (``task_instance_history``)."""
        rows = self.query(
            "select task_id, state, try_number, extract(epoch from start_date), extract(epoch from end_date), "
            "queued_dttm is not null, coalesce(hostname, '') from task_instance_history "
            "where dag_id=%s and run_id=%s order by try_number", dag_id, run_id)
        return [TaskState(r[0], r[1], int(r[2] or 0), float(r[3]) if r[3] is not None else None,
                          float(r[4]) if r[4] is not None else None, bool(r[5]), str(r[6])) for r in rows]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            state = self.dag_run_state(dag_id, run_id)
            if state in ("success", "failed"):
                return state
            time.sleep(0.5)
        raise DeploymentError(f"DAG run {dag_id}/{run_id} did not end in {timeout:.0f} s: "
                              f"{ {k: v.state for k, v in self.tasks(dag_id, run_id).items()} }\n{self.tails()}")

    def wait_task(self, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float = 120) -> TaskState:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            task = self.tasks(dag_id, run_id).get(task_id)
            if task is not None and task.state in states:
                return task
            time.sleep(0.2)
        raise DeploymentError(f"{task_id} never reached {states} in {timeout:.0f} s\n{self.tails()}")

    def task_pid(self, dag_id: str, run_id: str, task_id: str) -> int | None:
        rows = self.query("select pid from task_instance where dag_id=%s and run_id=%s and task_id=%s",
                          dag_id, run_id, task_id)
        return int(rows[0][0]) if rows and rows[0][0] else None

    # ------------------------------------------------------------------------------------------ logs

    def task_log(self, dag_id: str, run_id: str, task_id: str, attempt: int | None = None) -> str:
        """Every log file of a task instance (worker and triggerer; all tries, or ``attempt``'s), concatenated."""
        base = self.logs / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if not base.exists():
            return ""
        pattern = "*" if attempt is None else f"attempt={attempt}.*"
        return "\n".join(p.read_text(errors="replace") for p in sorted(base.rglob(pattern)) if p.is_file())

    def worker_logs(self, dag_id: str, run_id: str, task_id: str) -> list[Path]:
        """The log files a worker wrote for the task (the triggerer's end in ``.trigger.<n>.log``)."""
        base = self.logs / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return [p for p in base.rglob("attempt=*.log") if ".trigger" not in p.name] if base.exists() else []

    def triggerer_log(self) -> str:
        return (self.home / "triggerer.out").read_text(errors="replace")


@contextlib.contextmanager
def deployment(home: Path, bin_dir: Path, env: Mapping[str, str], *,
               workers: Sequence[str] = ()) -> Iterator[Deployment]:
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    with Deployment(home, bin_dir, env, workers=workers) as af:
        yield af
