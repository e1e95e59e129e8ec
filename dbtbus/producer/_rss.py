"""Peak resident set size (bytes) of the process running dbt.

In process, the kernel's high-water mark (``VmHWM``, ``ru_maxrss``) covers the host process's whole life: in
an Airflow worker, or on a second ``invoke`` in one process, it is not this run's peak. On Linux, writing
``5`` to ``/proc/self/clear_refs`` resets ``VmHWM`` to the current RSS, so :func:`start_run_peak` resets it
when the invocation starts and the peak is the invocation's own (``scope="invocation"``). Where that is
impossible (not Linux, a read-only ``/proc``) the figure is the process's lifetime peak (``scope="process"``)
and the records say so. A dbt subprocess's peak is always its own (exec starts a fresh high-water mark).
"""

from __future__ import annotations

import importlib
import logging
import sys
from dataclasses import dataclass
from typing import Any, Final, Literal

from .._dbt.hook import vm_hwm

logger = logging.getLogger("dbtbus.producer")


def _maxrss_bytes(value: int) -> int:
    # ru_maxrss is KiB on Linux and the BSDs, bytes on macOS.
    return value if sys.platform == "darwin" else value * 1024


#: ``peak_rss`` is the peak of this invocation alone.
INVOCATION: Final = "invocation"
#: ``peak_rss`` is the lifetime peak of the process that ran the invocation (it may predate the run).
PROCESS: Final = "process"
PeakScope = Literal["invocation", "process"]

_CLEAR_REFS = "/proc/self/clear_refs"
_RESET_HWM = "5"  # Documentation/admin-guide/mm/soft-dirty.rst / proc.rst: "5" resets the peak RSS


def reset_hwm() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux); return False where that is impossible."""
    try:
        with open(_CLEAR_REFS, "w", encoding="ascii") as fh:
            fh.write(_RESET_HWM)
    except OSError:
        return False
    return vm_hwm() is not None


@dataclass(frozen=True)
class RunPeak:
    """The peak RSS of one in-process invocation: call :meth:`peak` any time during or after it."""

    scope: PeakScope

    def peak(self) -> int | None:
        return self_peak()


def start_run_peak() -> RunPeak:
    """Start measuring an in-process invocation's peak: reset the high-water mark where the kernel allows it.

    Whoever else reads this process's ``VmHWM`` afterwards sees the peak since this call: the kernel keeps one
    high-water mark per process, and this run's is the one that matters while it runs.
    """
    return RunPeak(INVOCATION if reset_hwm() else PROCESS)


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
