"""Headless Debian ``chromium``: the page as a person sees it (the DOM after its script ran, a screenshot).

Missing chromium skips these tests on a developer's machine and FAILS them in CI (``CI`` set): ``.ci/run``
installs it, so a CI without it is broken, not excused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

#: Flags for a quiet, offline, throw-away browser: no sandbox (root in containers), no GPU, no QUIC, no
#: first-run, background network, component updates or sync.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def chromium() -> str:
    """The chromium executable; skip (or, in CI, fail) without one."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path is not None:
            return path
    message = "no chromium on PATH (apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: CI must run the browser tests", pytrace=False)
    pytest.skip(message)


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="dbtbus-chromium-") as profile:
        return subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )


def dump_dom(page: Path) -> str:
    """The DOM after the page's script ran (``--virtual-time-budget`` lets it finish first)."""
    proc = _run(["--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def screenshot(page: Path, png: Path, *, width: int = 1400, height: int = 1300) -> Path:
    proc = _run(
        [
            "--virtual-time-budget=10000",
            f"--window-size={width},{height}",
            f"--screenshot={png}",
            page.resolve().as_uri(),
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert png.is_file() and png.stat().st_size > 0, proc.stderr[-3000:]
    return png
