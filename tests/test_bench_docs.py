"""Every figure of docs/benchmarks.md comes from a result file of bench/results/.

The page is hand-written text around generated blocks (``<!-- bench:NAME -->``): each block must be exactly what
``bench/render.py`` makes of the committed result files, the text outside the blocks must state no figure,
and the page's renderer must type none in its own strings. And the benchmarks reach inside dbtbus nowhere but
the few places listed here, each with its reason. Fast: no benchmark runs.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "bench" / "results"

#: A measured figure: a number with a unit (``1.3 ms``, ``24 GiB``, ``±30 %``, ``6.8×``, ``1,232 events`` is not one).
FIGURE = re.compile(r"(?<![\w.#-])[±~]?\d[\d,]*(\.\d+)?\s?(ns|µs|us|ms|s|min|B|KB|KiB|MB|MiB|GB|GiB|%|×)(?!\w)")


def test_every_result_file_fits_the_schema() -> None:
    from bench._harness import validate

    files = sorted(RESULTS.glob("*.json"))
    assert files
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        assert validate(data) == [], path.name
        assert data["benchmark"] == path.stem


def test_every_block_of_the_page_is_rendered_from_the_result_files() -> None:
    from bench.render import BLOCKS, blocks, generated_blocks, load

    on_page = generated_blocks(PAGE.read_text(encoding="utf-8"))
    assert set(on_page) == set(BLOCKS), "every block has its markers on the page, and no other block is there"
    rendered = blocks(load(RESULTS))
    for name, body in on_page.items():
        assert body == rendered[name], f"block {name!r} differs from the results: run `python -m bench --render-only`"
        assert "No result:" not in body and "could not render" not in body, name
    for other in sorted(PAGE.parent.glob("*.md")):  # pages that quote a block (docs/airflow.md)
        for name, body in generated_blocks(other.read_text(encoding="utf-8")).items():
            if other != PAGE:
                assert body == rendered[name], f"{other.name}: block {name!r} differs from the results"


def test_the_text_outside_the_blocks_states_no_figure() -> None:
    from bench.render import _MARKER

    outside = _MARKER.sub("", PAGE.read_text(encoding="utf-8"))
    found = [m.group(0) for m in FIGURE.finditer(outside)]
    assert found == [], f"figures typed by hand on the page, outside the generated blocks: {found}"


@pytest.mark.parametrize("module", ["render.py", "goals.py", "report.py", "redis_backend.py", "airflow_dag.py",
                                    "airflow_footprint.py", "airflow_live.py", "airflow_assets.py",
                                    "airflow_floor.py", "airflow_floor_build.py"])
def test_the_renderers_type_no_figure(module: str) -> None:
    """Figures reach the page from the results; a renderer's own strings only label them (goals are constants
    of bench/goals.py, formatted in)."""
    tree = ast.parse((ROOT / "bench" / module).read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body
        and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    typed = [
        node.value for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
        and FIGURE.search(node.value)
    ]
    assert typed == [], typed


def test_splice_keeps_the_hand_written_text(tmp_path: Path) -> None:
    from bench.render import splice

    page = "# T\n\nprose\n\n<!-- bench:a -->\nold\n<!-- /bench:a -->\n\nmore prose\n"
    assert splice(page, {"a": "new"}) == "# T\n\nprose\n\n<!-- bench:a -->\nnew\n<!-- /bench:a -->\n\nmore prose\n"
    added = splice(page, {"a": "new", "b": "table"})
    assert added.endswith("## b\n\n<!-- bench:b -->\ntable\n<!-- /bench:b -->\n")


#: What the benchmarks still reach inside dbtbus for, and why. Nothing else may: a benchmark measures through
#: public doors (``Bus.statistics()``, ``Publisher.statistics()``, ``dbtbus.testing``) or from outside.
PRIVATE_REACH = {
    # the per-event cost of the producer's dbt callback: the function itself, on real EventMsg objects, until
    # the producer's door into the bus (issue #28) gives it a public name
    ("callback_cost.py", "dbtbus.producer._callback"),
    ("callback_cost.py", "dbtbus.producer._normalise"),
    ("callback_cost.py", "dbtbus.producer._publisher"),
    # the triggerer's memory per waiting sensor: the Task SDK poll stubbed so that sensors keep waiting (the
    # Airflow package is being reshaped by the Airflow-at-scale issue)
    ("airflow_footprint.py", "dbtbus.airflow._task_states"),
    ("airflow_footprint.py", "TaskStates._ask"),
}


def test_no_benchmark_reaches_inside_dbtbus_beyond_the_known_list() -> None:
    pattern = re.compile(r"dbtbus(?:\.[a-zA-Z]\w*)*\._[a-z]\w*|\b(?:bus|publisher|backend|reader|consumer|producer"
                         r"|TaskStates)\._[a-z]\w*")
    found = {(path.name, m.group(0)) for path in sorted((ROOT / "bench").glob("*.py"))
             for m in pattern.finditer(path.read_text(encoding="utf-8"))}
    assert found == PRIVATE_REACH
