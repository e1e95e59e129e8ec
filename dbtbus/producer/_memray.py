"""memray profiling of a dbt invocation: in this process (``memray.Tracker``) or in dbt's subprocess.

Profiling is asked for with ``memray_output`` (``Producer(..., memray_output=path)``, ``dbtbus run --memray
FILE``). A profile that was asked for and cannot be taken is an error raised *before* dbt starts and before
anything is published — never a warning in a log nobody reads after the run.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from .._exceptions import MemrayUnavailable

__all__ = ["MemrayUnavailable", "check_output_path", "memray_command", "output_path", "require_in_process", "tracking"]

Pathish = str | os.PathLike[str]


def output_path(path: Pathish) -> Path:
    """Where the profile goes: absolute, because dbt's subprocess may run in another working directory
    (``cwd=``) and a relative path means the caller's directory, where it was checked, not dbt's."""
    return Path(os.path.abspath(os.fspath(path)))


def check_output_path(path: Pathish) -> Path:
    """:func:`output_path`; refuse an existing file (memray never appends) or a missing directory."""
    out = output_path(path)
    if out.exists():
        raise MemrayUnavailable(f"memray output {out} already exists: remove it or choose another file")
    if not out.parent.is_dir():
        raise MemrayUnavailable(f"memray output {out}: directory {out.parent} does not exist")
    return out


def require_in_process(path: Pathish) -> Path:
    """Check that this process can profile itself into ``path`` (memray importable, path free)."""
    try:
        importlib.import_module("memray")
    except ImportError as exc:
        raise MemrayUnavailable(
            f"memray_output={os.fspath(path)!s} was asked for but memray is not installed in this Python "
            "environment: pip install memray (Linux and macOS only)"
        ) from exc
    return check_output_path(path)


@contextlib.contextmanager
def tracking(path: Pathish | None) -> Iterator[None]:
    """Track this process's allocations into ``path`` for the duration (nothing when ``path`` is None).

    Call :func:`require_in_process` first, before the run starts: this only imports what it checked.
    """
    if path is None:
        yield
        return
    memray = importlib.import_module("memray")
    with memray.Tracker(os.fspath(path)):
        yield


def memray_command(
    python: str | None, path: Pathish, code: str, args: Sequence[str], *, timeout: float = 60
) -> list[str]:
    """The command that runs ``python -c code args...`` under ``memray run``, checked to work.

    ``python`` is the interpreter of dbt's environment (None: dbt is not a Python console script, which
    memray cannot profile). memray must be installed *there*, not necessarily here.
    """
    if python is None:
        raise MemrayUnavailable(
            "memray_output needs a dbt executable that is a Python console script (memray profiles Python "
            "processes); this one is not"
        )
    out = check_output_path(path)
    try:
        probe = subprocess.run(
            [python, "-c", "import memray"], capture_output=True, text=True, timeout=timeout, check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MemrayUnavailable(f"could not check for memray in dbt's environment ({python}): {exc}") from exc
    if probe.returncode != 0:
        raise MemrayUnavailable(
            f"memray_output={out} was asked for but memray is not installed in dbt's environment ({python}): "
            f"{python} -m pip install memray"
        )
    return [python, "-m", "memray", "run", "--quiet", "--output", str(out), "-c", code, *args]
