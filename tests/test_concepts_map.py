"""docs/concepts.md's "Where things live" names every module and package of the tree, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "dbtbus"


def the_map() -> str:
    text = (ROOT / "docs" / "concepts.md").read_text(encoding="utf-8")
    start = text.index("## Where things live")
    return text[start : text.index("\n## ", start + 1)]


def test_the_map_names_every_module_and_package() -> None:
    rows = dict(re.findall(r"^\| `([^`]+)` \| (.*) \|$", the_map(), re.MULTILINE))
    for path in sorted(PACKAGE.glob("*.py")):
        assert path.name in rows, f"dbtbus/{path.name} is not in the map"
    packages = [p for p in sorted(PACKAGE.iterdir()) if (p / "__init__.py").exists()]
    for package in packages:
        row = rows.get(f"{package.name}/")
        assert row is not None, f"dbtbus/{package.name}/ is not in the map"
        for module in sorted(package.glob("*.py")):
            if module.name != "__init__.py":
                assert f"`{module.stem}`" in row, f"dbtbus/{package.name}/{module.name} is not in its package's row"
    named = {name.rstrip("/") for name in rows}
    present = {p.name for p in PACKAGE.glob("*.py")} | {p.name for p in packages}
    assert named - present == set(), "the map names what is not in the tree"
