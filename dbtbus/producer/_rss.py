"""Peak resident set size (bytes) of the process running dbt."""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

from ._dbt_hook import vm_hwm

logger = logging.getLogger("dbtbus.producer")


def _maxrss_bytes(value: int) -> int:
    # ru_maxrss is KiB on Linux and the BSDs, bytes on macOS.
    return value if sys.platform == "darwin" else value * 1024


def self_peak() -> int | None:
    """Peak RSS of this process over its whole lifetime (VmHWM, else ru_maxrss, else psutil)."""
    peak = vm_hwm()
    if peak is not None:
        return peak
    try:
        import resource

        return _maxrss_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    except (ImportError, OSError):
        pass
    return psutil_rss()


def pid_peak(pid: int) -> int | None:
    """Peak RSS so far of a running child (VmHWM), or its current RSS through psutil, or None."""
    peak = vm_hwm(pid)
    if peak is not None:
        return peak
    return psutil_rss(pid)


def rusage_peak(rusage: Any) -> int | None:
    """Peak RSS from an ``os.wait4`` / ``getrusage`` result.

    A last resort for a child: Linux counts the parent's resident memory at fork time into the child's
    ``ru_maxrss`` (a 600 MiB parent makes ``python -c pass`` report 610 MiB), so prefer what the child
    reports of itself or samples of its ``VmHWM``.
    """
    try:
        value = int(rusage.ru_maxrss)
    except (AttributeError, TypeError, ValueError):
        return None
    return _maxrss_bytes(value) if value > 0 else None


def psutil_rss(pid: int | None = None) -> int | None:
    """Current RSS through psutil (a sample, not a peak), or None when psutil is missing."""
    try:
        psutil = importlib.import_module("psutil")
    except ImportError:
        return None
    try:
        info = psutil.Process(pid).memory_info()
    except Exception:
        return None
    return int(info.rss)


class PeakSampler:
    """Keeps the highest RSS sample of a process where no exact peak is available."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.peak: int | None = None

    def sample(self) -> int | None:
        value = self_peak() if self.pid is None else pid_peak(self.pid)
        if value is not None and (self.peak is None or value > self.peak):
            self.peak = value
        return self.peak
