"""Every code block of README.md and docs/*.md runs as written, or says why not.

A fenced block is run according to its language, in a scratch directory holding a copy of ``examples/shop``
(so relative paths work as from the repository's root, and nothing is written into the checkout), with
``DBTBUS_URL`` pointing at a throw-away redis-server and this virtualenv's ``bin`` first on ``PATH``:

* ``python`` — as a script; the blocks of one page run in order, so a later block sees an earlier one's run;
* ``bash`` / ``sh`` — with ``bash -euo pipefail``;
* preceded by ``<!-- pytest -->`` — as a test module, with pytest;
* preceded by ``<!-- dbtbus:example-test... (why) -->`` — run by tests/test_pytest_plugin.py, not twice;
* preceded by ``<!-- airflow-quickstart: why -->`` — run by tests/airflow_live/test_quickstart.py, not here;
* preceded by ``<!-- fragment: why -->`` — not run (it installs, configures Airflow, uses top-level
  ``await``...); a Python fragment must still compile;
* no language or ``text`` — an output sample, not code.

Any other language must be marked a fragment. Pages run in a fixed order; each page's blocks in order.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
MARK = re.compile(
    r"<!--\s*(?P<kind>fragment|pytest|airflow-quickstart|dbtbus:example-test[\w-]*)\b(?P<why>[^>]*)-->\s*$")
RUNNABLE = {"python", "bash", "sh"}
#: Blocks another test runs, not twice: tests/test_pytest_plugin.py (``dbtbus:example-test``) and, under
#: ``airflow standalone``, tests/airflow_live/test_quickstart.py (``airflow-quickstart``).
RUN_ELSEWHERE = ("dbtbus:", "airflow-quickstart")
OUTPUT = {"", "text", "console-output"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    body: str
    mark: str  # "", "fragment" or "pytest"
    why: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    out = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = MARK.search(before)
        out.append(
            Block(
                page=page,
                line=text.count("\n", 0, match.start()) + 1,
                lang=match.group("lang").lower(),
                body=match.group("body"),
                mark=(("fragment" if mark.group("kind").startswith(RUN_ELSEWHERE) else mark.group("kind"))
                      if mark else ""),
                why=mark.group("why").strip(" :") if mark else "",
            )
        )
    return out


ALL = [b for page in PAGES for b in blocks(page)]


def test_the_pages_have_blocks() -> None:
    assert any(b.page.name == "README.md" and b.lang == "python" and not b.mark for b in ALL)
    assert len(ALL) >= 20


@pytest.mark.parametrize("block", [b for b in ALL if b.mark == "fragment"], ids=lambda b: b.where)
def test_fragments_say_why_and_python_ones_compile(block: Block) -> None:
    assert block.why, f"{block.where}: say why the block cannot run: <!-- fragment: why -->"
    if block.lang == "python":
        compile(block.body, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.parametrize("block", [b for b in ALL if not b.mark], ids=lambda b: b.where)
def test_unmarked_blocks_are_runnable_or_output(block: Block) -> None:
    assert block.lang in RUNNABLE | OUTPUT, (
        f"{block.where}: a ```{block.lang} block neither runs here nor is marked <!-- fragment: why -->"
    )


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A scratch root with examples/shop, a throw-away redis-server, and the environment the blocks run in."""
    from dbtbus.testing.projects import copy_shop
    from dbtbus.testing.redis_server import RedisServer, find_redis_server

    if find_redis_server() is None:
        if os.environ.get("CI"):
            pytest.fail("no redis-server on PATH: CI must run the README's blocks", pytrace=False)
        pytest.skip("no redis-server on PATH")
    root = tmp_path_factory.mktemp("readme")
    copy_shop(root / "examples" / "shop")
    shutil.copy(ROOT / "examples" / "consumer.py", root / "examples" / "consumer.py")
    server = RedisServer().start()
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "DBTBUS_URL": server.url,
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "DBTBUS_DUCKDB_PATH": str(root / "shop.duckdb"),
        "NO_COLOR": "1",
    }
    yield {"root": root, "env": env}
    server.close()


RUN_ORDER = [b for b in ALL if not b.mark and b.lang in RUNNABLE] + [b for b in ALL if b.mark == "pytest"]


@pytest.mark.dbt
@pytest.mark.redis
@pytest.mark.parametrize("block", RUN_ORDER, ids=lambda b: b.where)
def test_block_runs_as_written(block: Block, scratch: dict[str, object]) -> None:
    root, env = Path(str(scratch["root"])), dict(scratch["env"])  # type: ignore[call-overload]
    name = re.sub(r"\W", "_", block.where)
    if block.mark == "pytest":
        script = root / f"test_{name}.py"
        script.write_text(block.body, encoding="utf-8")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)]
    elif block.lang == "python":
        script = root / f"{name}.py"
        script.write_text(block.body, encoding="utf-8")
        cmd = [sys.executable, str(script)]
    else:
        script = root / f"{name}.sh"
        script.write_text(block.body, encoding="utf-8")
        cmd = ["bash", "-euo", "pipefail", str(script)]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False)
    output = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{block.where} failed ({proc.returncode}):\n{output}"
