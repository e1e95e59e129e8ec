"""The ``dbtbus`` subcommands other than ``demo``. Each returns the process exit code."""

from __future__ import annotations

import argparse
import math
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from functools import partial
from typing import Any, TypeVar

import anyio

from .._bus import Bus, connect
from .._exceptions import BackendRejected, RunGone, RunLost
from .._format import clock_skew_text, format_counts, redact_url
from .._kinds import OutcomeKind, RunStatus
from .._outcome import Outcome
from .._state import RunState
from ..events import RunCrashed, RunFinished, RunStarted
from ._exit_codes import (
    EXIT_DATA_LOST,
    EXIT_FAILED,
    EXIT_NOT_IN_RUN,
    EXIT_NOT_RUN,
    EXIT_OK,
    EXIT_PRODUCER_LOST,
    EXIT_RUN_NOT_FOUND,
    EXIT_TIMEOUT,
    EXIT_UNDELIVERED,
    EXIT_UPSTREAM_FAILED,
    _NoRun,
    _UsageError,
)
from ._progress import make_progress

BusUrl = Callable[..., str]
T = TypeVar("T")


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


def _exit_code_of_dbt(result: Any) -> int:
    """``run``'s exit code from what the producer returned, when the run's end did not come back from the bus
    in time: the code :func:`run_exit_code` gives for the same ending."""
    from .._dbt.exit_codes import EXIT_SUCCESS

    if getattr(result, "crashed", False):
        return EXIT_PRODUCER_LOST
    return EXIT_OK if exit_code_of(result, EXIT_FAILED) == EXIT_SUCCESS else EXIT_FAILED


#: How long ``wait`` and ``watch`` give a run the bus has never seen before they say so on stderr.
UNSEEN_NOTICE_DELAY = 3.0


async def run_seen(bus: Bus, run_id: str) -> bool:
    """Has the bus any record of the run? (One read of the start of its log.)"""
    entries = bus.history(run_id)
    try:
        async for _ in entries:
            return True
        return False
    finally:
        await entries.aclose()  # type: ignore[attr-defined]


async def run_deleted(bus: Bus, run_id: str) -> bool:
    """Does the backend's tombstone say the run (whose log reads empty) was deleted or expired?"""
    return (await bus.run_state(run_id)).tombstoned


def _unseen(run_id: str, url: str) -> str:
    return f"run {run_id!r} has not been seen on {redact_url(url)}"


async def require_run(bus: Bus, run_id: str, url: str) -> None:
    """``--require-run``: a run the bus has never seen is an error (exit code 10), not a wait — and one its
    tombstone says was deleted or expired is :class:`~dbtbus.RunGone` (exit code 12), not "never seen"."""
    if not await run_seen(bus, run_id):
        if await run_deleted(bus, run_id):
            raise RunGone(run_id=run_id, tombstone=True)
        raise _NoRun(f"{_unseen(run_id, url)} (--require-run); check the run id and the bus")


async def notice_unseen(
    seen: Callable[[], Any],
    run_id: str,
    url: str,
    delay: float | None = None,
    gone: Callable[[], Awaitable[bool]] | None = None,
) -> None:
    """After ``delay`` seconds, say on stderr that the run has not been seen yet (``seen()`` is awaited) — or,
    when ``gone()`` says a tombstone marks it, that it was deleted or expired (a waiter usually hears that at
    once; one that still waits, waits for the run id to be used again)."""
    await anyio.sleep(UNSEEN_NOTICE_DELAY if delay is None else delay)
    if await seen():
        return
    if gone is not None and await gone():
        sys.stderr.write(f"dbtbus: run {run_id!r} on {redact_url(url)} was deleted or expired (a tombstone says "
                         "so); still waiting for it to start again\n")
    else:
        sys.stderr.write(f"dbtbus: {_unseen(run_id, url)} yet; still waiting (--require-run to fail instead)\n")
    sys.stderr.flush()


