"""The benchmark suite's harness: the registry, the one result schema, statistics, machine details, children.

A benchmark is a function ``run(opts) -> Measured`` in a module of ``bench/``, registered with
:func:`benchmark`; ``python -m bench`` imports every public module of the package (:func:`discover`), so a
new benchmark needs no list to be kept. The harness wraps what each one measured into a :class:`Result` —
the same envelope for every benchmark: its name, its parameters, the machine and the versions measured, the
date, the notes, the alternated runs (wall and CPU time, peak RSS) and its figures, every statistic in them a
:func:`stat` (samples, median, min, max, MAD) — checks it against the schema (:func:`validate`) and writes
``bench/results/<name>.json``. ``bench/render.py`` regenerates docs/benchmarks.md from those files alone.

Nothing here imports dbtbus, dbt or redis at module level, so the helpers are safe in any child process.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import pkgutil
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
DOCS_PATH = ROOT / "docs" / "benchmarks.md"
PY = sys.executable
DBT = str(Path(PY).parent / "dbt")

#: The version of the result schema; :func:`validate` refuses any other.
SCHEMA = "dbtbus-bench/2"

#: Every registered benchmark, by name (filled by :func:`benchmark` as ``bench`` modules are imported).
REGISTRY: dict[str, Benchmark] = {}

#: The interpreters a benchmark can need: ``dbtbus`` (the test virtualenv: dbt, redis) or ``airflow``
#: (Airflow's own virtualenv, ``nox -s bench_airflow``).
INTERPRETERS = ("dbtbus", "airflow")


@dataclass
class Options:
    """What every benchmark's ``run(opts)`` receives."""

    quick: bool = False
    tiny: bool = False  # the smoke test's sizes: seconds, not minutes (implies quick)
    large: bool = False  # the end-to-end benchmark's 1,000-model point
    results_dir: Path = RESULTS_DIR
    redis_url: str | None = None  # a throw-away server started by __main__ (None: start your own)
    notes: list[str] = field(default_factory=list)  # added to every result (``--note``)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Measured:
    """What a benchmark's ``run`` returns: its parameters, its figures and, where it alternates variants in
    fresh processes, one :class:`Run` a measured process."""

    params: dict[str, Any]
    figures: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Run:
    """One measured run of one variant: ``round`` numbers the alternation (every variant once per round)."""

    variant: str
    round: int
    wall_s: float | None = None
    cpu_s: float | None = None
    peak_rss_bytes: float | None = None
    labels: dict[str, Any] = field(default_factory=dict)


@dataclass
class Benchmark:
    name: str
    run: Callable[[Options], Measured]
    order: int
    redis: bool
    interpreter: str
    doc: str


@dataclass
class Result:
    """The one result schema: what ``bench/results/<benchmark>.json`` holds, for every benchmark."""

    benchmark: str
    date: str
    params: dict[str, Any]
    machine: dict[str, Any]
    versions: dict[str, str | None]
    figures: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duration_s: float | None = None
    schema: str = SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=_default) + "\n"


def benchmark(
    *, name: str, order: int, redis: bool = False, interpreter: str = "dbtbus"
) -> Callable[[Callable[[Options], Measured]], Callable[[Options], Measured]]:
    """Register ``run(opts) -> Measured`` as the benchmark ``name``; ``order`` sorts the suite (short first),
    ``redis`` asks for the suite's throw-away redis-server, ``interpreter`` names the virtualenv it needs."""
    if interpreter not in INTERPRETERS:
        raise ValueError(f"interpreter must be one of {INTERPRETERS}, not {interpreter!r}")

    def register(fn: Callable[[Options], Measured]) -> Callable[[Options], Measured]:
        module = sys.modules.get(fn.__module__)
        doc = (fn.__doc__ or (module.__doc__ if module else None) or "").strip().split("\n\n")[0]
        REGISTRY[name] = Benchmark(name, fn, order, redis, interpreter, doc)
        return fn

    return register


