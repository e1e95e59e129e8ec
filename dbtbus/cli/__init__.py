"""The ``dbtbus`` command line: run (or resume) dbt with live progress, watch or wait for a run from anywhere,
draw a run as an HTML report, export it as dbt's run_results.json or as OpenLineage events, replay logs, list
and delete runs, and a bundled demo.

Importing this package is cheap: arguments are parsed first and each subcommand imports what it needs.
User errors end as one line on stderr (``dbtbus: error: ...``) and exit code 1, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["EXIT_CODES", "build_parser", "main", "resume"]

from ._exit_codes import (  # noqa: F401 - the codes, importable from the package as before
    EXIT_CODES,
    EXIT_DATA_LOST,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NO_RUN,
    EXIT_NOT_IN_RUN,
    EXIT_NOT_RUN,
    EXIT_OK,
    EXIT_PRODUCER_LOST,
    EXIT_REJECTED,
    EXIT_RUN_NOT_FOUND,
    EXIT_TIMEOUT,
    EXIT_UNDELIVERED,
    EXIT_UNREACHABLE,
    EXIT_UPSTREAM_FAILED,
    EXIT_USAGE,
    _NoRun,
    _UsageError,
)
from ._parser import build_parser, guide_path  # noqa: F401

#: The commands that read what another process published: a memory:// bus cannot show them anything.
_READERS_OF_OTHERS = ("watch", "wait", "runs", "gc", "publish-log", "report", "export", "lineage")


def _bus_url(args: argparse.Namespace, *, default: str | None = None) -> str:
    url: str | None = args.bus or os.environ.get("DBTBUS_URL")
    if not url and default is not None:
        url = default
        sys.stderr.write(
            f"dbtbus: note: no bus given, so this run goes to {default}, which only this process can see: no other "
            "process can watch or wait for it. Pass --bus URL or set DBTBUS_URL (e.g. redis://localhost:6379/0)\n"
        )
    if not url:
        raise _UsageError("no bus: pass --bus URL (e.g. redis://localhost:6379/0) or set DBTBUS_URL")
    if url.startswith("memory:") and args.command in _READERS_OF_OTHERS:
        sys.stderr.write(
            "dbtbus: note: a memory:// bus lives inside one process: this command cannot see other processes' "
            "runs (use redis://...)\n"
        )
    return url


def resume(bus_url: str, run_id: str, dbt_args: Sequence[str] = (), **producer_options: Any) -> Any:
    """``dbtbus run --resume`` from Python: the run's next attempt, without the nodes that already succeeded.

    Reads the run from the bus, leaves out what :meth:`dbtbus.RunState.resume_excludes` names (the rule the
    Airflow producer's retries use), runs dbt in this process (``dbt_args`` default to the previous
    attempt's) and returns the :class:`~dbtbus.ProducerResult`. Raises :class:`~dbtbus.ConfigurationError`
    for a run the bus does not know or one still in progress.
    """
    from ._resume import resume as _resume

    return _resume(bus_url, run_id, dbt_args, **producer_options)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dbtbus`` command line; return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help, --version, or a usage error already reported
        if exc.code is None:
            return EXIT_OK
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    from .._exceptions import BackendRejected, BackendUnavailable, DbtBusError, RunGone

    try:
        if args.command == "demo":
            from ._demo import demo

            return demo(args)
        from . import _commands

        handler = {
            "run": _commands.run,
            "watch": _commands.watch,
            "wait": _commands.wait,
            "publish-log": _commands.publish_log,
            "runs": _commands.runs,
            "gc": _commands.gc,
            "report": _commands.report,
            "export": _commands.export,
            "lineage": _commands.lineage,
        }[args.command]
        return handler(args, _bus_url)
    except _UsageError as exc:
        return _error(str(exc), EXIT_USAGE)
    except _NoRun as exc:
        return _error(str(exc), EXIT_NO_RUN)
    except BackendRejected as exc:  # permanent: never retried
        return _error(f"the bus refused: {type(exc).__name__}: {exc}", EXIT_REJECTED)
    except BackendUnavailable as exc:
        return _error(f"the bus is unreachable: {exc}", EXIT_UNREACHABLE)
    except RunGone as exc:  # deleted, expired or flushed (lineage --follow, --require-run on a tombstone)
        return _error(str(exc), EXIT_RUN_NOT_FOUND)
    except DbtBusError as exc:
        return _error(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        sys.stderr.write("dbtbus: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `dbtbus runs | head`
        return EXIT_OK
    except OSError as exc:  # a file that cannot be read, a project that cannot be copied...
        return _error(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", EXIT_USAGE)


def _error(message: str, code: int) -> int:
    sys.stderr.write(f"dbtbus: error: {message}\n")
    sys.stderr.flush()
    return code
