"""The report page: a :class:`RunView` laid out as inline SVG in one jinja2 template (no network at view time)."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import orjson

from .._format import clock_skew_text, format_bytes
from .._version import __version__
from ..events import RunCrashed
from ._model import RunView

__all__ = ["render_html"]

#: Layout of the timeline, in pixels.
LEFT = 170  # thread names and their busy share
PLOT = 1100
LANE_H = 22
BAR_H = 16
TOP = 6
AXIS = 22
MIN_BAR = 1.0
SMALL_W, SMALL_H = 560, 170
MESSAGE_LIMIT = 600
#: The most characters of any one text the page shows (a node's error, the crash, a command line, a node id):
#: a 1 MiB message must not become a 1 MiB page. Longer texts are cut with a note saying how much was left out.
TEXT_LIMIT = 4000


def cap(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, with a visible note of what was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters not shown]"


def _finalize(value: Any) -> Any:
    """Every ``{{ … }}`` of the template goes through here: plain text is capped (markup built by this module —
    the timeline's bars, the escaped JSON — is passed as is)."""
    from markupsafe import Markup

    if isinstance(value, str) and not isinstance(value, Markup):
        return cap(value)
    return value


@lru_cache(maxsize=1)
def _template() -> Any:
    try:
        import jinja2
    except ImportError:  # pragma: no cover - exercised by hand; the message is the point
        from .._exceptions import ConfigurationError

        raise ConfigurationError("the HTML report needs jinja2: pip install 'dbtbus[report]'") from None
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dbtbus.report", "templates"),
        autoescape=True,
        trim_blocks=False,
        lstrip_blocks=False,
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
    )
    return env.get_template("report.html.j2")


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 3600:
        return f"{value / 3600:.1f} h"
    if value >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.2f} s"


def _bytes(value: int | None) -> str:
    return "–" if value is None else format_bytes(value)  # the page's dash for "unknown"; the units are the CLI's


def _ticks(span: float, left: float, width: float, count: int = 10) -> list[dict[str, Any]]:
    """Round-numbered time ticks across ``span`` seconds."""
    if span <= 0:
        return [{"x": round(left, 1), "label": "0 s"}]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    ticks = []
    t = 0.0
    while t <= span + 1e-9:
        label = f"{t:g} s" if step < 60 else f"{t / 60:g} min"
        ticks.append({"x": round(left + t / span * width, 1), "label": label})
        t += step
    return ticks


def _timeline(view: RunView) -> dict[str, Any]:
    from markupsafe import Markup  # jinja2's own dependency

    threads = view.threads()
    lane_of = {name: i for i, name in enumerate(threads)}
    span = view.span or 1.0
    scale = PLOT / span
    util = view.utilisation()
    lanes = []
    for name in threads:
        busy = util.busy_seconds.get(name, 0.0)
        share = f"{busy / util.span:.0%}" if util.span > 0 else ""
        lanes.append({"name": name, "y": TOP + lane_of[name] * LANE_H, "busy": share})
    # The bars are most of the page: written here in one pass (numbers and fixed class names only, nothing to
    # escape) rather than through the template's per-attribute machinery.
    rects = []
    crit_points = []
    for i, bar in enumerate(view.bars):
        x = LEFT + bar.start * scale
        w = max(MIN_BAR, (bar.end - bar.start) * scale)
        y = TOP + lane_of[bar.thread] * LANE_H + (LANE_H - BAR_H) / 2
        crit = " crit" if bar.critical else ""
        rects.append(
            f'<rect class="bar o-{bar.outcome}{crit}" x="{x:.1f}" y="{y:g}" width="{w:.1f}" height="{BAR_H}" '
            f'data-i="{i}"/>'
        )
        if bar.critical:
            crit_points.append((bar.start, x, x + w, y + BAR_H / 2))
    crit_points.sort()
    critline = " ".join(f"{a:.1f},{y:g} {b:.1f},{y:g}" for _, a, b, y in crit_points)
    height = TOP + max(1, len(threads)) * LANE_H + AXIS
    return {
        "width": LEFT + PLOT + 20,
        "height": height,
        "left": LEFT,
        "top": TOP,
        "lane_h": LANE_H,
        "lanes": lanes,
        "ticks": _ticks(span, LEFT, PLOT),
        "bars_svg": Markup("".join(rects)),
        "critline": critline if len(crit_points) > 1 else "",
    }


