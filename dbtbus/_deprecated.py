"""The one table of deprecated names: each old name, the name that replaced it, and the lookup that warns.

A package whose module has a deprecated name calls :func:`renamed` from its module ``__getattr__``; the old
name is never defined, so it cannot drift from the new one, and it leaves the public ``__all__`` and the API
reference. Each access warns with :class:`DeprecationWarning` (Python's default filter shows it once per
calling line) and returns the new object. Every row goes at the next minor release.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Final

__all__ = ["RENAMED", "renamed"]

#: ``module.old_name`` → ``module.new_name``: the names renamed in 0.1.x, for the twin rule (a blocking call
#: has the plain name, its coroutine an ``a`` prefix) and the one outcome type.
RENAMED: Final[dict[str, str]] = {
    "dbtbus.NodeOutcome": "dbtbus.Outcome",
    "dbtbus.wait_sync": "dbtbus.wait",
    "dbtbus.wait_many_sync": "dbtbus.wait_many",
    "dbtbus.report.report_sync": "dbtbus.report.report",
    "dbtbus.export.export_run_results_sync": "dbtbus.export.export_run_results",
}


def renamed(module: str, name: str) -> Any:
    """The object ``module.name`` now stands for, with a :class:`DeprecationWarning`; ``AttributeError`` for a
    name that is not in :data:`RENAMED` (a module ``__getattr__`` ends with this call)."""
    new = RENAMED.get(f"{module}.{name}")
    if new is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    warnings.warn(f"{module}.{name} is deprecated: use {new}", DeprecationWarning, stacklevel=3)
    new_module, _, new_name = new.rpartition(".")
    return getattr(importlib.import_module(new_module), new_name)
