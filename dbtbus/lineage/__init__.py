"""OpenLineage for dbtbus runs: every dbt node of a run as an OpenLineage run, live, on any bus.

The naming of datasets (:class:`DatasetNaming`, :func:`dataset_name`, :func:`dataset_namespace`) is
``dbt-ol``'s own, computed by ``openlineage-integration-common``, so what dbtbus emits joins what other
integrations emit. Importing this module imports no OpenLineage package: they load on first use
(``pip install 'dbtbus[lineage]'``).
"""

from __future__ import annotations

from ._naming import (
    DatasetName,
    DatasetNaming,
    LineageUnavailable,
    dataset_name,
    dataset_namespace,
    load_manifest,
    load_profile_output,
)

__all__ = [
    "DatasetName",
    "DatasetNaming",
    "LineageUnavailable",
    "dataset_name",
    "dataset_namespace",
    "load_manifest",
    "load_profile_output",
]
