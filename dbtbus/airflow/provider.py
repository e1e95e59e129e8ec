"""Airflow's provider metadata for dbtbus (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from .._version import __version__

__all__ = ["get_provider_info"]


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "dbtbus",
        "name": "dbtbus",
        "description": "One dbt invocation, one Airflow task per node: a producer, deferrable node sensors and "
                       "their trigger, on a Redis or XCom bus.",
        "versions": [__version__],
        "integrations": [{"integration-name": "dbtbus", "external-doc-url": "https://pypi.org/project/dbtbus/",
                          "tags": ["software"]}],
        "operators": [{"integration-name": "dbtbus", "python-modules": ["dbtbus.airflow.operators"]}],
        "sensors": [{"integration-name": "dbtbus", "python-modules": ["dbtbus.airflow.sensors"]}],
        "triggers": [{"integration-name": "dbtbus", "python-modules": ["dbtbus.airflow.triggers"]}],
        "connection-types": [
            {"connection-type": "dbtbus", "hook-class-name": "dbtbus.airflow.hooks.DbtBusHook"},
        ],
    }