def discover() -> dict[str, Benchmark]:
    """Import every public module of ``bench`` (each registers its benchmarks), and return them in order."""
    import bench

    for info in pkgutil.iter_modules(bench.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"bench.{info.name}")
    return dict(sorted(REGISTRY.items(), key=lambda item: (item[1].order, item[0])))


def run_benchmark(bench_: Benchmark, opts: Options) -> Result:
    """Run one benchmark and wrap what it measured into a schema-valid :class:`Result`."""
    date = now()
    started = time.perf_counter()
    measured = bench_.run(opts)
    return wrap(bench_.name, opts, measured, date=date, duration_s=time.perf_counter() - started)


def wrap(name: str, opts: Options, measured: Measured, *, date: str, duration_s: float | None) -> Result:
    """The :class:`Result` of what benchmark ``name`` measured; raise if it does not fit the schema."""
    result = Result(
        benchmark=name,
        date=date,
        params={"quick": opts.quick or opts.tiny, "tiny": opts.tiny, **measured.params},
        machine=machine(),
        versions=versions(),
        figures=measured.figures,
        runs=[asdict(r) for r in measured.runs],
        notes=[*measured.notes, *opts.notes, *noise_notes()],
        duration_s=duration_s,
    )
    problems = validate(json.loads(result.to_json()))
    if problems:
        raise ValueError(f"{name}: the result does not fit the schema: {'; '.join(problems[:5])}")
    return result


def write_result(results_dir: Path, result: Result) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{result.benchmark}.json"
    path.write_text(result.to_json(), encoding="utf-8")
    return path


def script_main(name: str, parser: Any, run: Callable[[Any, Callable[[Measured], None]], Measured]) -> None:
    """A benchmark script's ``main``: its arguments (``--results-dir``, ``--write``) parsed, ``run(args,
    checkpoint)`` measured, the result written (at every checkpoint too, so a run cut short keeps what it
    finished) and, with ``--write``, the page's blocks regenerated."""
    import signal

    # SIGTERM unwinds like Ctrl-C: a deployment's processes and database are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    args = parser.parse_args()
    compile_bytecode()  # the deployment's processes import dbtbus as an installed copy would, from bytecode
    date, started = now(), time.perf_counter()

    def save(measured: Measured) -> None:
        result = wrap(name, Options(results_dir=args.results_dir), measured, date=date,
                      duration_s=time.perf_counter() - started)
        print(write_result(args.results_dir, result), flush=True)

    save(run(args, save))
    if args.write:
        from bench.render import render_file

        render_file(args.results_dir, args.write)


