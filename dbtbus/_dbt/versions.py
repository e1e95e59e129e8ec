"""How the dbt-core versions dbtbus supports differ (1.8 to 1.11; ``nox -s dbt_versions`` runs the producer,
replay and export tests on the oldest and the newest).

Most differences need no version check, and are listed here so that none is rediscovered:

* ``MarkSkippedChildren`` (the exact root of a skip cascade) fires from dbt-core 1.9 on; before it, and in
  any info-level log, the normaliser finds a skipped node's cause in the graph (``_skip_cause``);
* microbatch models, ``PartialSuccess`` and batch events exist from 1.9 on: on 1.8 they never arrive;
* YAML snapshots need 1.9 and generic-test ``arguments:`` 1.10.5, so the shop project uses neither.

Standard library only.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["BATCH_RESULTS_SINCE", "INVOCATION_STARTED_AT_SINCE", "at_least", "version_tuple"]

#: ``run_results.json``'s results have ``batch_results`` (microbatch models) from dbt-core 1.9 on.
BATCH_RESULTS_SINCE: Final = (1, 9)
#: ``run_results.json``'s metadata has ``invocation_started_at`` from dbt-core 1.10 on (still schema v6).
INVOCATION_STARTED_AT_SINCE: Final = (1, 10)

_VERSION: Final = re.compile(r"=?\s*(\d+)\.(\d+)")


def version_tuple(version: str | None) -> tuple[int, int] | None:
    """``(major, minor)`` of a dbt version as dbt reports it (``"1.8.0"``, ``"=1.11.16"``), or None."""
    found = _VERSION.match(version or "")
    return (int(found[1]), int(found[2])) if found else None


def at_least(version: str | None, since: tuple[int, int]) -> bool:
    """Whether dbt ``version`` has what arrived in ``since``; an unknown version is taken as the newest."""
    parsed = version_tuple(version)
    return parsed is None or parsed >= since
