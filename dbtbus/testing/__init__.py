"""dbtbus's testing kit, public: what this repository's own tests use, for yours.

* :class:`FakeRun` / :class:`EventFactory` — fabricate a dbt run's records on a bus (no dbt, no server);
  :class:`LogReplayer` — replay a recorded dbt JSON log;
* :mod:`dbtbus.testing.records` — the record factory they build on (``run_started``, ``node_result``,
  ``graph_of``), for records without a bus;
* :class:`RedisServer` / :class:`RedisClusterServers` — throw-away ``redis-server`` processes on free
  loopback ports, to stop, restart and break; :func:`find_redis_server`, :func:`redis_url_from_env`;
* :func:`generate_project` — a dbt project of any size and shape on DuckDB (:func:`copy_shop` copies the
  bundled example project);
* :mod:`dbtbus.testing.backend_contract` — the behaviour every backend must show, as pytest tests to run
  against your own backend (it imports pytest; import it from your test suite).

The pytest plugin (``dbtbus.pytest_plugin``, enabled with dbtbus) builds its fixtures on these. Nothing
here imports dbt, redis or pytest.
"""

from __future__ import annotations

from .fake_runs import FAKE_LEASE_TTL, EventFactory, FakeRun, LogReplayer
from .projects import GeneratedProject, copy_shop, generate_project, generic_test_unique_id
from .redis_server import (
    RedisClusterServers,
    RedisServer,
    RedisServerError,
    TLSFiles,
    find_redis_server,
    free_port,
    make_tls_files,
    redis_url_from_env,
)

__all__ = [
    "FAKE_LEASE_TTL",
    "EventFactory",
    "FakeRun",
    "GeneratedProject",
    "LogReplayer",
    "RedisClusterServers",
    "RedisServer",
    "RedisServerError",
    "TLSFiles",
    "copy_shop",
    "find_redis_server",
    "free_port",
    "generate_project",
    "generic_test_unique_id",
    "make_tls_files",
    "redis_url_from_env",
]
