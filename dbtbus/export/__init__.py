"""Export a run from the bus in other tools' formats: dbt's own ``run_results.json``.

    dbtbus.export.export_run_results("redis://…", "nightly", "target/run_results.json")  # blocking
    data = await dbtbus.export.aexport_run_results(bus, "nightly")       # the dict, from a connected Bus

At any moment — while the run goes on, after a crash, after ``--fail-fast`` — which dbt itself cannot do
(it writes the file once, at the end). The command line: ``dbtbus export RUN_ID --run-results FILE``.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._run_results import RUN_RESULTS_SCHEMA, is_ephemeral, run_results, write_run_results

if TYPE_CHECKING:
    from .._bus import Bus

__all__ = [
    "RUN_RESULTS_SCHEMA",
    "aexport_run_results",
    "export_run_results",
    "is_ephemeral",
    "run_results",
    "write_run_results",
]


async def aexport_run_results(
    bus: Bus | str, run_id: str, path: str | os.PathLike[str] | None = None, *, now: datetime | None = None
) -> dict[str, Any]:
    """Read the run once and return its ``run_results.json`` content (also written to ``path`` if given)."""
    if isinstance(bus, str):
        from .._bus import connect

        async with connect(bus) as connected:
            state = await connected.run_state(run_id)
    else:
        state = await bus.run_state(run_id)
    moment = now or datetime.now(timezone.utc)
    if path is not None:
        write_run_results(state, Path(path), now=moment)
    return run_results(state, now=moment)


def export_run_results(
    bus_url: str, run_id: str, path: str | os.PathLike[str] | None = None, *, now: datetime | None = None
) -> dict[str, Any]:
    """:func:`aexport_run_results` for code without an event loop."""
    from .._sync import run_blocking

    async def main() -> dict[str, Any]:
        return await aexport_run_results(bus_url, run_id, path, now=now)

    call, instead = "dbtbus.export.export_run_results()", "await dbtbus.export.aexport_run_results(bus, ...)"
    data: dict[str, Any] = run_blocking(main, call=call, instead=instead)
    return data


def __getattr__(name: str) -> Any:  # old names (dbtbus/_deprecated.py)
    from .._deprecated import renamed

    return renamed(__name__, name)
