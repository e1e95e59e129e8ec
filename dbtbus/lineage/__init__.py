"""OpenLineage for dbtbus runs: every dbt node of a run as an OpenLineage run, live, on any bus.

* :func:`emit_lineage` / :func:`aemit_lineage`: follow a run on a bus and emit its events through
  openlineage-python's client (``openlineage.yml``, ``OPENLINEAGE_URL``, …); ``dbtbus lineage RUN_ID`` is
  the same from the command line.
* :class:`RunLineage`: the mapping itself, records in → ``RunEvent`` objects out, no I/O.
* :class:`DatasetNaming`, :func:`dataset_name`, :func:`dataset_namespace`: a dbt node's dataset, named as
  ``dbt-ol`` names it (``openlineage-integration-common`` computes it), so what dbtbus emits joins what
  other integrations emit.

Importing this module imports no OpenLineage package: they load on first use
(``pip install 'dbtbus[lineage]'``).
"""

from __future__ import annotations

from ._errors import LineageUnavailable, LineageUndelivered
from ._events import NamingSource, ParentRun, RunLineage, TaskParents, lineage_run_id
from ._follow import LineageResult, aemit_lineage, emit_lineage
from ._naming import (
    DatasetName,
    DatasetNaming,
    dataset_name,
    dataset_namespace,
    load_manifest,
    load_profile_output,
    naming_from_run,
)

__all__ = [
    "DatasetName",
    "DatasetNaming",
    "LineageResult",
    "LineageUnavailable",
    "LineageUndelivered",
    "NamingSource",
    "ParentRun",
    "RunLineage",
    "TaskParents",
    "aemit_lineage",
    "dataset_name",
    "dataset_namespace",
    "emit_lineage",
    "lineage_run_id",
    "load_manifest",
    "load_profile_output",
    "naming_from_run",
]
