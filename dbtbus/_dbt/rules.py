"""What dbt decides about a command and its nodes' statuses: which failures skip children, which command runs.

``dbt/task/build.py`` and ``run.py`` name, per command, the statuses that make dbt skip a failed node's
descendants; every other command (``test``, ``seed``, ``snapshot``…) follows ``GraphRunnableTask``'s default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from ..events import NodeStatus

__all__ = ["DEFAULT_SKIP_CHILDREN_ON", "SKIP_CHILDREN_ON", "command_of", "hook_message", "skip_children_on"]

#: What makes dbt skip a node's children, per command.
SKIP_CHILDREN_ON: Final[Mapping[str, frozenset[NodeStatus]]] = {
    "build": frozenset({NodeStatus.ERROR, NodeStatus.FAIL, NodeStatus.SKIPPED, NodeStatus.PARTIAL_SUCCESS}),
    "run": frozenset({NodeStatus.ERROR, NodeStatus.PARTIAL_SUCCESS}),
}
#: The rule of every other command (``GraphRunnableTask``'s default).
DEFAULT_SKIP_CHILDREN_ON: Final = frozenset({NodeStatus.ERROR, NodeStatus.PARTIAL_SUCCESS})


def skip_children_on(command: str) -> frozenset[NodeStatus]:
    """The statuses that make ``command`` skip a failed node's descendants."""
    return SKIP_CHILDREN_ON.get(command, DEFAULT_SKIP_CHILDREN_ON)


def command_of(args: Sequence[str]) -> str:
    """The dbt sub-command in ``args`` (``build``, ``run``, ``source freshness``…), or ``""``."""
    words: list[str] = []
    for arg in args:
        if arg.startswith("-"):
            break
        words.append(arg)
    return " ".join(words[:2]) if words[:1] == ["source"] else (words[0] if words else "")


def hook_message(statement: str, status: NodeStatus) -> str:
    """A project hook's message as dbt words it (``RunTask.safe_run_hooks``) for ``statement``, the hook's
    name (``features.on-run-start.0``); a failure's error text is not in dbt's events, so it is left out."""
    if status.is_success:
        return f"{statement} passed"
    if status is NodeStatus.SKIPPED:
        return f"{statement} skipped"
    return f"{statement} failed"
