"""``dbtbus run --resume RUN_ID``: a new attempt of a run that leaves out what already succeeded.

Which nodes to leave out is :meth:`dbtbus.RunState.resume_excludes` — the one rule the Airflow producer
operator's retries use too; this module only turns it into a dbt command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._exceptions import ConfigurationError
from .._state import RunState

if TYPE_CHECKING:
    from ..producer import ProducerResult

__all__ = ["ResumePlan", "resume", "resume_plan"]


@dataclass(frozen=True)
class ResumePlan:
    """What a resume runs: attempt ``attempt`` of ``run_id`` with ``dbt_args`` (``excluded`` left out)."""

    run_id: str
    attempt: int
    dbt_args: list[str]
    excluded: list[str]

    def describe(self) -> str:
        return (
            f"resuming run {self.run_id} as attempt {self.attempt}: leaving out {len(self.excluded)} node(s) that "
            "already succeeded"
        )


def _without_output_flags(args: Sequence[str]) -> list[str]:
    """The previous attempt's command line minus the output flags ``dbtbus run`` added to it."""
    out: list[str] = []
    words = list(args)
    i = 0
    while i < len(words):
        if words[i] == "--log-level" and words[i + 1 : i + 2] == ["none"]:
            i += 2
            continue
        if words[i] != "--no-use-colors":
            out.append(words[i])
        i += 1
    return out


def resume_plan(state: RunState, dbt_args: Sequence[str] = ()) -> ResumePlan:
    """The next attempt of the run ``state`` describes.

    ``dbt_args`` default to the previous attempt's command line. Refuses (a one-line usage error) a run the
    bus does not know and one whose previous attempt is still in progress (its producer is alive) with
    :class:`~dbtbus.ConfigurationError`.
    """
    from .._dbt.args import resume_args

    started = state.started
    if started is None:
        raise ConfigurationError(f"cannot resume run {state.run_id}: the bus has no record of it")
    if state.ending is None and not state.lost:
        raise ConfigurationError(
            f"cannot resume run {state.run_id}: attempt {started.attempt} is still in progress (its producer is "
            "alive); wait for it, or 'dbtbus watch' it"
        )
    args = list(dbt_args) or _without_output_flags(started.args)
    if not args:
        raise ConfigurationError(f"cannot resume run {state.run_id}: its command line is unknown; pass -- <dbt args>")
    resumed, excluded = resume_args(state, args)
    return ResumePlan(state.run_id, started.attempt + 1, resumed, excluded)


def resume(bus_url: str, run_id: str, dbt_args: Sequence[str] = (), **producer_options: Any) -> ProducerResult:
    """The Python twin of ``dbtbus run --resume RUN_ID``: read the run, then produce its next attempt (dbt in
    this process, blocking) without the nodes that already succeeded. ``producer_options`` go to
    :class:`~dbtbus.Producer` (``heartbeat_interval``, ``retention``...). Returns the attempt's result.
    """
    import anyio

    from .._bus import connect
    from ..producer import Producer

    async def read() -> RunState:
        async with connect(bus_url) as bus:
            return await bus.run_state(run_id)

    plan = resume_plan(anyio.run(read), dbt_args)
    return Producer(bus_url, run_id, attempt=plan.attempt, **producer_options).invoke(plan.dbt_args)
