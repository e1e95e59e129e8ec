"""The ``dbtbus`` subcommands other than ``demo``. Each returns the process exit code."""

from __future__ import annotations

import argparse
import math
import os
import sys
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import anyio

from .._bus import Bus, connect
from .._exceptions import (
    NodeFailed,
    NodeNotInRun,
    NodeNotRun,
    ProducerLost,
    RunLost,
    UpstreamFailed,
    WaitError,
    WaitTimeout,
)
from .._state import RunState
from ..events import NodeResult, RunCrashed, RunFinished
from . import (
    EXIT_FAILED,
    EXIT_NOT_IN_RUN,
    EXIT_NOT_RUN,
    EXIT_OK,
    EXIT_PRODUCER_LOST,
    EXIT_TIMEOUT,
    EXIT_UPSTREAM_FAILED,
    EXIT_USAGE,
    _UsageError,
)
from ._progress import format_counts, make_progress

BusUrl = Callable[..., str]


def new_run_id() -> str:
    return f"run-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def exit_code_of(result: Any, fallback: int) -> int:
    """dbt's exit code from whatever the producer returned (an int, or an object with ``exit_code``)."""
    if getattr(result, "crashed", False) and getattr(result, "exit_code", None) is None:
        return fallback
    if isinstance(result, bool):
        return EXIT_OK if result else 1
    if isinstance(result, int):
        return result
    code = getattr(result, "exit_code", None)
    if isinstance(code, int):
        return code
    return fallback


# ---------------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace, bus_url: BusUrl) -> int:
    dbt_args = list(args.dbt_args)
    if dbt_args[:1] == ["--"]:
        dbt_args = dbt_args[1:]
    if not dbt_args:
        raise _UsageError("no dbt command: dbtbus run [--bus URL] [--run-id ID] -- build --select ...")
    url = bus_url(args, default="memory://")
    run_id = args.run_id or new_run_id()
    try:
        from ..producer import Producer
    except ImportError as exc:
        raise _UsageError(f"the producer is not available ({exc}); pip install 'dbtbus[dbt]'") from None

    sys.stderr.write(f"dbtbus: run id {run_id} on {_redact(url)}\n")
    sys.stderr.flush()

    async def main() -> int:
        progress = make_progress(run_id, args.progress)
        async with connect(url) as bus:
            producer = Producer(bus, run_id=run_id)
            seen_end = anyio.Event()

            async def follow() -> None:
                try:
                    async for entry in bus.subscribe(run_id, follow_attempts=True):
                        progress.update(entry.record)
                        if isinstance(entry.record, (RunFinished, RunCrashed)):
                            seen_end.set()
                except RunLost:
                    pass

            with progress:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(follow)
                    try:
                        result = await producer.ainvoke(dbt_args)
                        with anyio.move_on_after(2.0):
                            await seen_end.wait()
                    finally:
                        tg.cancel_scope.cancel()
        ending = progress.state.ending
        fallback = ending.exit_code if isinstance(ending, RunFinished) else 2
        return exit_code_of(result, fallback)

    code: int = anyio.run(main)
    return code


