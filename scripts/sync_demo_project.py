#!/usr/bin/env python
"""Copy examples/shop (project files only) to dbtbus/_demo_project, the copy `dbtbus demo` ships with.

    python scripts/sync_demo_project.py          # update the copy
    python scripts/sync_demo_project.py --check  # exit 1 if the copy differs (tests/cli run this check)

dbt's output (target/, logs/, dbt_packages/) and DuckDB files are never copied.
"""

from __future__ import annotations

import fnmatch
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "examples" / "shop"
DEST = ROOT / "dbtbus" / "_demo_project"

IGNORED_DIRS = {"target", "logs", "dbt_packages", "__pycache__", ".pytest_cache"}
IGNORED_FILES = (
    "*.duckdb",
    "*.duckdb.wal",
    "*.duckdb.tmp",
    ".user.yml",
    "package-lock.yml",
    "*.pyc",
    ".DS_Store",
)


def project_files(root: Path) -> dict[str, bytes]:
    """relative path → content of every project file under ``root``."""
    files: dict[str, bytes] = {}
    if not root.is_dir():
        return files
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in IGNORED_DIRS for part in rel.parts[:-1]) or (
            path.is_dir() and rel.name in IGNORED_DIRS
        ):
            continue
        if path.is_file() and not any(fnmatch.fnmatch(rel.name, pattern) for pattern in IGNORED_FILES):
            files[rel.as_posix()] = path.read_bytes()
    return files


def differences(source: Path = SOURCE, dest: Path = DEST) -> list[str]:
    want, have = project_files(source), project_files(dest)
    out = [f"missing in copy: {p}" for p in sorted(set(want) - set(have))]
    out += [f"extra in copy: {p}" for p in sorted(set(have) - set(want))]
    out += [f"differs: {p}" for p in sorted(set(want) & set(have)) if want[p] != have[p]]
    return out


def sync(source: Path = SOURCE, dest: Path = DEST) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    for rel, content in project_files(source).items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def main(argv: list[str]) -> int:
    if "--check" in argv:
        diff = differences()
        for line in diff:
            print(line)
        if diff:
            print("dbtbus/_demo_project is out of date: run python scripts/sync_demo_project.py")
            return 1
        return 0
    sync()
    print(
        f"copied {len(project_files(DEST))} files from {SOURCE.relative_to(ROOT)} to {DEST.relative_to(ROOT)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