def load_results(results_dir: Path) -> dict[str, dict[str, Any]]:
    """Every result file of ``results_dir`` that fits the schema, by benchmark name (the others are reported)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(results_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log(f"skipping {path}: {exc}")
            continue
        problems = validate(data)
        if problems:
            log(f"skipping {path}: {'; '.join(problems[:3])}")
            continue
        out[data["benchmark"]] = data
    return out


def view(result: dict[str, Any]) -> dict[str, Any]:
    """What a section reads of a result: its parameters and figures side by side, and ``machine`` (the machine,
    the versions and the date)."""
    return {**result["params"], **result["figures"], "notes": result["notes"],
            "machine": {**result["machine"], **result["versions"], "date": result["date"]}}


_ENVELOPE: dict[str, type | tuple[type, ...]] = {
    "schema": str, "benchmark": str, "date": str, "params": dict, "machine": dict, "versions": dict,
    "figures": dict, "runs": list, "notes": list, "duration_s": (int, float, type(None)),
}
_MACHINE = ("cpu_model", "cpus", "ram_bytes", "os", "python", "load_average")
_VERSIONS = ("dbtbus", "dbt_core")
_RUN = {"variant": str, "round": int}


def validate(data: Any) -> list[str]:
    """What keeps ``data`` from being a result of this schema (an empty list: it is one).

    The envelope's fields and types; the machine and version fields; each run's variant and round; and every
    statistic in the figures (a mapping with ``median`` and ``samples``): as many samples as ``n``, and
    ``min ≤ median ≤ max`` with the median that of the samples.
    """
    if not isinstance(data, dict):
        return ["not a JSON object"]
    problems = [f"{key}: missing" for key in _ENVELOPE if key not in data]
    problems += [f"{key}: not {_ENVELOPE[key]}" for key in _ENVELOPE if key in data
                 and not isinstance(data[key], _ENVELOPE[key])]
    if problems:
        return problems
    if data["schema"] != SCHEMA:
        return [f"schema {data['schema']!r}, not {SCHEMA!r}"]
    problems += [f"machine.{key}: missing" for key in _MACHINE if key not in data["machine"]]
    problems += [f"versions.{key}: missing" for key in _VERSIONS if key not in data["versions"]]
    if "quick" not in data["params"]:
        problems.append("params.quick: missing")
    for i, run in enumerate(data["runs"]):
        problems += [f"runs[{i}].{key}: not {t.__name__}" for key, t in _RUN.items()
                     if not isinstance(run.get(key), t)]
    problems += list(_check_stats(data["figures"], "figures"))
    return problems


def _check_stats(value: Any, where: str) -> Iterator[str]:
    if isinstance(value, dict):
        if "median" in value and "samples" in value:
            yield from _check_stat(value, where)
        for key, item in value.items():
            if key != "samples":
                yield from _check_stats(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _check_stats(item, f"{where}[{i}]")


def _check_stat(value: dict[str, Any], where: str) -> Iterator[str]:
    samples = value["samples"]
    if not isinstance(samples, list) or not all(isinstance(v, (int, float)) for v in samples):
        yield f"{where}.samples: not a list of numbers"
        return
    if value.get("n") != len(samples):
        yield f"{where}.n: {value.get('n')} for {len(samples)} samples"
    if samples:
        med = statistics.median(samples)
        if not math.isclose(value["median"], med, rel_tol=1e-9, abs_tol=1e-12):
            yield f"{where}.median: {value['median']}, the samples' is {med}"
        if not value["min"] <= value["median"] <= value["max"]:
            yield f"{where}: min ≤ median ≤ max does not hold"


# ------------------------------------------------------------------------------------------ statistics


def stat(values: Iterable[float]) -> dict[str, Any]:
    """A statistic of the schema: the samples, their count, median, min, max and median absolute deviation."""
    vals = [float(v) for v in values]
    if not vals:
        return {"n": 0, "median": math.nan, "min": math.nan, "max": math.nan, "mad": math.nan, "samples": []}
    med = statistics.median(vals)
    return {"n": len(vals), "median": med, "min": min(vals), "max": max(vals),
            "mad": statistics.median(abs(v - med) for v in vals), "samples": vals}


def latency_summary(samples_s: Sequence[float]) -> dict[str, float]:
    """Seconds in, milliseconds out: n, p50, p99, max, mean (the samples are too many to keep)."""
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


def noise_notes() -> list[str]:
    """What the reader must know of the machine when the figures were taken: its load, and whether that is
    load enough for the wall figures to be noise (``python -m bench --note`` adds what the harness cannot see,
    such as other jobs sharing the cores)."""
    if not hasattr(os, "getloadavg"):
        return []
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    note = f"1-minute load average {load:.1f} on {cpus} CPUs when it ended"
    if load > cpus / 2:
        note += " — taken under load: wall figures are noisy, read CPU figures and medians"
    return [note]


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


@contextlib.contextmanager
def redis_url(opts: Options) -> Iterator[str]:
    """The suite's redis-server (``opts.redis_url``), or a throw-away one while a benchmark runs alone."""
    if opts.redis_url is not None:
        yield opts.redis_url
        return
    from dbtbus.testing.redis_server import RedisServer

    with RedisServer() as server:
        yield server.url