def _small_chart(span: float) -> dict[str, Any]:
    left, top, bottom = 60, 10, SMALL_H - 22
    width = SMALL_W - left - 8
    return {"width": SMALL_W, "height": SMALL_H, "left": left, "top": top, "bottom": bottom, "plot": width,
            "ticks": _ticks(span, left, width, 6)}


def _utilisation_chart(view: RunView) -> tuple[dict[str, Any], dict[str, Any]]:
    util = view.utilisation()
    span = util.span or 1.0
    chart = _small_chart(span)
    left, top, bottom, width = chart["left"], chart["top"], chart["bottom"], chart["plot"]
    pool = max(1, util.threads)

    def y(busy: int) -> float:
        return float(bottom - (bottom - top) * busy / pool)

    parts = [f"M{left:.1f},{bottom:.1f}"]
    previous = 0
    for t, busy in util.steps:
        x = left + t / span * width
        parts.append(f"L{x:.1f},{y(previous):.1f}L{x:.1f},{y(busy):.1f}")
        previous = busy
    parts.append(f"L{left + width:.1f},{y(previous):.1f}L{left + width:.1f},{bottom:.1f}Z")
    chart["path"] = "".join(parts) if util.steps else ""
    summary = {
        "percent": f"{util.fraction:.0%}",
        "threads": util.threads,
        "span": _seconds(util.span),
        "peak": util.peak_busy,
    }
    return chart, summary


def _memory_chart(view: RunView) -> tuple[dict[str, Any], dict[str, Any]]:
    points = view.memory()
    span = max(view.span, max((t for t, _ in points), default=0.0)) or 1.0
    chart = _small_chart(span)
    left, top, bottom, width = chart["left"], chart["top"], chart["bottom"], chart["plot"]
    peak = max((rss for _, rss in points), default=0)
    dots = []
    path = []
    for i, (t, rss) in enumerate(points):
        x = left + max(0.0, t) / span * width
        y = bottom - (bottom - top) * (rss / peak if peak else 0)
        dots.append({"x": f"{x:.1f}", "y": f"{y:.1f}"})
        path.append(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}")
    chart["path"] = "".join(path)
    chart["dots"] = dots
    return chart, {"peak": _bytes(peak or None), "points": len(points)}


