"""The exit codes of ``dbtbus wait``, ``watch``, ``run`` and ``lineage``, what each means (the one table), and the two
command-line errors that end in one of them without a traceback."""

from __future__ import annotations

__all__ = ["EXIT_CODES"]

#: The exit codes of ``dbtbus wait``, ``watch`` and ``run`` (one table: a failed run is 2 whichever command
#: saw it; each command uses the numbers that apply to it).
EXIT_OK = 0
EXIT_USAGE = 1
EXIT_FAILED = 2
EXIT_UPSTREAM_FAILED = 3
EXIT_PRODUCER_LOST = 4
EXIT_NOT_RUN = 5
EXIT_NOT_IN_RUN = 6
EXIT_TIMEOUT = 7
EXIT_UNREACHABLE = 8
EXIT_REJECTED = 9
EXIT_NO_RUN = 10
EXIT_DATA_LOST = 11
EXIT_RUN_NOT_FOUND = 12
EXIT_UNDELIVERED = 13
EXIT_INTERRUPTED = 130

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success: the node succeeded (success, pass, warn, no-op, reused); run/watch: the run succeeded",
    EXIT_USAGE: "usage or configuration error (bad option, bad URL, unreadable file, ambiguous node name...)",
    EXIT_FAILED: "the node failed (error, fail, runtime error, partial success); run/watch: the run finished "
    "with failures, or dbt could not run",
    EXIT_UPSTREAM_FAILED: "an upstream node failed, so dbt skips this one",
    EXIT_PRODUCER_LOST: "the producer stopped heartbeating (or the run crashed) before the node or run finished",
    EXIT_NOT_RUN: "the run ended (finished or crashed) without running the node",
    EXIT_NOT_IN_RUN: "the node is not in the run's selected graph",
    EXIT_TIMEOUT: "--timeout elapsed before the outcome was known",
    EXIT_UNREACHABLE: "the bus's backend (e.g. Redis) cannot be reached",
    EXIT_REJECTED: "the bus's backend refused (authentication, permissions, record size, run claimed by another)",
    EXIT_NO_RUN: "--require-run: the bus has never seen the run",
    EXIT_DATA_LOST: "the run's log lost records (e.g. Redis restarted without persistence) and the node has none left",
    EXIT_RUN_NOT_FOUND: "the run was seen and has since been deleted, expired or flushed from the bus, or its "
    "tombstone says it was deleted or expired",
    EXIT_UNDELIVERED: "lineage: the OpenLineage transport failed to deliver an event (emit the run again: same runs)",
}


class _UsageError(Exception):
    """A mistake in how the command was called: one line, exit code 1."""


class _NoRun(Exception):
    """``--require-run`` and the bus has never seen the run: one line, exit code 10."""
