"""``dbtbus.Producer``: run ONE dbt invocation and publish its per-node results as they happen."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from .._bus import Bus
from .._dbt.args import DBT_LOCK
from .._dbt.exit_codes import EXIT_ERROR, dbt_exit_code, exit_code_crashed
from .._dbt.hook import COMPILED_EVENT, GRAPH_EVENT, RESULTS_EVENT, dbt_elapsed, install_graph_hook, results_payload
from .._exceptions import DbtBusError
from .._limits import DEFAULT_MAX_RECORD_SIZE
from ..events import check_run_id
from . import _memray, _rss
from ._callback import Item, make_callback
from ._lines import LineParser, read_lines
from ._normalise import Normaliser, producer_info
from ._publisher import Ending, Publisher
from ._results import ProducerResult, result_of

logger = logging.getLogger("dbtbus.producer")

#: Flags the subprocess producer appends: JSON on stdout at debug level (NodeStart/NodeFinished are debug).
#: Appended after the caller's arguments (dbt keeps an option's last value): ``--no-quiet`` because a
#: ``--quiet`` (or ``DBT_QUIET``) would silence the very log the producer reads — every node would end not_run.
SUBPROCESS_LOG_ARGS: tuple[str, ...] = ("--log-format", "json", "--log-level", "debug", "--no-quiet")


class Terminated(SystemExit):
    """SIGTERM arrived while the producer ran dbt on the main thread."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