def _nodes_json(view: RunView) -> str:
    rows = []
    for bar in view.bars:
        message = bar.message
        if message is not None and len(message) > MESSAGE_LIMIT:
            message = message[: MESSAGE_LIMIT - 1] + "…"
        rows.append(
            {
                "u": cap(bar.unique_id, 1000),
                "s": cap(bar.status, 100),
                "r": cap(bar.resource_type, 100),
                "t": cap(bar.thread, 200),
                "a": round(bar.start, 4),
                "e": round(bar.end, 4),
                "x": bar.execution_time,
                "m": message,
                "w": cap(bar.rows_affected, 100) if isinstance(bar.rows_affected, str) else
                bar.rows_affected if isinstance(bar.rows_affected, (int, float)) else None,
                "k": cap(bar.skip_cause, 1000) if bar.skip_cause is not None else None,
                "n": bar.attempt,
                "c": bar.critical,
            }
        )
    # Inside a <script> element "</script>" ends it and "<!--" opens a state where "<script>" nests: neither
    # may appear. JSON may spell any character as \uXXXX, and "<", ">" and "&" occur only inside strings.
    return orjson.dumps(rows).decode().replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _summary(view: RunView) -> list[tuple[str, str]]:
    state = view.state
    started = state.started
    counts = state.counts()
    total = state.total
    rows: list[tuple[str, str]] = []
    if started is not None:
        rows.append(("command", "dbt " + (" ".join(started.args) or started.command)))
        rows.append(("dbt", started.dbt_version or "?"))
        # On the bus's clock, as the page's own time is: the producer's may be minutes off (then said so).
        rows.append(("started", f"{state.backend_time(started.started_at):%Y-%m-%d %H:%M:%S} UTC"))
        if clock_skew_text(state.clock_skew):
            rows.append(("clock", clock_skew_text(state.clock_skew) + "; times shown on the bus's"))
        host = started.producer.host or "?"
        rows.append(("producer", f"{host} pid {started.producer.pid} ({started.producer.kind or '?'})"))
    attempts = view.attempts
    rows.append(("attempt", ", ".join(str(a) for a in attempts) if attempts else "–"))
    done = len(state.results)
    rows.append(("nodes", f"{done} of {total} done" if total is not None else f"{done} done"))
    rows.append(("counts", ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"))
    rows.append(("elapsed", _seconds(view.elapsed)))
    rows.append(("peak RSS", _bytes(view.peak_rss())))
    rows.append(("threads", str(view.pool_size())))
    return rows


def _banner(view: RunView) -> dict[str, str] | None:
    state = view.state
    ending = state.ending
    if isinstance(ending, RunCrashed):
        return {"kind": "crashed", "text": f"The run crashed after {_seconds(ending.elapsed)}: {ending.error}. "
                "The timeline shows what had happened by then."}
    if state.gap:
        return {"kind": "lost", "text": f"The run's log lost records ({state.gap}): nodes without a result here "
                "may well have run, succeeded or failed."}
    if state.lost:
        return {"kind": "lost", "text": "The producer stopped heartbeating before the run ended (producer lost): "
                "this is the run as far as it got."}
    if view.live:
        running = len(state.running)
        return {"kind": "live", "text": f"The run is in progress ({running} node{'' if running == 1 else 's'} "
                f"running): this page shows it as of {view.generated_at:%H:%M:%S} UTC. Generate it again for more."}
    return None


_STATUS_CLASS = {
    "finished": "finished",
    "finished with failures": "failures",
    "crashed": "crashed",
    "running": "running",
    "producer lost": "lost",
}


def render_html(view: RunView) -> str:
    """The whole page for one run (a string of HTML)."""
    status = view.status()
    crit = view.critical_path()
    durations = view.durations()
    cumulative = 0.0
    crit_rows = []
    for uid in crit.nodes:
        cumulative += durations.get(uid, 0.0)
        crit_rows.append({"uid": uid, "seconds": f"{durations.get(uid, 0.0):.2f}", "cumulative": f"{cumulative:.2f}"})
    critical = set(crit.nodes)
    slow = []
    for uid, seconds in view.slowest():
        record = view.state.results[uid]
        slow.append({"uid": uid, "status": record.status.value, "thread": record.thread or "–",
                     "seconds": f"{seconds:.2f}", "critical": uid in critical})
    util_chart, util = _utilisation_chart(view)
    mem_chart, mem = _memory_chart(view)
    ending = view.state.ending
    return str(
        _template().render(
            version=__version__,
            run_id=view.run_id,
            status=status,
            status_class=_STATUS_CLASS.get(status, "empty"),
            summary=_summary(view),
            banner=_banner(view),
            tl=_timeline(view),
            bars=view.bars,
            threads=view.threads(),
            uc=util_chart,
            util=util,
            mc=mem_chart,
            mem=mem,
            cascades=view.cascades(),
            crash=ending.error if isinstance(ending, RunCrashed) else None,
            crit={
                "nodes": crit.nodes,
                "total": _seconds(crit.total),
                "span": _seconds(view.span),
                "rows": crit_rows,
            },
            slow=slow,
            not_drawn=view.not_drawn(),
            pending=view.pending(),
            live=view.live,
            generated_at=f"{view.generated_at:%Y-%m-%d %H:%M:%S} UTC",
            nodes_json=_nodes_json(view),
        )
    )