def machine() -> dict[str, Any]:
    """The machine the figures come from (psutil where it can tell)."""
    try:
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME", "")
    except (AttributeError, OSError):
        os_name = ""
    try:
        import psutil

        ram: int | None = int(psutil.virtual_memory().total)
        cpus: int | None = psutil.cpu_count()
    except ImportError:
        ram, cpus = _ram_bytes(), os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cpus": cpus,
        "ram_bytes": ram,
        "os": f"{os_name or platform.system()} (kernel {platform.release()})",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def versions() -> dict[str, str | None]:
    """The versions measured: dbtbus, dbt and its adapter, Redis and its client, anyio."""
    return {
        "dbtbus": _version("dbtbus"),
        "dbtbus_bytecode": {True: "compiled before the run", False: "compiling failed"}.get(
            _bytecode, "not compiled"),  # type: ignore[arg-type]
        "dbt_core": _version("dbt-core"),
        "dbt_duckdb": _version("dbt-duckdb"),
        "duckdb": _version("duckdb"),
        "redis_server": redis_server_version(),
        "redis_py": _version("redis"),
        "hiredis": _version("hiredis"),
        "anyio": _version("anyio"),
        "apache_airflow": _version("apache-airflow"),
    }


def standalone(name: str, argv: Sequence[str] | None = None,
               child: Callable[[list[str]], None] | None = None) -> None:
    """``python -m bench.<name> [--quick] [--results-dir D]``: one benchmark through the harness; with
    ``--child …``, the benchmark's ``child`` (a measured process it started) instead."""
    import argparse

    args_in = sys.argv[1:] if argv is None else list(argv)
    if child is not None and "--child" in args_in:
        child(args_in)
        return
    discover()
    bench_ = REGISTRY[name]
    parser = argparse.ArgumentParser(description=bench_.doc)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--large", action="store_true")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(args_in)
    compile_bytecode()
    opts = Options(quick=args.quick or args.tiny, tiny=args.tiny, large=args.large, results_dir=args.results_dir)
    print(write_result(opts.results_dir, run_benchmark(bench_, opts)))


def _default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


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
    """Compile dbtbus's modules (and the benchmarks' own, which a deployment's processes import) to bytecode,
    as installing a wheel does, and say whether every one compiled.

    An editable checkout has no ``.pyc`` files, and where ``PYTHONDONTWRITEBYTECODE`` is set (CI machines
    often set it) every benchmark child would compile dbtbus from source at import: ~1.4 MiB of the
    compiler's RSS that stays resident, charged to dbtbus, and a few ms of import time no installed copy pays.
    Under Airflow it is more: every parse of a DAG file by the dag-processor, every task process and the
    triggerer import dbtbus afresh — compiling it was an eighth of the dag-processor's time at 500 models
    (py-spy). Airflow itself, installed from wheels, has its bytecode. ``compileall`` writes the files
    whatever that variable says; the children then read them.
    """
    import compileall

    import dbtbus

    global _bytecode
    _bytecode = all([bool(compileall.compile_dir(str(Path(dbtbus.__file__).parent), quiet=1)),
                     bool(compileall.compile_dir(str(Path(__file__).parent), quiet=1))])
    return _bytecode


_bytecode: bool | None = None


# ------------------------------------------------------------------------------------------ statistics


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) — no interpolation, so p99 of 100 samples is the 99th."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


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
    """Peak RSS (bytes) of a live process since its exec or its last :func:`reset_peak_rss` (Linux VmHWM).

    psutil has no peak on Linux, and ``ru_maxrss`` is not reset by ``clear_refs`` (and starts from the parent's
    RSS at fork): the high-water mark is read from /proc.
    """
    return _proc_status_field(pid, b"VmHWM:")


def vm_rss(pid: int | str = "self") -> int | None:
    """Current RSS (bytes) from /proc (VmRSS). Not psutil: the measured processes call this, and importing
    psutil there would be counted in what they measure (a bare build never imports it)."""
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


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