def _redact(url: str) -> str:
    """A URL without its password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


async def reachable(bus: Bus, run_id: str) -> None:
    """Fail fast (BackendUnavailable → exit code 8) when the backend cannot be reached at all.

    Once waiting, the bus retries through outages by itself; this only checks the start.
    """
    await bus.backend.get_lease(run_id)


# ---------------------------------------------------------------------------------------------- watch


def watch(args: argparse.Namespace, bus_url: BusUrl) -> int:
    url = bus_url(args)
    timeout = math.inf if args.timeout is None else args.timeout

    async def main() -> int:
        async with connect(url) as bus:
            await reachable(bus, args.run_id)
            if args.once:
                state = await bus.run_state(args.run_id)
                print_state(state)
                return _run_exit_code(state)
            progress = make_progress(args.run_id, args.progress)
            with progress:
                with anyio.move_on_after(timeout) as scope:
                    try:
                        async for entry in bus.subscribe(args.run_id):
                            progress.update(entry.record)
                    except RunLost:
                        progress.lost()
                        return EXIT_PRODUCER_LOST
            if scope.cancelled_caught:
                sys.stderr.write(
                    f"dbtbus: run {args.run_id} did not finish within {args.timeout:g} s "
                    f"({progress.summary()})\n"
                )
                return EXIT_TIMEOUT
            return _run_exit_code(progress.state)

    code: int = anyio.run(main)
    return code


def _run_exit_code(state: RunState) -> int:
    ending = state.ending
    if isinstance(ending, RunFinished):
        return EXIT_OK if ending.success else EXIT_FAILED
    if isinstance(ending, RunCrashed) or state.lost:
        return EXIT_PRODUCER_LOST
    if state.started is None:
        return EXIT_NOT_RUN
    return EXIT_OK  # --once on a run in progress


def status_of(state: RunState) -> str:
    if state.started is None:
        return "empty" if not state.results else "unknown"
    if isinstance(state.ending, RunCrashed):
        return "crashed"
    if isinstance(state.ending, RunFinished):
        return "finished"
    if state.lost:
        return "lost"
    return "started"


def print_state(state: RunState) -> None:
    started = state.started
    total = len(state.graph) if state.graph is not None else None
    print(f"run {state.run_id}: {status_of(state)}")
    if started is not None:
        print(f"  command:  dbt {' '.join(started.args) or started.command}")
        print(
            f"  producer: {started.producer.host or '?'} pid {started.producer.pid} "
            f"(dbt {started.dbt_version or '?'})"
        )
        print(f"  started:  {started.started_at:%Y-%m-%d %H:%M:%S %Z}")
    print(
        f"  progress: {len(state.results)}/{total if total is not None else '?'} done, "
        f"{len(state.running)} running"
    )
    print(f"  counts:   {format_counts(state.counts())}")
    ending = state.ending
    if isinstance(ending, RunFinished):
        print(
            f"  result:   {'success' if ending.success else 'failed'} (exit code {ending.exit_code}) "
            f"in {ending.elapsed:.1f}s"
        )
    elif isinstance(ending, RunCrashed):
        print(f"  crashed:  {ending.error}")


# ---------------------------------------------------------------------------------------------- wait

_OUTCOME_CODES: list[tuple[type[WaitError], int, str]] = [
    (NodeFailed, EXIT_FAILED, "failed"),
    (UpstreamFailed, EXIT_UPSTREAM_FAILED, "upstream_failed"),
    (ProducerLost, EXIT_PRODUCER_LOST, "producer_lost"),
    (NodeNotRun, EXIT_NOT_RUN, "not_run"),
    (NodeNotInRun, EXIT_NOT_IN_RUN, "not_in_run"),
    (WaitTimeout, EXIT_TIMEOUT, "timeout"),
]


def classify(error: WaitError) -> tuple[int, str]:
    for kind, code, name in _OUTCOME_CODES:
        if isinstance(error, kind):
            return code, name
    return EXIT_USAGE, "error"


def wait(args: argparse.Namespace, bus_url: BusUrl) -> int:
    url = bus_url(args)

    async def main() -> NodeResult | WaitError:
        async with connect(url) as bus:
            await reachable(bus, args.run_id)
            try:
                return await bus.wait(
                    args.run_id, args.node, timeout=args.timeout, include_tests=args.include_tests
                )
            except WaitError as exc:
                return exc

    outcome = anyio.run(main)
    if isinstance(outcome, NodeResult):
        code, name = EXIT_OK, "success"
    else:
        code, name = classify(outcome)
    if args.quiet:
        return code
    if args.json:
        import orjson

        payload: dict[str, Any] = {
            "run_id": args.run_id,
            "node": args.node,
            "outcome": name,
            "exit_code": code,
        }
        if isinstance(outcome, NodeResult):
            from ..events import encode

            payload["record"] = orjson.loads(encode(outcome))
        else:
            payload["message"] = str(outcome)
            if isinstance(outcome, UpstreamFailed):
                payload["cause"] = outcome.cause
            record = getattr(outcome, "record", None)
            if isinstance(record, NodeResult):
                from ..events import encode

                payload["record"] = orjson.loads(encode(record))
        sys.stdout.write(orjson.dumps(payload).decode() + "\n")
    elif isinstance(outcome, NodeResult):
        seconds = f" in {outcome.execution_time:.1f}s" if outcome.execution_time is not None else ""
        sys.stdout.write(f"{outcome.status.value}: {args.node}{seconds}\n")
    else:
        sys.stdout.write(f"{name.replace('_', ' ')}: {outcome}\n")
    sys.stdout.flush()
    return code


# ---------------------------------------------------------------------------------------------- publish-log


def publish_log(args: argparse.Namespace, bus_url: BusUrl) -> int:
    if args.log != "-" and not os.path.isfile(args.log):
        raise _UsageError(f"no such log file: {args.log}")
    url = bus_url(args)
    try:
        from ..producer import publish_log as publish
    except ImportError as exc:
        raise _UsageError(f"the producer is not available ({exc})") from None
    if args.manifest is not None and not os.path.isfile(args.manifest):
        raise _UsageError(f"no such manifest: {args.manifest}")
    if args.log == "-":
        publish(sys.stdin.buffer, url, run_id=args.run_id, graph=args.manifest)
    else:
        if not os.path.isfile(args.log):
            raise _UsageError(f"no such log file: {args.log}")
        with open(args.log, "rb") as lines:
            publish(lines, url, run_id=args.run_id, graph=args.manifest)
    sys.stderr.write(f"dbtbus: published run {args.run_id} to {_redact(url)}\n")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- runs / gc


async def _states(bus: Bus, run_ids: list[str]) -> list[RunState]:
    states: list[RunState] = []
    for run_id in run_ids:
        states.append(await bus.run_state(run_id))
    return states


def _last_activity(state: RunState) -> datetime | None:
    if state.ending is not None:
        return state.ending.finished_at
    if state.last_heartbeat is not None:
        return state.last_heartbeat.at
    if state.started is not None:
        return state.started.started_at
    return None


def _age(state: RunState, now: datetime) -> float | None:
    last = _last_activity(state)
    return None if last is None else (now - last).total_seconds()


def _human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def runs(args: argparse.Namespace, bus_url: BusUrl) -> int:
    url = bus_url(args)

    async def main() -> list[RunState]:
        async with connect(url) as bus:
            return await _states(bus, await bus.list_runs())

    states = anyio.run(main)
    now = datetime.now(timezone.utc)
    if args.json:
        import orjson

        for state in states:
            ending = state.ending
            payload = {
                "run_id": state.run_id,
                "status": status_of(state),
                "success": ending.success if isinstance(ending, RunFinished) else None,
                "nodes": len(state.graph) if state.graph is not None else None,
                "done": len(state.results),
                "counts": state.counts(),
                "started_at": state.started.started_at.isoformat() if state.started is not None else None,
                "last_activity": (_last_activity(state) or now).isoformat()
                if _last_activity(state)
                else None,
            }
            sys.stdout.write(orjson.dumps(payload).decode() + "\n")
        return EXIT_OK
    if not states:
        sys.stdout.write("no runs\n")
        return EXIT_OK
    rows = [("RUN_ID", "STATUS", "RESULT", "DONE", "COUNTS", "LAST ACTIVITY")]
    for state in states:
        ending = state.ending
        result = ("success" if ending.success else "failed") if isinstance(ending, RunFinished) else "-"
        total = len(state.graph) if state.graph is not None else None
        done = f"{len(state.results)}/{total if total is not None else '?'}"
        rows.append(
            (
                state.run_id,
                status_of(state),
                result,
                done,
                format_counts(state.counts()),
                _human_age(_age(state, now)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        sys.stdout.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() + "\n")
    return EXIT_OK


def gc(args: argparse.Namespace, bus_url: BusUrl) -> int:
    if not args.run_ids and args.older_than is None:
        raise _UsageError("name the runs to delete, or pass --older-than AGE (e.g. 7d)")
    if args.run_ids and args.older_than is not None:
        raise _UsageError("pass either run ids or --older-than, not both")
    url = bus_url(args)

    async def main() -> list[str]:
        async with connect(url) as bus:
            if args.run_ids:
                victims = list(dict.fromkeys(args.run_ids))
            else:
                now = datetime.now(timezone.utc)
                victims = []
                for state in await _states(bus, await bus.list_runs()):
                    age = _age(state, now)
                    in_progress = status_of(state) == "started"
                    if age is not None and age >= args.older_than and not in_progress:
                        victims.append(state.run_id)
            if not args.dry_run:
                for run_id in victims:
                    await bus.delete_run(run_id)
            return victims

    victims = anyio.run(main)
    verb = "would delete" if args.dry_run else "deleted"
    for run_id in victims:
        sys.stdout.write(f"{verb} {run_id}\n")
    total = "would be deleted (dry run)" if args.dry_run else "deleted"
    sys.stdout.write(f"{len(victims)} run(s) {total}\n")
    return EXIT_OK


__all__ = ["gc", "publish_log", "run", "runs", "wait", "watch"]