async def noticing_unseen(work: Awaitable[T], seen: Callable[[], Any], run_id: str, url: str, bus: Bus) -> T:
    """Await ``work`` while :func:`notice_unseen` watches the clock; ``work``'s exceptions propagate as they
    are (not wrapped in an exception group: the command's error handling sees them)."""
    results: list[T] = []
    errors: list[Exception] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(notice_unseen, seen, run_id, url, None, partial(run_deleted, bus, run_id))
        try:
            results.append(await work)
        except Exception as exc:  # re-raised below, outside the task group
            errors.append(exc)
        finally:
            tg.cancel_scope.cancel()
    if errors:
        raise errors[0]
    return results[0]


# ---------------------------------------------------------------------------------------------- run


#: dbt flags that already say how much dbt prints: then dbtbus leaves dbt's output alone.
_DBT_OUTPUT_FLAGS = ("--log-level", "--quiet", "-q", "--no-quiet", "--print", "--no-print")
#: Appended to the dbt command line unless --dbt-output: dbt's stdout says nothing (its callbacks, which the
#: producer listens to, still get every event); dbtbus prints each node instead, and dbt's errors itself.
QUIET_DBT_ARGS = ("--log-level", "none")


def dbt_output_args(dbt_args: list[str], *, show: bool, colour: bool) -> list[str]:
    """The flags to add to a dbt command line for dbtbus's output manners."""
    flags = {arg.split("=", 1)[0] for arg in dbt_args}
    extra: list[str] = []
    if not show and not flags & set(_DBT_OUTPUT_FLAGS):
        extra += QUIET_DBT_ARGS
    if not colour and not flags & {"--use-colors", "--no-use-colors"}:
        extra.append("--no-use-colors")
    return extra


