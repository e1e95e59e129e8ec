"""Reproduce the Airflow 3.3 triggerer deadlock: a throw-away deployment, one DAG run (or more) of N deferred
``start_from_trigger`` tasks of a large DAG whose triggers log synchronously, and a verdict.

Run with the Python of an Airflow 3.3 virtualenv (its ``airflow`` CLI next to it, psycopg2 installed), with a
PostgreSQL server that lets the user create databases::

    python reproduce.py --tasks 400 --pad-kb 200

Uses Airflow (its CLI, and psycopg2 from its venv) and the standard library only. Everything it starts runs in
process groups of its own, which it ends by their ids; it drops the database it created.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DAG_ID = "triggerer_deadlock"
PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg(dsn: str) -> Any:
    import psycopg2  # the Postgres driver of the Airflow venv

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def execute_admin(dsn: str, sql: str) -> None:
    """One statement on the server's admin database (creating or dropping the throw-away database)."""
    admin = pg(dsn)
    try:
        with admin.cursor() as cur:
            cur.execute(sql)
    finally:
        admin.close()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Deployment:
    def __init__(self, args: argparse.Namespace, home: Path) -> None:
        self.home = home
        self.bin = Path(sys.executable).parent
        self.port = free_port()
        self.db = f"triggerer_deadlock_{secrets.token_hex(4)}"
        self.admin_dsn = args.pg
        self.dsn = f"{args.pg.rsplit('/', 1)[0]}/{self.db}"
        self.dags = home / "dags"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.created_db = False
        self._token: str | None = None
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "PYTHONPATH": os.pathsep.join(p for p in (str(self.dags), os.environ.get("PYTHONPATH", "")) if p),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.dsn.replace("postgresql://", "postgresql+psycopg2://", 1),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
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
            "DO_NOT_TRACK": "1",
            "SCARF_NO_ANALYTICS": "true",
            "DEADLOCK_TASKS": str(args.tasks),
            "DEADLOCK_PAD_KB": str(args.pad_kb),
            "DEADLOCK_LOG_LINES": str(args.log_lines),
            "DEADLOCK_LOG_KB": str(args.log_kb),
            "DEADLOCK_LOG_INTERVAL": str(args.log_interval),
            "DEADLOCK_WAIT": str(args.wait),
            "DEADLOCK_ASYNC_LOG": "1" if args.async_log else "0",
        }
        self.env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD", None)

    # -------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.dags.mkdir(parents=True)
        for name in ("deadlock_dag.py", "deadlock_trigger.py"):
            shutil.copy(HERE / name, self.dags / name)
        execute_admin(self.admin_dsn, f'create database "{self.db}"')
        self.created_db = True
        migrate = subprocess.run([str(self.bin / "airflow"), "db", "migrate"], env=self.env, capture_output=True,
                                 text=True, check=False, timeout=600)
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout[-2000:]}\n{migrate.stderr[-3000:]}")
        for name in PROCESSES:
            out = open(self.home / f"{name}.out", "ab")  # noqa: SIM115 - the child holds it
            self.procs[name] = subprocess.Popen(
                [str(self.bin / "airflow"), name], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(self.home))
            out.close()

    def stop(self) -> None:
        """SIGTERM each process group started here, SIGKILL what is left after 20 s, drop the database."""
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self.procs.clear()
        if self.created_db:
            self.created_db = False
            execute_admin(self.admin_dsn, f'drop database if exists "{self.db}" with (force)')

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"airflow {name} exited with {proc.returncode}\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.home / f"{name}.out"
        text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
        return "\n".join(line[:400] for line in text)

    # -------------------------------------------------------------------------------------------- API and DB

    def http(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            if self._token is None:
                self._token = str(self.http("GET", "/auth/token", auth=False)["access_token"])
            headers["Authorization"] = f"Bearer {self._token}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers=headers)
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = pg(self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        finally:
            conn.close()

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                health = self.http("GET", "/api/v2/monitor/health", auth=False)
                jobs = {k: (v or {}).get("status") for k, v in health.items()}
                if all(jobs.get(k) == "healthy" for k in ("metadatabase", "scheduler", "triggerer",
                                                          "dag_processor")):
                    return
                last = json.dumps(jobs)
            except (OSError, urllib.error.HTTPError) as exc:
                last = str(exc)
            time.sleep(2)
        raise RuntimeError(f"Airflow not healthy after {timeout:.0f} s: {last}")

    def wait_dag(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            errors = self.http("GET", "/api/v2/importErrors")
            if errors and errors.get("import_errors"):
                raise RuntimeError(f"DAG import errors: {errors['import_errors']}")
            with contextlib.suppress(urllib.error.HTTPError):
                self.http("GET", f"/api/v2/dags/{DAG_ID}")
                return
            time.sleep(2)
        raise RuntimeError(f"DAG {DAG_ID} not parsed after {timeout:.0f} s\n{self.tail('dag-processor')}")

    def trigger(self, run_id: str) -> None:
        self.http("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"dag_run_id": run_id, "logical_date": None})

    def states(self) -> dict[str, int]:
        rows = self.query("select coalesce(state, 'none'), count(*) from task_instance where dag_id=%s "
                          "group by 1", DAG_ID)
        return {str(s): int(n) for s, n in rows}

    def heartbeat_age(self) -> float | None:
        rows = self.query("select extract(epoch from now() - latest_heartbeat) from job "
                          "where job_type='TriggererJob' order by id desc limit 1")
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def serialized_dag_bytes(self) -> int | None:
        rows = self.query("select data, data_compressed from serialized_dag where dag_id=%s "
                          "order by created_at desc limit 1", DAG_ID)
        if not rows:
            return None
        data, compressed = rows[0]
        if data is None and compressed is not None:
            import zlib

            return len(zlib.decompress(bytes(compressed)))
        return len(json.dumps(data)) if data is not None else None

    # -------------------------------------------------------------------------------------------- the triggerer

    def triggerer_pids(self) -> list[int]:
        """The triggerer's supervisor and trigger runner: the ``airflow triggerer`` processes of its process
        group (not its log server, ``airflow serve-logs``)."""
        group = self.procs["triggerer"].pid
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                    if os.getpgid(int(entry)) == group and b"triggerer" in cmdline:
                        pids.append(int(entry))
        return sorted(pids)


def proc_info(pid: int) -> dict[str, Any]:
    info: dict[str, Any] = {"pid": pid}
    with contextlib.suppress(OSError):
        info["cmdline"] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        info["cpu_ticks"] = int(fields[11]) + int(fields[12])  # utime + stime
    with contextlib.suppress(OSError):
        info["wchan"] = Path(f"/proc/{pid}/wchan").read_text()
    with contextlib.suppress(OSError):
        info["stack"] = Path(f"/proc/{pid}/stack").read_text()[:2000]
    return info


def py_spy(pid: int) -> str:
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not exe:
        return ""
    try:
        done = subprocess.run([exe, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=120,
                              check=False)
    except subprocess.TimeoutExpired:
        return "(py-spy dump timed out)"
    return done.stdout + done.stderr


class Stopped(Exception):
    pass


def _stopped(*_: object) -> None:
    # Once, and never during the cleanup: a signal must not cut that short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stopped("SIGTERM")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200, help="start_from_trigger tasks in the DAG")
    parser.add_argument("--pad-kb", type=int, default=200, help="KB of doc_md padding in the serialized DAG")
    parser.add_argument("--runs", type=int, default=2, help="DAG runs to trigger, --stagger s apart")
    parser.add_argument("--stagger", type=float, default=20.0, help="seconds between the DAG runs")
    parser.add_argument("--log-lines", type=int, default=5, help="log lines per burst of each trigger")
    parser.add_argument("--log-kb", type=int, default=4, help="KB per log line")
    parser.add_argument("--log-interval", type=float, default=2.0,
                        help="seconds between a trigger's log bursts (0: one burst as it starts)")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds a trigger waits before it succeeds")
    parser.add_argument("--async-log", action="store_true", help="log with `await self.log.ainfo` instead")
    parser.add_argument("--stale", type=float, default=60.0,
                        help="seconds without a triggerer heartbeat (and without triggerer CPU) = deadlocked")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument("--pg", default=os.environ.get("DEADLOCK_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
                        help="PostgreSQL DSN of a database to create the throw-away database from")
    parser.add_argument("--out", type=Path, default=None, help="directory for the evidence (default: a temp dir)")
    args = parser.parse_args()
    # A SIGTERM (e.g. from `timeout`) ends the driver through its cleanup and verdict.
    signal.signal(signal.SIGTERM, _stopped)

    out = args.out or Path(tempfile.mkdtemp(prefix="triggerer_deadlock_evidence_"))
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="triggerer_deadlock_home_"))
    af = Deployment(args, home)
    verdict = "undecided"
    try:
        log(f"airflow home {home}, database {af.db}, api port {af.port}, evidence in {out}")
        af.start()
        af.wait_healthy(timeout=300)
        af.wait_dag(timeout=300)
        size = af.serialized_dag_bytes()
        if size:
            batch = min(args.tasks, 50)  # [triggerer] max_trigger_to_select_per_loop: claimed per loop
            log(f"serialized DAG: {size / 1024:.0f} KB; {batch} workloads (one triggerer loop's claim) carry "
                f"~{size * batch / 1e6:.1f} MB of DAG")
        af.http("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
        started = time.monotonic()
        next_run, runs = started, 0
        total = args.tasks * args.runs
        last_print = 0.0
        while True:
            now = time.monotonic()
            if runs < args.runs and now >= next_run:
                af.trigger(f"run_{runs}")
                log(f"triggered run_{runs}")
                runs += 1
                next_run = now + args.stagger
            af.check_alive()
            states = af.states()
            age = af.heartbeat_age()
            if now - last_print >= 10:
                log(f"t={now - started:5.0f}s tasks {states} triggerer heartbeat age "
                    f"{'-' if age is None else f'{age:.0f}'} s")
                last_print = now
            if runs == args.runs and states.get("success", 0) == total:
                verdict = "no deadlock: every task ended"
                break
            if age is not None and age > args.stale and states.get("deferred", 0) > 0:
                # Stale heartbeat: is the triggerer blocked (no CPU), or just slow?
                before = {p: proc_info(p).get("cpu_ticks") for p in af.triggerer_pids()}
                time.sleep(10)
                after = {p: proc_info(p).get("cpu_ticks") for p in af.triggerer_pids()}
                busy = {p for p in before if before[p] is not None and after.get(p) != before[p]}
                if not busy:  # both blocked: is it the send_msg / log-write deadlock?
                    verdict = collect(af, out, args, started)
                    if verdict.startswith("deadlocked"):
                        break
            if now - started > args.timeout:
                last = collect(af, out, args, started)
                verdict = f"undecided: neither ended nor deadlocked in {args.timeout:.0f} s (last look: {last})"
                break
            time.sleep(2)
    except Exception as exc:
        verdict = f"error: {type(exc).__name__}: {exc}"
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with contextlib.suppress(Exception):
            for name in PROCESSES:
                (out / f"{name}.out.tail").write_text(af.tail(name, 200))
        af.stop()
        shutil.rmtree(home, ignore_errors=True)
    log(f"VERDICT: {verdict}")
    log(f"evidence: {out}")
    return 0 if verdict.startswith(("deadlocked", "no deadlock")) else 1


def main_thread(dump: str) -> str:
    """The MainThread's stack of a ``py-spy dump``."""
    sections = re.split(r"^(?=Thread )", dump, flags=re.M)
    return next((s for s in sections if s.startswith("Thread ") and "MainThread" in s.splitlines()[0]), "")


def collect(af: Deployment, out: Path, args: argparse.Namespace, started: float) -> str:
    """Save the triggerer's stacks and states; say whether they show the deadlock."""
    states = af.states()
    age = af.heartbeat_age()
    pids = af.triggerer_pids()
    report: list[str] = [f"t={time.monotonic() - started:.0f}s tasks {states}, triggerer heartbeat age {age} s"]
    trigger_logs = list((af.home / "logs").rglob("*.log.trigger.*.log"))
    logged = sum(1 for p in trigger_logs if b"chatty line" in p.read_bytes())
    report.append(f"trigger log files written by the supervisor: {len(trigger_logs)}, with a chatty line: {logged}")
    send_msg = log_write = False
    blocked = 0
    for pid in pids:
        info = proc_info(pid)
        blocked += info.get("wchan") == "sock_alloc_send_pskb"  # asleep in a socket send, waiting for room
        dump = py_spy(pid)
        (out / f"py-spy-{pid}.txt").write_text(dump)
        (out / f"proc-{pid}.json").write_text(json.dumps(info, indent=1))
        report.append(f"--- pid {pid}: {info.get('cmdline', '')[:120]}\n    wchan {info.get('wchan')!r}, "
                      f"cpu ticks {info.get('cpu_ticks')}")
        main = main_thread(dump)
        frames = [line.strip() for line in main.splitlines()[1:] if line.strip()]
        if frames and frames[0].startswith("WatchedSubprocess.send_msg") and "_handle_request" in main:
            send_msg = True
            report.append("    main thread in WatchedSubprocess.send_msg <- _handle_request (supervisor)")
        if frames and frames[0].startswith("BytesLogger.msg"):
            log_write = True
            report.append("    main thread in structlog's BytesLogger.msg: a synchronous log write (runner)")
        keep = [line for line in dump.splitlines() if line.startswith(("Thread", "    "))][:40]
        report.append("\n".join("      " + line for line in keep))
    text = "\n".join(report)
    (out / f"evidence-{int(time.monotonic() - started)}s.txt").write_text(text)
    print(text, flush=True)
    deferred = states.get("deferred", 0)
    if send_msg and log_write and blocked == len(pids) == 2:
        return (f"deadlocked: {deferred} tasks deferred, triggerer heartbeat {age:.0f} s old, supervisor blocked "
                "in send_msg, trigger runner blocked writing a log line")
    no_py_spy = not shutil.which("py-spy", path=str(Path(sys.executable).parent)) and not shutil.which("py-spy")
    if no_py_spy and blocked == len(pids) == 2:
        return f"deadlocked (no py-spy to confirm): {deferred} tasks deferred, heartbeat {age:.0f} s old, no CPU"
    return (f"stalled, not (yet) the deadlock's stacks: {deferred} tasks deferred, heartbeat {age:.0f} s old, "
            f"supervisor in send_msg: {send_msg}, runner writing a log line: {log_write}")


if __name__ == "__main__":
    sys.exit(main())
