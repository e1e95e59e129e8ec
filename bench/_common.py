"""Shared helpers of the benchmark suite: machine details, statistics, child processes, peak RSS, JSON.

Nothing here imports dbtbus, dbt or redis at module level, so the helpers are safe in any child process.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
DOCS_PATH = ROOT / "docs" / "benchmarks.md"
PY = sys.executable
DBT = str(Path(PY).parent / "dbt")

#: Goals of issues #7 and #13 (the page's "Goals" table is built from these).
GOAL_E2E_RATIO = 1.03
GOAL_REDIS_P99_MS = 2.0
GOAL_MEMORY_P99_MS = 0.2
GOAL_BYTES_PER_WAITER = 2048
GOAL_IMPORT_MS = 20.0
GOAL_PRODUCER_RSS_FIXED = 2 * 2**20  # producer peak RSS over a bare build: 2 MiB ...
GOAL_PRODUCER_RSS_PER_NODE = 1024  # ... + 1 KB per node
GOAL_REGISTER_10K_S = 0.5  # 10,000 waiters registered (Redis)
GOAL_FAN_OUT_10K_MS = 20.0  # 10,000 waiters on one node, all released


def goal_producer_rss(nodes: int) -> float:
    return GOAL_PRODUCER_RSS_FIXED + GOAL_PRODUCER_RSS_PER_NODE * nodes


@dataclass
class Options:
    """What every benchmark module's ``run(opts)`` receives."""

    quick: bool = False
    results_dir: Path = RESULTS_DIR
    redis_url: str | None = None  # a throw-away server started by __main__ (None: start your own)
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def redis_url(opts: Options) -> Iterator[str]:
    """The suite's redis-server (``opts.redis_url``), or a throw-away one while a benchmark runs alone."""
    if opts.redis_url is not None:
        yield opts.redis_url
        return
    from dbtbus.testing.redis_server import RedisServer

    with RedisServer() as server:
        yield server.url


# ------------------------------------------------------------------------------------------ machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def redis_server_version() -> str | None:
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"v=(\S+)", out)
    return match.group(1) if match else out.strip() or None


def compile_bytecode() -> bool:
    """Compile dbtbus's modules to bytecode, as installing a wheel does, and say whether every one compiled.

    An editable checkout has no ``.pyc`` files, and where ``PYTHONDONTWRITEBYTECODE`` is set (CI machines
    often set it) every benchmark child would compile dbtbus from source at import: ~1.4 MiB of the
    compiler's RSS that stays resident, charged to dbtbus, and a few ms of import time no installed copy pays.
    ``compileall`` writes the files whatever that variable says; the children then read them.
    """
    import compileall

    import dbtbus

    global _bytecode
    _bytecode = bool(compileall.compile_dir(str(Path(dbtbus.__file__).parent), quiet=1))
    return _bytecode


_bytecode: bool | None = None


def machine() -> dict[str, Any]:
    """The machine and software the figures come from."""
    try:
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME", "")  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        os_name = ""
    try:
        hiredis = _version("hiredis")
    except Exception:
        hiredis = None
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "ram_bytes": _ram_bytes(),
        "os": f"{os_name or platform.system()} (kernel {platform.release()})",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "dbt_core": _version("dbt-core"),
        "dbt_duckdb": _version("dbt-duckdb"),
        "duckdb": _version("duckdb"),
        "redis_server": redis_server_version(),
        "redis_py": _version("redis"),
        "hiredis": hiredis,
        "anyio": _version("anyio"),
        "dbtbus": _version("dbtbus"),
        "dbtbus_bytecode": {True: "compiled before the run", False: "compiling failed"}.get(_bytecode, "not compiled"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# ------------------------------------------------------------------------------------------ statistics


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) — no interpolation, so p99 of 100 samples is the 99th."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(samples_s: Sequence[float]) -> dict[str, float]:
    """Seconds in, milliseconds out: n, p50, p99, max, mean."""
    ms = [s * 1000 for s in samples_s]
    if not ms:
        return {"n": 0, "p50_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan, "mean_ms": math.nan}
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 0.5),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms),
        "mean_ms": statistics.fmean(ms),
    }


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and the values themselves."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "values": []}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "values": vals}


