"""The HTML page from records: what it contains for a finished, a live and a crashed run."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import orjson

from dbtbus.report import RunView, render

from ._runs import CRITICAL, FAIL_MESSAGE, GRAPH, RUN_ID, SCHEDULE, at, crashed_run, finished_run, live_run


class _Page(HTMLParser):
    """Collects the timeline's bars and every script, and checks nothing external is referenced."""

    def __init__(self) -> None:
        super().__init__()
        self.bars: list[dict[str, str]] = []
        self.external: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "rect" and "bar" in a.get("class", "").split():
            self.bars.append(a)
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])
        if tag == "link":
            self.external.append(a.get("href", ""))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def nodes_data(html: str) -> list[dict[str, object]]:
    match = re.search(r'<script type="application/json" id="nodes">(.*?)</script>', html, re.S)
    assert match is not None
    data: list[dict[str, object]] = orjson.loads(match.group(1))
    return data


def test_finished_run_one_bar_per_node_coloured_by_outcome() -> None:
    html = render(finished_run(), now=at(60))
    page = parse(html)
    assert len(page.bars) == len(GRAPH)
    outcomes = sorted(c for bar in page.bars for c in bar["class"].split() if c.startswith("o-"))
    assert outcomes == sorted(["o-success"] * 4 + ["o-failed"] + ["o-skipped"] * 2)
    data = nodes_data(html)
    assert sorted(n["u"] for n in data) == sorted(GRAPH)
    for node in data:
        thread, start, end, status = SCHEDULE[str(node["u"])]
        assert (node["t"], node["a"], node["e"], node["s"]) == (thread, start, end, status)
    assert page.external == []
    assert "finished with failures" in html


def test_critical_path_is_marked_and_listed_in_order() -> None:
    html = render(finished_run(), now=at(60))
    page = parse(html)
    marked = {nodes_data(html)[int(b["data-i"])]["u"] for b in page.bars if "crit" in b["class"].split()}
    assert marked == set(CRITICAL)
    section = html[html.index('id="critical"') : html.index('id="slowest"')]
    positions = [section.index(f"<code>{uid}</code>") for uid in CRITICAL]
    assert positions == sorted(positions)
    assert "8.50 s" in section  # 1 + 2 + 5 + 0.5 + 0 + 0


def test_failure_lists_its_message_and_what_it_took_down() -> None:
    html = render(finished_run(), now=at(60))
    failures = html[html.index('id="failures"') : html.index('id="critical"')]
    assert "test.p.t_b" in failures
    assert FAIL_MESSAGE in failures
    assert "took down 2 nodes" in failures
    assert "<code>model.p.c</code>" in failures and "<code>model.p.d</code>" in failures


def test_summary_utilisation_and_memory() -> None:
    view = RunView.from_records(RUN_ID, finished_run(), now=at(60))
    assert view.pool_size() == 4  # --threads 4, of which two were ever used
    u = view.utilisation()
    assert u.span == 9.0
    assert sum(u.busy_seconds.values()) == 1 + 2 + 1 + 5 + 0.5
    html = render(finished_run(), now=at(60))
    assert "dbt build --threads 4" in html
    assert "1.11.16" in html
    assert "114.4 MiB" in html  # the highest peak RSS: 120,000,000 bytes at the end
    assert re.search(r"<b>elapsed</b>9\.00 s", html)


def test_live_run_shows_what_runs_now_and_what_is_pending() -> None:
    html = render(live_run(), now=at(6))
    page = parse(html)
    assert len(page.bars) == 4
    running = [b for b in page.bars if "o-running" in b["class"].split()]
    assert len(running) == 1
    data = nodes_data(html)
    b = next(n for n in data if n["u"] == "model.p.b")
    assert (b["s"], b["a"], b["e"]) == ("running", 3.0, 6.0)  # drawn up to "now"
    assert "in progress" in html
    notrun = html[html.index('id="notrun"') :]
    for uid in ("test.p.t_b", "model.p.c", "model.p.d"):
        assert f"<code>{uid}</code>" in notrun


def test_crashed_run_says_so_and_keeps_the_timeline() -> None:
    html = render(crashed_run(), now=at(60))
    assert "terminated by signal SIGTERM" in html
    assert 'class="badge s-crashed"' in html
    page = parse(html)
    assert len(page.bars) == 3  # the node that was running when it crashed has no interval to draw


def test_messages_are_escaped_and_cannot_end_the_script() -> None:
    records = finished_run()
    evil = "</script><script>alert(1)</script> & <b>"
    records = [
        r.__class__(**{**{f: getattr(r, f) for f in r.__dataclass_fields__}, "message": evil})
        if getattr(r, "unique_id", None) == "test.p.t_b" and hasattr(r, "message") else r
        for r in records
    ]
    html = render(records, now=at(60))
    assert "<script>alert(1)</script>" not in html
    assert nodes_data(html)[[n["u"] for n in nodes_data(html)].index("test.p.t_b")]["m"] == evil


def test_retry_attempts_are_listed() -> None:
    from ._runs import result, started

    retry_graph = {uid: node for uid, node in GRAPH.items() if uid not in ("seed.p.raw", "model.p.a", "model.p.x")}
    records = [*finished_run(), started(attempt=2, graph=retry_graph), result("model.p.b", attempt=2)]
    html = render(records, now=at(60))
    assert re.search(r"<b>attempt</b>1, 2", html)
