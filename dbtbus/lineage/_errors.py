"""The errors of ``dbtbus.lineage``: both are ``dbtbus.DbtBusError`` s.

::

    DbtBusError
    ├── ConfigurationError (ValueError)
    │   └── LineageUnavailable     OpenLineage missing, or a project, profile or manifest it cannot read
    └── LineageUndelivered         the OpenLineage client's transport failed to deliver an event
"""

from __future__ import annotations

from .._exceptions import ConfigurationError, DbtBusError

__all__ = ["LineageUnavailable", "LineageUndelivered"]


class LineageUnavailable(ConfigurationError):
    """OpenLineage cannot be emitted as asked: its packages are missing, or the project, profile or manifest
    cannot be read or is one dbt-ol does not support."""


class LineageUndelivered(DbtBusError):
    """The OpenLineage client's transport raised on an event (an HTTP endpoint down, a file not writable).

    Nothing is lost for good: run ids are stable, so emitting the run again (``dbtbus lineage RUN_ID``)
    sends the same runs again."""