def cpu_seconds() -> float:
    """user + system CPU of this process (every thread) and of its waited-for children, in seconds."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Clock:
    """Wall and CPU (user + system, threads and waited-for children included) of one measured section."""

    def __init__(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = cpu_seconds()

    def read(self) -> dict[str, float]:
        return {"wall": time.perf_counter() - self.wall0, "cpu": cpu_seconds() - self.cpu0}


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM (Linux ``clear_refs``): later peaks are of what follows."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def ratio(numerator: float | None, denominator: float | None) -> float:
    if numerator is None or denominator is None or not denominator:
        return math.nan
    return float(numerator) / float(denominator)


# ------------------------------------------------------------------------------------------ memory


def vm_hwm(pid: int | str = "self") -> int | None:
    """Peak RSS (bytes) of a live process from /proc (VmHWM)."""
    return _proc_status_field(pid, b"VmHWM:")


def vm_rss(pid: int | str = "self") -> int | None:
    """Current RSS (bytes) from /proc (VmRSS)."""
    return _proc_status_field(pid, b"VmRSS:")


def _proc_status_field(pid: int | str, key: bytes) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def self_peak_rss() -> int:
    """Peak RSS of this process: VmHWM, else ru_maxrss."""
    peak = vm_hwm()
    if peak is not None:
        return peak
    return _maxrss(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def children_peak_rss() -> int:
    """The largest peak RSS among this process's waited-for children (getrusage RUSAGE_CHILDREN)."""
    return _maxrss(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def _maxrss(value: int) -> int:
    return value if sys.platform == "darwin" else value * 1024


@dataclass
class ChildResult:
    returncode: int
    stdout: str
    stderr: str
    wall: float
    peak_rss: int | None  # ru_maxrss from os.wait4: includes the parent's RSS at fork (see run_child)
    cpu: float = math.nan  # user + system of the child and its waited-for children (os.wait4)


def run_child(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 1800,
) -> ChildResult:
    """Run a child to completion and reap it with ``os.wait4``; ``peak_rss`` is that rusage's ru_maxrss.

    Caveat (Linux): ru_maxrss of a reaped child is at least the parent's RSS when it forked — the kernel keeps
    the pre-exec memory's high-water mark across exec — so with a large parent it overstates the child's own
    peak. Children that matter report their own VmHWM (reset at exec) instead. stdout/stderr go to temporary
    files, so a pipe never fills while we wait.
    """
    import tempfile

    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), child_env.get("PYTHONPATH")]))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=child_env, cwd=cwd)
        deadline = start + timeout
        status = rusage = None
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                _, status, rusage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code
        out.seek(0)
        err.seek(0)
        return ChildResult(code, out.read(), err.read(), wall, _maxrss(rusage.ru_maxrss),
                           rusage.ru_utime + rusage.ru_stime)


def child_json(result: ChildResult, what: str) -> dict[str, Any]:
    """The last ``RESULT {...}`` line a child printed; raise with its output when there is none."""
    for line in reversed(result.stdout.splitlines()):
        if line.startswith("RESULT "):
            data: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return data
    raise RuntimeError(
        f"{what}: no result (exit {result.returncode})\n--- stdout\n{result.stdout[-4000:]}\n"
        f"--- stderr\n{result.stderr[-4000:]}"
    )


def emit(data: Mapping[str, Any]) -> None:
    """What a child prints for its parent."""
    print("RESULT " + json.dumps(data), flush=True)


# ------------------------------------------------------------------------------------------ output


def write_json(results_dir: Path, name: str, data: Mapping[str, Any]) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=_default) + "\n", encoding="utf-8")
    return path


def _default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def standalone_main(
    name: str, run: Callable[[Options], Mapping[str, Any]], doc: str | None, argv: Sequence[str]
) -> None:
    """The command line every benchmark module shares: ``python -m bench.<name> [--quick] [--results-dir D]``."""
    import argparse

    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(list(argv))
    compile_bytecode()
    opts = Options(quick=args.quick)
    if args.results_dir:
        opts.results_dir = args.results_dir
    print(write_json(opts.results_dir, name, run(opts)))


def replace_doc_section(path: Path, heading: str, body: str) -> None:
    """Put ``body`` (which starts with ``heading``) in place of that section of a Markdown page, or append it.

    ``python -m bench`` regenerates the page from the JSON results and keeps every ``## `` section it does
    not generate itself (``bench/render.py``), so sections written here survive a later full render.
    """
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(heading + "\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + body + (text[end + 1 :] if end != -1 else "")
    path.write_text(text)