@contextlib.contextmanager
def _sigterm_as_crash() -> Iterator[None]:
    """On the main thread, turn SIGTERM into a :class:`Terminated` exception (restoring the old handler).

    A host that ignores SIGTERM keeps ignoring it: the run is not ended by a signal the process would
    otherwise have shrugged off.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, Terminated):
        return f"terminated by signal {signal.Signals(exc.signum).name}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt)"
    return f"{type(exc).__name__}: {exc}"


def _interruption(error: BaseException | None) -> BaseException | None:
    """The KeyboardInterrupt or SystemExit behind dbt's error, or None when the run was not interrupted.

    An interrupted dbt cancels its adapter's connections, and an adapter whose cancel fails (dbt-duckdb:
    "Connection already closed") ends the run with its own error instead, raised while the interrupt was
    handled: the interrupt is then that error's ``__context__``.
    """
    if error is not None and not isinstance(error, Exception):
        return error
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        # Only a signal's exceptions: a GeneratorExit behind an error is a generator closed, not a run ended.
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _python_of(executable: str) -> str | None:
    """The interpreter of a ``dbt`` console script (its shebang), or None for a non-Python executable."""
    try:
        with open(executable, "rb") as fh:
            first = fh.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!") or b"python" not in first:
        return None
    parts = first[2:].decode(errors="replace").strip().split()
    if not parts:
        return None
    if Path(parts[0]).name == "env" and len(parts) > 1:
        return shutil.which(parts[1])
    return parts[0]


def _bootstrap_source() -> str:
    """The ``python -c`` program of the subprocess producer: the dbt hook, dbt's exit codes, the test-edge
    rule, the bootstrap (:mod:`dbtbus._dbt`).

    Verbatim, in that order: the hook's ``from __future__`` import must come first.
    """
    here = Path(__file__).parent.parent / "_dbt"
    parts = ("hook.py", "exit_codes.py", "test_edges.py", "bootstrap.py")
    return "\n\n".join((here / name).read_text(encoding="utf-8") for name in parts)


class Producer:
    """Runs ONE dbt invocation and publishes each node's result to a bus as dbt reports it.

    ``bus`` is a URL (``memory://demo``, ``redis://…``) or a connected :class:`~dbtbus.Bus`. ``invoke`` runs
    dbt in this process through ``dbtRunner`` (blocking); ``ainvoke`` does the same from async code (dbt on a
    worker thread, the publisher in the caller's loop); ``invoke_subprocess`` runs a ``dbt`` executable —
    possibly of another virtualenv — and reads its JSON log.

    Only one in-process invocation runs at a time per process (dbt's event manager, flags and adapters are
    process globals): concurrent ``invoke``/``ainvoke`` calls wait for each other. ``invoke_subprocess`` does
    not take that lock.

    Every invocation ends the run: nodes without a terminal record get ``not_run``, then ``RunFinished`` (dbt
    returned) or ``RunCrashed`` (KeyboardInterrupt, SIGTERM, a killed subprocess) is published, whatever
    happens. ``retention`` (seconds) expires the run's keys that long after it ends (default: kept).
    ``grace`` (in process): how long to wait, once dbt returned, for nodes still in flight to report (dbt
    returns from ``--fail-fast`` or an interrupt without joining its worker threads).
    ``memray_output``: profile dbt with memray into this file — in this process for ``invoke``/``ainvoke``,
    under ``memray run`` in dbt's own interpreter for ``invoke_subprocess`` (memray must be installed there).
    A profile that cannot be taken raises ``MemrayUnavailable`` (a :class:`~dbtbus.ConfigurationError`) before
    dbt starts.

    ``ProducerResult.peak_rss`` (and the run's end record) is this invocation's peak RSS: in process the
    kernel's high-water mark is reset when dbt starts (Linux), else it is the process's lifetime peak and
    ``peak_rss_scope`` says ``"process"``; for a subprocess it is dbt's own.
    """

    def __init__(
        self,
        bus: str | Bus,
        run_id: str,
        *,
        heartbeat_interval: float = 5.0,
        attempt: int = 1,
        retention: float | None = None,
        flush_timeout: float = 30.0,
        max_buffer: int = 100_000,
        batch_linger: float = 0.002,
        memray_output: str | os.PathLike[str] | None = None,
        grace: float = 2.0,
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
        announce_timeout: float = 5.0,
        batch_size: int = 1000,
    ) -> None:
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive")
        self.max_record_size = max_record_size
        self.batch_size = batch_size
        self.announce_timeout = announce_timeout
        self.bus = bus
        self.run_id = check_run_id(run_id)  # refused here, before dbt or the bus is touched
        self.heartbeat_interval = heartbeat_interval
        self.attempt = attempt
        self.retention = retention
        self.flush_timeout = flush_timeout
        self.max_buffer = max_buffer
        self.batch_linger = batch_linger
        self.memray_output = memray_output
        self.grace = grace

    def __repr__(self) -> str:
        return f"<dbtbus.Producer run_id={self.run_id!r} bus={self.bus!r}>"

    # ------------------------------------------------------------------------------------------ plumbing

    def _url(self) -> str:
        if isinstance(self.bus, Bus):
            if self.bus.url is None:
                raise DbtBusError(
                    "Producer.invoke() publishes from its own thread and needs a bus URL; this Bus was built "
                    "from a backend instance: use 'await producer.ainvoke(...)' or pass a URL"
                )
            return self.bus.url
        return self.bus

    def _publisher(self, kind: str, args: Sequence[str], rss: Any) -> Publisher:
        normaliser = Normaliser(
            self.run_id,
            producer=producer_info(kind),
            args=tuple(args),
            heartbeat_interval=self.heartbeat_interval,
            attempt=self.attempt,
        )
        return Publisher(
            normaliser,
            heartbeat_interval=self.heartbeat_interval,
            batch_linger=self.batch_linger,
            max_buffer=self.max_buffer,
            flush_timeout=self.flush_timeout,
            retention=self.retention,
            rss=rss,
            max_record_size=self.max_record_size,
            batch_size=self.batch_size,
        )

    def _result(self, publisher: Publisher, ending: Ending, dbt_result: Any = None) -> ProducerResult:
        return result_of(publisher, ending, dbt_result)

    def _run_dbt(self, args: Sequence[str], publisher: Publisher) -> tuple[Any, Ending, BaseException | None]:
        """Run dbtRunner with the callback and the graph hook; classify how it ended. Never raises."""
        from dbt.cli.main import dbtRunner

        callback = make_callback(publisher.push)
        started = time.perf_counter()
        res: Any = None
        reraise: BaseException | None = None
        with DBT_LOCK:
            run_peak = _rss.start_run_peak()  # this invocation's peak, not the host process's lifetime one
            restore = install_graph_hook(
                lambda payload: publisher.push((GRAPH_EVENT, (payload, {}))),
                args,
                lambda payload: publisher.push((COMPILED_EVENT, (payload, {}))),
            )
            try:
                with _sigterm_as_crash(), _memray.tracking(self.memray_output):
                    res = dbtRunner(callbacks=[callback]).invoke(list(args))
            except BaseException as exc:  # SIGTERM/KeyboardInterrupt outside dbt's own try, or a producer bug
                reraise = exc
            finally:
                restore()
        elapsed = time.perf_counter() - started
        peak = run_peak.peak()
        scope = run_peak.scope
        error: BaseException | None = reraise if reraise is not None else getattr(res, "exception", None)
        interrupt = _interruption(error)
        if interrupt is not None:
            # KeyboardInterrupt, SystemExit, SIGTERM: dbt did not get to the end of the run.
            code = interrupt.code if isinstance(interrupt, SystemExit) and isinstance(interrupt.code, int) else None
            dbt_results = results_payload(res) if res is not None else None
            described = _describe(interrupt)
            if error is not None and error is not interrupt:
                described += f", then dbt failed: {_describe(error)}"
            ending = Ending(
                crashed=True, error=described, elapsed=elapsed, peak_rss=peak, exit_code=code,
                dbt_results=dbt_results, grace=self.grace, peak_rss_scope=scope,
            )
            return res, ending, interrupt
        if reraise is not None:
            ending = Ending(
                crashed=True, error=_describe(reraise), elapsed=elapsed, peak_rss=peak, peak_rss_scope=scope
            )
            return res, ending, reraise
        success = bool(res.success)
        ending = Ending(
            crashed=False,
            success=success,
            exit_code=dbt_exit_code(success, error),
            error=None if error is None else _describe(error),
            elapsed=elapsed,
            peak_rss=peak,
            dbt_results=results_payload(res),
            grace=self.grace,
            peak_rss_scope=scope,
            dbt_elapsed=dbt_elapsed(res),
        )
        return res, ending, None

    def _announced(self, publisher: Publisher) -> None:
        """Wait (up to ``announce_timeout``) for the attempt's RunStarted to reach the bus before dbt starts.

        A permanent rejection (bad credentials, an ACL denial, a run another producer holds) is raised here,
        before dbt runs: a run nobody can follow is not started. A slow or unreachable backend only delays
        dbt by ``announce_timeout``; the records queue and go out once it answers.
        """
        publisher.wait_announced(self.announce_timeout)
        if publisher.rejected is not None:
            publisher.join(self.flush_timeout)
            raise publisher.rejected

    # ------------------------------------------------------------------------------------------ in-process

    def invoke(self, args: Sequence[str]) -> ProducerResult:
        """Run dbt in this process (blocking) and publish the run; return dbt's result and a summary.

        The publisher runs on its own thread with its own connection to the bus (a connected Bus passed to
        the constructor is reconnected by URL). SIGTERM, when called on the main thread, and
        KeyboardInterrupt end the run as crashed, then propagate.
        """
        url = self._url()
        if self.memray_output is not None:
            _memray.require_in_process(self.memray_output)  # before anything is published
        publisher = self._publisher("dbtRunner", args, _rss.self_peak)
        publisher.start_thread(url)
        self._announced(publisher)
        res: Any = None
        ending: Ending | None = None
        exc: BaseException | None = None
        try:
            res, ending, exc = self._run_dbt(args, publisher)
        finally:
            if ending is None:  # pragma: no cover - _run_dbt never raises
                ending = Ending(crashed=True, error="the producer failed", peak_rss=_rss.self_peak())
            publisher.finish(ending)
            if not publisher.join(self.flush_timeout + 10):
                logger.error("dbtbus: the publisher of run %r did not finish in time", self.run_id)
        if exc is not None:
            raise exc
        return self._result(publisher, ending, res)

    async def ainvoke(self, args: Sequence[str]) -> ProducerResult:
        """Run dbt in this process on a worker thread; publish from a task of the calling event loop."""
        if self.memray_output is not None:
            _memray.require_in_process(self.memray_output)
        publisher = self._publisher("dbtRunner", args, _rss.self_peak)
        outcome: list[Any] = []

        async def run_publisher(bus: Bus) -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(publisher.run, bus)
                with anyio.move_on_after(self.announce_timeout):
                    while not publisher.announced.is_set():  # noqa: ASYNC110 - a threading.Event
                        await anyio.sleep(0.005)
                if publisher.rejected is not None:
                    return  # dbt never starts: the publisher task has stopped on its own
                try:
                    outcome.extend(await anyio.to_thread.run_sync(self._run_dbt, args, publisher))
                finally:
                    if not outcome:
                        outcome.extend([None, Ending(crashed=True, error="the producer was cancelled"), None])
                    publisher.finish(outcome[1])

        if isinstance(self.bus, Bus):
            await run_publisher(self.bus)
        else:
            from .._bus import connect

            async with connect(self.bus) as bus:
                await run_publisher(bus)
        if publisher.rejected is not None and not outcome:
            raise publisher.rejected
        res, ending, exc = outcome
        if exc is not None:
            raise exc
        return self._result(publisher, ending, res)

    # ------------------------------------------------------------------------------------------ subprocess

    def invoke_subprocess(
        self,
        args: Sequence[str],
        *,
        dbt_executable: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        max_line: int = 1 << 20,
        log_args: Sequence[str] = SUBPROCESS_LOG_ARGS,
    ) -> ProducerResult:
        """Run dbt in another process (``dbt_executable``, default ``dbt`` on PATH) and publish from its log.

        dbt runs with ``log_args`` appended (default ``--log-format json --log-level debug --no-quiet``: NodeStart and
        NodeFinished are debug-level; add ``--log-level-file none`` to skip dbt's own file log, ~2-3 % faster
        on a 2-core machine, see docs/benchmarks.md); stdout is read line by line. When the
        executable is a Python console script (the usual ``bin/dbt``), its interpreter runs a small
        self-contained bootstrap (no dbtbus needed there) that also prints dbt's selected graph before the
        first node and dbt's final results after the last, so the run starts with the exact graph and
        ``--fail-fast`` reconciles exactly. A process killed by a signal ends the run as crashed.
        """
        exe = os.fspath(dbt_executable) if dbt_executable is not None else shutil.which("dbt")
        if exe is None:
            raise DbtBusError("no dbt executable: pass dbt_executable=... or put dbt on PATH")
        python = _python_of(exe)
        tail = [*args, *log_args]
        if self.memray_output is not None:  # dbt's own interpreter runs under ``memray run``
            cmd = _memray.memray_command(python, self.memray_output, _bootstrap_source(), tail)
        else:
            cmd = [python, "-c", _bootstrap_source(), *tail] if python else [exe, *tail]
        child_env = dict(os.environ if env is None else env)
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        url = self._url()

        proc_box: list[subprocess.Popen[bytes]] = []
        sampler = _rss.PeakSampler(None)

        def rss() -> int | None:
            if proc_box and proc_box[0].returncode is None:
                sampler.pid = proc_box[0].pid
                return sampler.sample()
            return sampler.peak

        publisher = self._publisher("subprocess", args, rss)
        reported_peak: list[int] = []

        def push(item: Item) -> None:
            name, payload = item
            if name == RESULTS_EVENT:  # the bootstrap's own VmHWM: exact, and blind to this process's size
                peak = payload[0].get("peak_rss") if isinstance(payload, tuple) else None
                if isinstance(peak, int) and peak > 0:
                    reported_peak.append(peak)
            publisher.push(item)

        parser = LineParser(push)
        publisher.start_thread(url)
        self._announced(publisher)
        started = time.perf_counter()
        ending: Ending | None = None
        reraise: BaseException | None = None
        try:
            with _sigterm_as_crash():
                proc = subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=child_env, cwd=cwd,
                )
                proc_box.append(proc)
                try:
                    assert proc.stdout is not None
                    read_lines(proc.stdout, parser.feed, max_line)
                    rss()  # one last VmHWM sample while the child may still be alive
                    code, waited_peak = self._wait(proc)
                    peak = reported_peak[-1] if reported_peak else (sampler.peak or waited_peak)
                except BaseException:
                    self._stop(proc)
                    raise
            ending = self._subprocess_ending(code, peak, time.perf_counter() - started, parser, publisher)
        except BaseException as exc:
            reraise = exc
            ending = Ending(
                crashed=True, error=_describe(exc), elapsed=time.perf_counter() - started,
                peak_rss=sampler.peak, exit_code=proc_box[0].returncode if proc_box else None,
            )
        finally:
            assert ending is not None
            if ending.peak_rss_scope is None:
                ending.peak_rss_scope = _rss.INVOCATION  # the child's own high-water mark
            publisher.finish(ending)
            if not publisher.join(self.flush_timeout + 10):
                logger.error("dbtbus: the publisher of run %r did not finish in time", self.run_id)
        if reraise is not None:
            raise reraise
        return self._result(publisher, ending, None)

    @staticmethod
    def _wait(proc: subprocess.Popen[bytes]) -> tuple[int, int | None]:
        """Wait for the child; return its exit code (negative: killed by that signal) and exact peak RSS."""
        if hasattr(os, "wait4"):
            try:
                _, status, rusage = os.wait4(proc.pid, 0)
            except ChildProcessError:
                return proc.wait(), None
            code = os.waitstatus_to_exitcode(status)
            proc.returncode = code
            return code, _rss.rusage_peak(rusage)
        code = proc.wait()  # pragma: no cover - non-POSIX
        return code, _rss.psutil_rss()  # pragma: no cover

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            return
        try:
            proc.terminate()
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        except OSError:
            pass

    @staticmethod
    def _subprocess_ending(
        code: int, peak: int | None, elapsed: float, parser: LineParser, publisher: Publisher
    ) -> Ending:
        if exit_code_crashed(code):
            if code < 0:
                try:
                    name = signal.Signals(-code).name
                except ValueError:
                    name = str(-code)
                error = f"dbt was killed by signal {name}"
            else:
                error = f"dbt exited with code {code}: {parser.last_error or 'no error logged'}"
            return Ending(crashed=True, error=error, exit_code=code, elapsed=elapsed, peak_rss=peak)
        failed = (parser.last_error or "dbt failed with an unhandled error") if code == EXIT_ERROR else None
        return Ending(
            crashed=False, success=code == 0, exit_code=code, error=failed, elapsed=elapsed, peak_rss=peak
        )
