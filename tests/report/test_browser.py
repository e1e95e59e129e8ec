"""The report in a real browser (headless Debian chromium): what a person sees, not what the HTML says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dbtbus.report import render, report

from ._browser import dump_dom, screenshot
from ._runs import CRITICAL, FAIL_MESSAGE, GRAPH, at, finished_run
from .conftest import ShopBuild

pytestmark = pytest.mark.browser


def _bars(dom: str) -> list[str]:
    return re.findall(r'<rect class="(bar [^"]*)"', dom)


def _visible_colours(png: Path) -> dict[tuple[int, int, int], int]:
    from PIL import Image

    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None
    return {rgb: count for count, rgb in colours}


OK_GREEN = (0x2E, 0x9D, 0x5B)
FAIL_RED = (0xD1, 0x38, 0x3D)


def test_fabricated_run_as_seen_in_chromium(tmp_path: Path) -> None:
    page = tmp_path / "run.html"
    page.write_text(render(finished_run(), now=at(60)), encoding="utf-8")
    dom = dump_dom(page)
    assert f'data-ready="{len(GRAPH)}"' in dom  # the page's script ran to its end, with every node's data
    bars = _bars(dom)
    assert len(bars) == len(GRAPH)
    assert sum("crit" in b.split() for b in bars) == len(CRITICAL)
    assert FAIL_MESSAGE in dom
    colours = _visible_colours(screenshot(page, tmp_path / "run.png"))
    assert len(colours) > 20  # not a blank page
    assert colours.get(OK_GREEN, 0) > 500 and colours.get(FAIL_RED, 0) > 200


def test_the_demo_projects_run_as_seen_in_chromium(shop_build: ShopBuild, tmp_path: Path) -> None:
    page = tmp_path / "shop.html"
    page.write_text(report(shop_build.url, shop_build.run_id), encoding="utf-8")
    dom = dump_dom(page)
    nodes = sum(shop_build.counts.values())
    assert f'data-ready="{nodes}"' in dom
    bars = _bars(dom)
    assert len(bars) == nodes  # every node of the build ran (or was skipped) on a dbt thread: one bar each
    assert any("crit" in b.split() for b in bars)
    failures = dom[dom.index('id="failures"') : dom.index('id="critical"')]
    assert "test.shop.assert_customers_have_repeat_orders" in failures
    assert "Got 3 results, configured to fail if != 0" in failures
    assert "model.shop.customer_ranking" in failures  # what the failure took down
    # One lane per dbt thread (the profile has 4; thread numbers grow with every dbt run in this process).
    lanes = re.findall(r'<rect class="lane[^"]*"[^>]*>(?:</rect>)?<text[^>]*>([^<]+)</text>', dom)
    assert 2 <= len(lanes) <= 4 and all(name.endswith("(worker)") for name in lanes)
    colours = _visible_colours(screenshot(page, tmp_path / "shop.png"))
    assert len(colours) > 20
    assert colours.get(OK_GREEN, 0) > 500 and colours.get(FAIL_RED, 0) > 20
