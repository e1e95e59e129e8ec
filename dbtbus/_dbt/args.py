"""dbt command lines: selecting one node, re-running it, resuming a run; running dbt, one invocation at a time.

``DBT_LOCK``: dbt keeps process-wide state (its flags, its adapters, the event manager's callbacks), so two
invocations in one process must not overlap: the producer, a sensor's re-run and the CLI all take it.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

__all__ = ["DBT_LOCK", "exclude_args", "node_selector", "rerun_args", "resume_args", "run_dbt", "strip_selection"]

DBT_LOCK = threading.Lock()

#: Flags (with their values) that choose what a producer runs; a single-node re-run drops them.
SELECTION_FLAGS = frozenset(
    {
        "--select", "-s", "--models", "-m", "--exclude", "--selector", "--resource-type", "--resource-types",
        "--exclude-resource-type", "--exclude-resource-types", "--log-format", "--log-level", "--fail-fast",
        "-x", "--no-fail-fast", "--indirect-selection",
    }
)
#: Of those, the ones that take no value.
_BOOLEAN = frozenset({"--fail-fast", "-x", "--no-fail-fast"})
COMMANDS = frozenset({"build", "run", "seed", "snapshot", "test"})


def strip_selection(args: Sequence[str]) -> tuple[str, list[str]]:
    """Split a dbt command line into its command and the remaining flags minus the selection flags."""
    command = ""
    rest: list[str] = []
    skipping = False
    for arg in args:
        if skipping and not arg.startswith("-"):
            continue
        skipping = False
        flag = arg.split("=", 1)[0]
        if flag in SELECTION_FLAGS:
            skipping = flag not in _BOOLEAN and "=" not in arg
            continue
        if not command and arg in COMMANDS and not rest:
            command = arg
            continue
        rest.append(arg)
    return command, rest


def node_selector(unique_id: str) -> str:
    """A dbt selector for exactly one node: ``resource_type:<type>,package:<package>,<name>`` (an intersection).

    The name alone matches the leaf of a node's FQN in every resource type (a seed and a model may share
    it); the intersection with the type and the package makes it one node. Generic tests drop the hash.
    """
    parts = unique_id.split(".")
    if len(parts) < 3:
        return unique_id
    resource_type, package = parts[0], parts[1]
    name = ".".join(parts[2:])
    if resource_type == "test" and "." in name:
        name = name.rsplit(".", 1)[0]
    return f"resource_type:{resource_type},package:{package},{name}"


def rerun_args(producer_args: Sequence[str], unique_id: str, *, include_tests: bool) -> list[str]:
    """The command that re-runs one node with the producer's flags (``build`` with its tests, else by type)."""
    _, rest = strip_selection(producer_args)
    resource_type = unique_id.split(".", 1)[0]
    command = "build"
    if not include_tests:
        command = {"model": "run", "seed": "seed", "snapshot": "snapshot", "test": "test"}.get(resource_type, "build")
    return [command, "--select", node_selector(unique_id), *rest]


def exclude_args(args: Sequence[str], names: Iterable[str]) -> list[str]:
    """``args`` plus ``--exclude <names...>``, merged into an ``--exclude`` already there: dbt keeps only the
    last ``--exclude`` it is given, so a second one would drop the user's."""
    names = list(names)
    if not names:
        return list(args)
    out = list(args)
    for index, arg in enumerate(out):
        if arg.startswith("--exclude="):
            out[index:index + 1] = ["--exclude", arg.split("=", 1)[1]]
            arg = "--exclude"
        if arg == "--exclude":
            end = index + 1
            while end < len(out) and not out[end].startswith("-"):
                end += 1
            return [*out[:end], *names, *out[end:]]
    return [*out, "--exclude", *names]


class _Resumable(Protocol):
    """What a resume asks of a run's state (``RunState``, which decides: the rule lives there)."""

    def resume_excludes(self) -> Iterable[str]: ...


def resume_args(state: _Resumable, args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``args`` for the run's next attempt, and the nodes it leaves out: ``--exclude`` for every node that
    already succeeded (``RunState.resume_excludes()``, the one resume rule), one selector each."""
    done = list(state.resume_excludes())
    return exclude_args(args, sorted({node_selector(uid) for uid in done})), done


def run_dbt(args: Sequence[str], *, dbt_executable: str | None = None, env: dict[str, str] | None = None,
            cwd: str | None = None) -> tuple[bool, str]:
    """Run dbt (in this process via dbtRunner, or a subprocess); return (success, a short summary)."""
    if dbt_executable is not None:
        proc = subprocess.run(
            [dbt_executable, *args], capture_output=True, text=True, check=False,
            env=None if env is None else {**os.environ, **env}, cwd=cwd,
        )
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        return proc.returncode == 0, tail
    from dbt.cli.main import dbtRunner

    with DBT_LOCK:
        res: Any = dbtRunner().invoke(list(args))
    lines = []
    for result in getattr(res, "result", None) or []:
        node = getattr(result, "node", None)
        uid = getattr(node, "unique_id", "?")
        lines.append(f"{uid}: {getattr(result, 'status', '?')} {getattr(result, 'message', '') or ''}")
    if res.exception is not None:
        lines.append(f"{type(res.exception).__name__}: {res.exception}")
    return bool(res.success), "\n".join(lines)