def use_colour(stream: Any = None) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (https://no-color.org)."""
    target = stream if stream is not None else sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(target, "isatty", None)
    return bool(isatty and isatty())


#: How long `dbtbus run` gives the bus to answer before it starts dbt.
BUS_CHECK_TIMEOUT = 5.0


async def check_bus(bus: Bus, run_id: str) -> None:
    """One key lookup, not retried: an unreachable bus fails here (exit code 8) in seconds — before dbt starts,
    before a wait begins. Once reading, the bus retries through outages by itself."""
    from .._exceptions import BackendUnavailable

    with anyio.move_on_after(BUS_CHECK_TIMEOUT) as scope:
        await bus.probe(run_id, "dbtbus.reachability-check")
    if scope.cancelled_caught:
        raise BackendUnavailable(f"no answer within {BUS_CHECK_TIMEOUT:g} s")


async def read_run(bus: Bus, run_id: str) -> RunState:
    """The run as the bus holds it now (checked reachable first)."""
    await check_bus(bus, run_id)
    return await bus.run_state(run_id)


def run(args: argparse.Namespace, bus_url: BusUrl) -> int:
    dbt_args = list(args.dbt_args)
    if dbt_args[:1] == ["--"]:
        dbt_args = dbt_args[1:]
    if not dbt_args and args.resume is None:
        raise _UsageError("no dbt command: dbtbus run [--bus URL] [--run-id ID] -- build --select ...")
    if args.resume is not None and args.run_id is not None and args.run_id != args.resume:
        raise _UsageError("--resume RUN_ID continues that run: do not pass another --run-id")
    url = bus_url(args, default="memory://")
    if args.resume is not None and url.startswith("memory:"):
        raise _UsageError("--resume needs a bus that outlives a process (redis://...): a memory:// bus starts empty")
    run_id = args.resume or args.run_id or new_run_id()
    try:
        from ..producer import Producer
    except ImportError as exc:
        raise _UsageError(f"the producer is not available ({exc}); pip install 'dbtbus[dbt]'") from None
    memray_output = getattr(args, "memray", None)
    if memray_output is not None:  # refuse before the run exists, not as a crashed run
        from ..producer._memray import require_in_process

        require_in_process(memray_output)

    async def main() -> int:
        async with connect(url) as bus:
            previous = await read_run(bus, run_id) if args.resume is not None else None
            attempt = 1
            command = dbt_args
            if previous is None:
                await check_bus(bus, run_id)
            else:
                from ._resume import resume_plan

                plan = resume_plan(previous, dbt_args)
                attempt, command = plan.attempt, plan.dbt_args
                sys.stderr.write(f"dbtbus: {plan.describe()}\n")
            command = command + dbt_output_args(command, show=args.dbt_output, colour=use_colour())
            sys.stderr.write(f"dbtbus: run id {run_id} on {redact_url(url)}\n")
            sys.stderr.flush()
            progress = make_progress(run_id, args.progress)
            producer = Producer(bus, run_id=run_id, attempt=attempt, memray_output=memray_output)
            seen_end = anyio.Event()

            async def follow() -> None:
                ours = False  # the log starts with the earlier attempts of a resumed run: not news
                try:
                    async for entry in bus.subscribe(run_id, follow_attempts=True):
                        record = entry.record
                        ours = ours or (isinstance(record, RunStarted) and record.attempt >= attempt)
                        if not ours:
                            continue
                        progress.update(record)
                        if isinstance(record, (RunFinished, RunCrashed)):
                            seen_end.set()
                except (RunLost, RunGone):
                    pass

            with progress:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(follow)
                    try:
                        result = await producer.ainvoke(command)
                        with anyio.move_on_after(2.0):
                            await seen_end.wait()
                    finally:
                        tg.cancel_scope.cancel()
        error = getattr(result, "error", None)
        if error and progress.quiet:  # dbt's own errors are always shown
            sys.stderr.write(f"dbtbus: dbt: {error}\n")
        if progress.state.ending is not None:  # the code `dbtbus watch` gives the same run
            return run_exit_code(progress.state)
        return _exit_code_of_dbt(result)

    code: int = anyio.run(main)
    return code


# ---------------------------------------------------------------------------------------------- watch


def watch(args: argparse.Namespace, bus_url: BusUrl) -> int:
    url = bus_url(args)
    timeout = math.inf if args.timeout is None else args.timeout

    async def main() -> int:
        async with connect(url) as bus:
            await check_bus(bus, args.run_id)
            if args.require_run:
                await require_run(bus, args.run_id, url)
            if args.once:
                state = await bus.run_state(args.run_id)
                if args.json:
                    write_json_lines(record for record in _records_of(state))
                else:
                    print_state(state, url)
                return run_exit_code(state)
            progress = make_progress(args.run_id, "json" if args.json else args.progress)

            async def seen() -> bool:
                return progress.seen

            async def follow() -> bool:
                """Show the run's records until it ends; False when its producer was lost."""
                try:
                    async for entry in bus.subscribe(args.run_id):
                        progress.update(entry.record, bus.backend.stored_at(entry.cursor))
                except RunLost:
                    progress.lost()
                    return False
                except RunGone as exc:  # deleted, expired or flushed under the watcher: exit 12, not "lost"
                    if exc.tombstone:  # before the watcher read anything of it
                        progress.state.mark_tombstoned()
                    else:
                        progress.state.mark_gone()
                    sys.stderr.write(f"dbtbus: {exc}\n")
                    return True
                return True

            ended = True
            with progress, anyio.move_on_after(timeout) as scope:
                ended = await noticing_unseen(follow(), seen, args.run_id, url, bus)
            if not ended:
                return EXIT_PRODUCER_LOST
            if scope.cancelled_caught:
                if progress.seen:
                    what = f"run {args.run_id} did not finish within {args.timeout:g} s ({progress.summary()})"
                else:
                    what = f"{_unseen(args.run_id, url)} within {args.timeout:g} s: it has not started"
                sys.stderr.write(f"dbtbus: {what}\n")
                return EXIT_TIMEOUT
            return run_exit_code(progress.state)

    code: int = anyio.run(main)
    return code


#: ``watch``'s exit code for a run that ended, or was lost, or (``--once``) is still running or unknown.
_RUN_EXIT: dict[RunStatus, int] = {
    RunStatus.CRASHED: EXIT_PRODUCER_LOST,
    RunStatus.LOST: EXIT_PRODUCER_LOST,
    RunStatus.GONE: EXIT_RUN_NOT_FOUND,
    RunStatus.PENDING: EXIT_NOT_RUN,
    RunStatus.RUNNING: EXIT_OK,  # --once on a run in progress
}
#: How ``runs`` and ``watch --once`` name a run's status.
_STATUS_LABEL: dict[RunStatus, str] = {
    RunStatus.PENDING: "empty",
    RunStatus.RUNNING: "started",
    RunStatus.FINISHED: "finished",
    RunStatus.CRASHED: "crashed",
    RunStatus.LOST: "lost",
    RunStatus.GONE: "gone",
}


def run_exit_code(state: RunState) -> int:
    """The exit code of a run as it stands (``run`` and ``watch`` alike): see :data:`dbtbus.cli.EXIT_CODES`."""
    ending = state.ending
    if state.status is RunStatus.FINISHED and isinstance(ending, RunFinished):
        return EXIT_OK if ending.success else EXIT_FAILED
    return _RUN_EXIT.get(state.status, EXIT_PRODUCER_LOST)


def status_of(state: RunState) -> str:
    if state.status is RunStatus.PENDING and state.results:
        return "unknown"
    return _STATUS_LABEL[state.status]


def print_state(state: RunState, url: str | None = None) -> None:
    started = state.started
    total = state.total
    if started is None and not state.results and state.ending is None:
        where = f" on {redact_url(url)}" if url is not None else ""
        print(f"run {state.run_id}: not seen{where}: it has not started (or the run id or the bus is wrong)")
        return
    print(f"run {state.run_id}: {status_of(state)}")
    if started is not None:
        print(f"  command:  dbt {' '.join(started.args) or started.command}")
        print(
            f"  producer: {started.producer.host or '?'} pid {started.producer.pid} "
            f"(dbt {started.dbt_version or '?'})"
        )
        print(f"  started:  {state.backend_time(started.started_at):%Y-%m-%d %H:%M:%S %Z}{_skew_note(state)}")
    print(
        f"  progress: {len(state.results)}/{total if total is not None else '?'} done, "
        f"{len(state.running)} running"
    )
    print(f"  counts:   {format_counts(state.counts())}")
    ending = state.ending
    if isinstance(ending, RunFinished):
        print(
            f"  result:   {'success' if ending.success else 'failed'} (dbt exit code {ending.exit_code}) "
            f"in {ending.elapsed:.1f}s"
        )
    elif isinstance(ending, RunCrashed):
        print(f"  crashed:  {ending.error}")


def write_json_lines(records: Any, stream: Any = None) -> None:
    """Each record in its wire form (what :func:`dbtbus.events.decode` reads back), one per line."""
    from ..events import encode

    out = stream if stream is not None else sys.stdout
    for record in records:
        out.write(encode(record).decode() + "\n")
    out.flush()


def _records_of(state: RunState) -> list[Any]:
    """A snapshot's records for ``watch --once --json``: the run's start, its results, its end."""
    records: list[Any] = []
    if state.started is not None:
        records.append(state.started)
    results = state.results.values()
    records.extend(sorted(results, key=lambda r: (r.finished_at is None, str(r.finished_at), r.unique_id)))
    records.extend(state.running.values())
    if state.ending is not None:
        records.append(state.ending)
    return records


# ---------------------------------------------------------------------------------------------- report / export



def _recorded_run(url: str, run_id: str) -> RunState:
    """Run ``run_id`` read whole from the bus at ``url``; a usage error when the bus has no record of it."""

    async def main() -> RunState:
        async with connect(url) as bus:
            return await read_run(bus, run_id)

    state = anyio.run(main)
    if state.started is None and not state.results:
        raise _UsageError(f"the bus has no record of run {run_id}")
    return state


def report(args: argparse.Namespace, bus_url: BusUrl) -> int:
    url = bus_url(args)
    try:
        import jinja2  # noqa: F401
    except ImportError:
        raise _UsageError("the HTML report needs jinja2: pip install 'dbtbus[report]'") from None
    from ..report import render_state

    state = _recorded_run(url, args.run_id)
    page = render_state(state)
    target = args.output or f"{args.run_id}.html"
    if target == "-":
        sys.stdout.write(page)
        sys.stdout.flush()
        return EXIT_OK
    with open(target, "w", encoding="utf-8") as fh:
        fh.write(page)
    sys.stderr.write(f"dbtbus: wrote {target} ({len(page.encode()) / 1024:.0f} KiB) for run {args.run_id}\n")
    return EXIT_OK


def export(args: argparse.Namespace, bus_url: BusUrl) -> int:
    url = bus_url(args)
    from ..export import run_results, write_run_results

    state = _recorded_run(url, args.run_id)
    import orjson

    if args.run_results == "-":
        sys.stdout.write(orjson.dumps(run_results(state), option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    path = write_run_results(state, args.run_results)
    # what the file holds: ephemeral models are left out and nodes a finished run never reached are in
    written = len(orjson.loads(path.read_bytes())["results"])
    sys.stderr.write(
        f"dbtbus: wrote {args.run_results}: {written} result(s) of run {args.run_id} ({status_of(state)})\n"
    )
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- lineage


def lineage(args: argparse.Namespace, bus_url: BusUrl) -> int:
    """``dbtbus lineage``: the run's OpenLineage events through the client the environment configures."""
    url = bus_url(args)
    from functools import partial

    from ..lineage import LineageUndelivered, ParentRun, aemit_lineage, naming_from_run
    from ..lineage._follow import default_client

    if args.root_parent and not args.parent:
        raise _UsageError("--root-parent names the root above a --parent: give --parent too")
    parent = ParentRun.parse(args.parent, args.root_parent) if args.parent else None
    naming = None if args.no_datasets else partial(
        naming_from_run, project_dir=args.project_dir, profiles_dir=args.profiles_dir, target=args.target,
        manifest_path=args.manifest,
    )  # fmt: skip
    client = default_client()
    transport = getattr(getattr(client, "transport", None), "kind", None) or "no transport"

    async def main() -> Any:
        async with connect(url) as bus:
            if args.require_run:
                await require_run(bus, args.run_id, url)
            work = aemit_lineage(
                bus, args.run_id, naming=naming, follow=args.follow, client=client, job_namespace=args.namespace,
                job_name=args.job_name, parent=parent,
            )  # fmt: skip
            if not args.follow:
                return await work
            return await noticing_unseen(work, partial(run_seen, bus, args.run_id), args.run_id, url, bus)

    try:
        result = anyio.run(main)
    except LineageUndelivered as exc:
        sys.stderr.write(f"dbtbus: error: {exc}\n")
        return EXIT_UNDELIVERED
    sent = format_counts(result.events) if result.events else "none"
    state = "lost its producer: its open runs were ended" if result.lost else (
        "ended" if result.ended else "still in progress: its open runs stay open (--follow to end them)")
    sys.stderr.write(f"dbtbus: run {args.run_id} {state}; OpenLineage events sent ({transport}): {sent}\n")
    return EXIT_PRODUCER_LOST if result.lost else EXIT_OK


# ---------------------------------------------------------------------------------------------- wait

#: The exit code of each outcome of ``dbtbus wait``.
EXIT_BY_KIND: dict[OutcomeKind, int] = {
    OutcomeKind.SUCCESS: EXIT_OK,
    OutcomeKind.FAILED: EXIT_FAILED,
    OutcomeKind.UPSTREAM_FAILED: EXIT_UPSTREAM_FAILED,
    OutcomeKind.PRODUCER_LOST: EXIT_PRODUCER_LOST,
    OutcomeKind.DATA_LOST: EXIT_DATA_LOST,
    OutcomeKind.RUN_NOT_FOUND: EXIT_RUN_NOT_FOUND,
    OutcomeKind.NOT_RUN: EXIT_NOT_RUN,
    OutcomeKind.NOT_IN_RUN: EXIT_NOT_IN_RUN,
    OutcomeKind.TIMEOUT: EXIT_TIMEOUT,
}


def wait(args: argparse.Namespace, bus_url: BusUrl) -> int:
    url = bus_url(args)
    resolved = _Resolved(args.node)

    async def main() -> Outcome:
        async with connect(url) as bus:
            await check_bus(bus, args.run_id)
            if args.require_run:
                await require_run(bus, args.run_id, url)

            async def seen() -> bool:
                return await run_seen(bus, args.run_id)

            return await noticing_unseen(_node_outcome(bus, args, resolved), seen, args.run_id, url, bus)

    outcome = anyio.run(main)
    node = resolved.unique_id
    code = EXIT_BY_KIND[outcome.kind]
    if resolved.suggestions and not args.quiet and not args.json:
        sys.stderr.write(f"dbtbus: did you mean {' or '.join(resolved.suggestions)}?\n")
    if args.quiet:
        return code
    if args.json:
        import orjson

        payload: dict[str, Any] = {
            "run_id": args.run_id,
            "node": node,
            "outcome": outcome.kind.value,
            "exit_code": code,
        }
        if not outcome.ok:
            payload["message"] = outcome.message
        if outcome.cause is not None:
            payload["cause"] = outcome.cause
        if resolved.suggestions:
            payload["did_you_mean"] = resolved.suggestions
        if outcome.record is not None:
            from ..events import to_dict

            payload["record"] = to_dict(outcome.record)
        sys.stdout.write(orjson.dumps(payload).decode() + "\n")
    elif outcome.ok and outcome.record is not None:
        record = outcome.record
        seconds = f" in {record.execution_time:.1f}s" if record.execution_time is not None else ""
        sys.stdout.write(f"{record.status.value}: {node}{seconds}\n")
    else:
        message = outcome.message
        if outcome.kind is OutcomeKind.TIMEOUT and not resolved.seen:
            message += f" ({_unseen(args.run_id, url)})"
        sys.stdout.write(f"{outcome.kind.value.replace('_', ' ')}: {message}\n")
    sys.stdout.flush()
    return code


class _Resolved:
    """What ``wait``'s NODE argument names: its unique_id, close names when the run lacks it."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.unique_id = node
        self.suggestions: list[str] = []
        #: Did the bus show any record of the run (for the timeout's message)?
        self.seen = True


#: dbt's resource types: ``<type>.<package>.<name>...`` is taken for a unique_id as it is.
_RESOURCE_TYPES = frozenset(
    {
        "model", "seed", "snapshot", "test", "unit_test", "source", "analysis", "operation", "sql_operation",
        "exposure", "metric", "semantic_model", "saved_query", "function",
    }
)


def is_unique_id(node: str) -> bool:
    parts = node.split(".")
    return len(parts) >= 3 and parts[0] in _RESOURCE_TYPES and all(parts)


def short_names(unique_id: str) -> set[str]:
    """The names a person may give a node instead of its unique_id: ``model.shop.orders`` → ``orders``,
    ``shop.orders``; a versioned model or a test also by its name without the version or hash."""
    parts = unique_id.split(".")
    if len(parts) < 3:
        return {unique_id}
    package, rest = parts[1], parts[2:]
    names = {".".join(rest), rest[0]}
    return names | {f"{package}.{name}" for name in names}


def resolve_node(node: str, unique_ids: Any) -> list[str]:
    """The unique_ids ``node`` names among ``unique_ids``: itself, or every node it is a short name of."""
    known = set(unique_ids)
    if node in known:
        return [node]
    return sorted(uid for uid in known if node in short_names(uid))


def close_names(node: str, unique_ids: Any, n: int = 3) -> list[str]:
    """The unique_ids whose id or name is closest to ``node`` (difflib), best first."""
    import difflib

    by_name: dict[str, str] = {}
    for uid in sorted(unique_ids):
        by_name.setdefault(uid, uid)
        for name in short_names(uid):
            by_name.setdefault(name, uid)
    matches = difflib.get_close_matches(node, list(by_name), n=n * 3, cutoff=0.6)
    return list(dict.fromkeys(by_name[name] for name in matches))[:n]


async def _node_outcome(bus: Bus, args: argparse.Namespace, resolved: _Resolved) -> Outcome:
    """``wait``: resolve a short name against the run's graph (waiting for the graph if need be), then wait."""
    started_at = anyio.current_time()
    timeout: float | None = args.timeout
    if not is_unique_id(resolved.node):
        state = await _state_with_graph(bus, args.run_id, timeout)
        if state is None:  # the timeout passed before the run's graph was known
            resolved.seen = await run_seen(bus, args.run_id)
            return Outcome(OutcomeKind.TIMEOUT, args.run_id, resolved.node, timeout=timeout)
        candidates = resolve_node(resolved.node, _nodes_of(state))
        if len(candidates) > 1:
            raise _UsageError(
                f"{resolved.node!r} names {len(candidates)} nodes of run {args.run_id}: "
                f"{', '.join(candidates)}; pass one of these unique_ids"
            )
        if candidates:
            resolved.unique_id = candidates[0]
        if timeout is not None:
            timeout = max(0.0, timeout - (anyio.current_time() - started_at))
    outcome = await bus.outcome(
        args.run_id, resolved.unique_id, timeout=timeout, include_tests=args.include_tests
    )
    if outcome.kind is OutcomeKind.TIMEOUT:
        resolved.seen = await run_seen(bus, args.run_id)
        outcome = Outcome(OutcomeKind.TIMEOUT, args.run_id, resolved.unique_id, timeout=args.timeout)
    elif outcome.kind in (OutcomeKind.NOT_IN_RUN, OutcomeKind.NOT_RUN):
        state = await bus.run_state(args.run_id)
        nodes = _nodes_of(state)
        if resolved.unique_id not in nodes:
            resolved.suggestions = close_names(resolved.node, nodes)
    return outcome


def _nodes_of(state: RunState) -> set[str]:
    """Every node the run names: its graph's, and those with a result (a run published without a graph)."""
    return set(state.graph or ()) | set(state.results) | set(state.running)


async def _state_with_graph(bus: Bus, run_id: str, timeout: float | None) -> RunState | None:
    """The run as far as it is once its graph is known (or it ended, or its producer was lost), or ``None``
    when ``timeout`` passes first."""
    state = RunState(run_id)
    with anyio.move_on_after(math.inf if timeout is None else timeout):
        try:
            async for entry in bus.subscribe(run_id):
                state.apply(entry.record)
                if state.graph is not None:
                    return state
        except (RunLost, RunGone):
            pass
        return state  # ended (or lost) without a graph: what it ran is all there is
    return None


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
        result = publish(sys.stdin.buffer, url, run_id=args.run_id, graph=args.manifest)
    else:
        if not os.path.isfile(args.log):
            raise _UsageError(f"no such log file: {args.log}")
        with open(args.log, "rb") as lines:
            result = publish(lines, url, run_id=args.run_id, graph=args.manifest)
    rejected = getattr(result, "rejected", None)
    if isinstance(rejected, BackendRejected):  # refused (a used run id, credentials, an ACL): 9, as run says
        raise rejected
    if getattr(result, "crashed", False):
        # No dbt events at all, or a log that stops before dbt completed: the run ends crashed on the bus, and
        # the command says so instead of claiming a replay.
        sys.stderr.write(f"dbtbus: error: run {args.run_id}: {getattr(result, 'error', None) or 'crashed'}\n")
        return EXIT_FAILED
    sys.stderr.write(f"dbtbus: published run {args.run_id} to {redact_url(url)}\n")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- runs / gc


async def _states(bus: Bus, run_ids: list[str]) -> list[RunState]:
    states: list[RunState] = []
    for run_id in run_ids:
        states.append(await bus.run_state(run_id))
    return states


def _last_activity(state: RunState) -> datetime | None:
    """The run's last sign of life, on the backend's clock (the producer's stamp, less its measured skew)."""
    if state.ending is not None:
        last = state.ending.finished_at
    elif state.last_heartbeat is not None:
        last = state.last_heartbeat.at
    elif state.started is not None:
        last = state.started.started_at
    else:
        return None
    return state.backend_time(last)


def _skew_note(state: RunState) -> str:
    """`` (producer's clock 88 s ahead of the bus's; shown on the bus's)``, when it is a second or more off."""
    text = clock_skew_text(state.clock_skew)
    return f" ({text}; shown on the bus's)" if text else ""


def _age(state: RunState, now: datetime) -> float | None:
    """Seconds since the run's last sign of life: never negative (what is left of a skew after correcting it
    — the backend's clock against this machine's — is not a run from the future)."""
    last = _last_activity(state)
    return None if last is None else max(0.0, (now - last).total_seconds())


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
                "nodes": state.total,
                "done": len(state.results),
                "counts": state.counts(),
                "producer_clock_skew": state.clock_skew,  # seconds ahead of the bus's clock (times are on the bus's)
                "started_at": state.backend_time(state.started.started_at).isoformat()
                if state.started is not None
                else None,
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
        total = state.total
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


__all__ = ["export", "gc", "publish_log", "report", "run", "runs", "wait", "watch"]
