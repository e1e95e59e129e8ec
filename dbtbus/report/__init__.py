"""See a run: one self-contained HTML page from a run's records (``pip install 'dbtbus[report]'``).

The page has a timeline per dbt thread (each node a bar coloured by outcome, with its details on hover),
the critical path, the slowest nodes, thread utilisation and peak memory over time, the failures with what
they took down, and the run's summary. It needs no network to view (inline SVG, CSS and a little JS) and
works on a run in progress (as far as it has got), a crashed one, or one whose producer was lost.

    html = dbtbus.report.report("redis://localhost:6379/0", "nightly")  # blocking
    html = await dbtbus.report.areport(bus, "nightly")                # from a connected Bus
    html = dbtbus.report.render(records, run_id="nightly")            # from records in log order

The command line: ``dbtbus report RUN_ID --bus URL -o run.html``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._analysis import CriticalPath, Interval, Utilisation, critical_path, slowest, utilisation
from ._model import Bar, Cascade, RunView

if TYPE_CHECKING:
    from .._bus import Bus
    from .._state import RunState
    from ..events import Record

__all__ = [
    "Bar",
    "Cascade",
    "CriticalPath",
    "Interval",
    "RunView",
    "Utilisation",
    "areport",
    "critical_path",
    "render",
    "render_state",
    "report",
    "slowest",
    "utilisation",
    "write_report",
]


def render(records: Iterable[Record], *, run_id: str | None = None, now: datetime | None = None) -> str:
    """The page for a run given its records in log order (``run_id`` defaults to the first record's)."""
    items = list(records)
    if run_id is None:
        if not items:
            raise ValueError("no records and no run_id: nothing to report on")
        run_id = items[0].run_id
    from ._html import render_html

    return render_html(RunView.from_records(run_id, items, now=now))


def render_state(state: RunState, *, now: datetime | None = None) -> str:
    """The page for a :class:`~dbtbus.RunState` (what ``bus.run_state`` returns)."""
    from ._html import render_html

    return render_html(RunView.from_state(state, now=now))


async def areport(bus: Bus | str, run_id: str, *, now: datetime | None = None) -> str:
    """Read the run from the bus once (a snapshot, its producer's lease checked) and return the page."""
    if isinstance(bus, str):
        from .._bus import connect

        async with connect(bus) as connected:
            state = await connected.run_state(run_id)
    else:
        state = await bus.run_state(run_id)
    return render_state(state, now=now)


def report(bus_url: str, run_id: str, *, now: datetime | None = None) -> str:
    """:func:`areport` for code without an event loop: connect, read the run once, return the page."""
    from .._sync import run_blocking

    async def main() -> str:
        return await areport(bus_url, run_id, now=now)

    page: str = run_blocking(main, call="dbtbus.report.report()", instead="await dbtbus.report.areport(bus, ...)")
    return page


def write_report(bus_url: str, run_id: str, path: str | Path) -> Path:
    """Write the page of a run to ``path`` (UTF-8) and return the path."""
    target = Path(path)
    target.write_text(report(bus_url, run_id), encoding="utf-8")
    return target


def __getattr__(name: str) -> Any:  # old names (dbtbus/_deprecated.py)
    from .._deprecated import renamed

    return renamed(__name__, name)
