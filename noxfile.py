"""Sessions: tests (the whole core suite), dbt_versions, lowest_deps, lint, typecheck, docs, bench, airflow,
airflow_live.

``nox -s tests`` is the README's test command and what CI runs; it needs a ``redis-server`` binary on PATH
(the tests start their own throw-away servers) or ``REDIS_URL`` pointing at one. ``tests`` runs the newest
dependencies the pins allow (dbt-core: the newest 1.11); ``dbt_versions`` runs the tests that drive real dbt
on the oldest dbt-core the extras allow (1.8.0), and ``lowest_deps`` the whole suite on the lowest version of
every direct dependency pyproject.toml declares: each proves a floor the package claims. CI runs them all.
"""

from __future__ import annotations

import os

import nox
from packaging.requirements import Requirement

PYPROJECT = nox.project.load_toml("pyproject.toml")

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite against real dbt-core 1.11 + DuckDB and real redis-server processes."""
    session.install("-e", ".[test]")
    # pytest exits 5 when it collects nothing: nox turns that (like any failure) into a failed session.
    session.run("pytest", *(session.posargs or ["-q"]), env={"PYTHONFAULTHANDLER": "1"})


def _requirements(*extras: str) -> list[Requirement]:
    """The core dependencies and those of ``extras``, as pyproject.toml declares them."""
    project = PYPROJECT["project"]
    declared = [*project["dependencies"]]
    for extra in extras:
        declared.extend(project["optional-dependencies"][extra])
    return [Requirement(text) for text in declared]


#: dbt-core and its DuckDB adapter at the oldest end of the range the ``dbt``/``duckdb``/``demo`` extras claim:
#: the floor itself (dbt-core 1.8.0); dbt-duckdb 1.8.0-1.8.3 cannot run a Python model on the DuckDB that
#: installs today (they read the frame through a replacement scan DuckDB 2 dropped), hence 1.8.4. The newest
#: end (the latest 1.11.x; 1.12 does not install without general internet access, see pyproject.toml) is what
#: the test extra pins, so ``nox -s tests`` runs it: running these tests on it again here would add ~5 min
#: to CI and prove nothing more.
OLDEST_DBT = ("dbt-core==1.8.0", "dbt-duckdb==1.8.4")
#: What runs real dbt-core, or replays and exports what it wrote, and the CLI (a few minutes).
DBT_TESTS = ("tests/_dbt", "tests/producer", "tests/export", "tests/cli", "tests/report/test_export_vs_dbt.py")


@nox.session
def dbt_versions(session: nox.Session) -> None:
    """The producer, replay, export and CLI tests on the oldest dbt-core the extras allow (``tests`` runs them
    on the newest).

    The test extra's own tools, with dbt-core and dbt-duckdb replaced by the oldest pair; ``-rs`` lists what
    that version skips (1.8 has no microbatch models).
    """
    tools = [str(r) for r in _requirements("test") if not r.name.startswith("dbt-")]
    session.install("-e", ".", *tools, *OLDEST_DBT)
    session.run("python", "-c", "import dbt.version; print('dbt-core', dbt.version.__version__)")
    session.run("pytest", *(session.posargs or [*DBT_TESTS, "-q"]), "-p", "no:cacheprovider", "-rs",
                env={"PYTHONFAULTHANDLER": "1"})


@nox.session
def lowest_deps(session: nox.Session) -> None:
    """The whole suite on the lowest version of every direct dependency (core and the test extra) that
    pyproject.toml allows: ``uv pip install --resolution lowest-direct`` (what those need in turn is the newest
    that fits). A floor that no longer works fails here, not on a user's fresh install.

    A floor below what another dependency needs resolves to that (``pytest>=8`` gives 8.2, which
    pytest-asyncio 0.24 needs); the session lists what it installed.
    """
    session.install("uv>=0.4")
    # uv reads the system certificates as pip does (a proxy's CA among them).
    env = {"VIRTUAL_ENV": session.virtualenv.location, "UV_NATIVE_TLS": "1"}
    # --upgrade: a reused virtualenv's newer versions would otherwise stand.
    session.run_install("uv", "pip", "install", "--upgrade", "--resolution", "lowest-direct", "-e", ".[test]", env=env)
    direct = sorted({r.name for r in _requirements("test")} | {"dbtbus"})
    session.run("python", "-c", "import sys; from importlib.metadata import version as v; "
                "print('lowest direct:', ', '.join(f'{n}=={v(n)}' for n in sys.argv[1:]))", *direct, silent=False)
    session.run("pytest", *(session.posargs or ["-q"]), "-p", "no:cacheprovider", env={"PYTHONFAULTHANDLER": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "dbtbus", "tests", "examples", "bench", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy>=1.10")
    session.run("mypy", "dbtbus")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site (Material for MkDocs, API reference from the docstrings by mkdocstrings);
    any warning — a broken link, a missing page, a docstring that does not resolve — fails the build."""
    session.install("-e", ".", "mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26", "ruff>=0.6")
    site = os.path.join(session.create_tmp(), "site")
    session.run("mkdocs", "build", "--strict", "--site-dir", site, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark (``python -m bench --list``), write bench/results/*.json and regenerate the figures
    of docs/benchmarks.md from them (~20 min; ``-- --large`` adds the 1,000-model end-to-end point, ``-- --quick``
    is a few minutes, ``-- --only NAME…`` some of them). matplotlib draws the scale plot."""
    session.install("-e", ".[test]", "matplotlib>=3.7")
    session.run("python", "-m", "bench", *session.posargs)


@nox.session
def bench_airflow(session: nox.Session) -> None:
    """The Airflow benchmarks (not tests): a live deployment running bare dbt, dbtbus on Redis and XCom, and
    astronomer-cosmos's watcher (installed here only, never a dbtbus dependency), then what the dag-processor
    and the triggerer pay. Needs PostgreSQL on 127.0.0.1:5432 and redis-server; writes
    bench/results/airflow_*.json and regenerates the figures of docs/benchmarks.md and docs/airflow.md.
    Arguments after ``--`` go to bench/airflow_live.py (e.g. ``--models 200 --repeat 3``)."""
    session.install("-e", ".[test]", "apache-airflow>=3.0,<3.4", "psycopg2-binary>=2.9", "asyncpg>=0.29",
                    "astronomer-cosmos>=1.15")
    session.run("python", "bench/airflow_live.py", "--cosmos",
                *(session.posargs or ["--models", "50", "200", "--repeat", "3", "1"]))
    # bench/results/airflow_footprint.json, then the figures of docs/benchmarks.md and docs/airflow.md
    session.run("python", "-m", "bench", "--only", "airflow_footprint")


@nox.session
def airflow(session: nox.Session) -> None:
    """The Airflow 3 suite (tests/airflow) in its own virtualenv: real Airflow, sqlite, ``dag.test()``.

    Airflow never enters the main test environment, where tests/airflow collects nothing.
    ``DBTBUS_REQUIRE_AIRFLOW=1`` makes a missing Airflow an import error here and ``-rs`` lists skips, so
    this session cannot pass by leaving the suite out.
    Needs ``redis-server`` on PATH (or ``REDIS_URL``) like the main suite.
    """
    # The OpenLineage provider: the producer's lineage nests each node under its task's run, as it computes it.
    session.install("-e", ".[test]", "apache-airflow>=3.0,<3.4", "apache-airflow-providers-openlineage>=2.20")
    home = os.path.abspath(os.path.join(session.create_tmp(), "airflow-home"))
    if os.path.isdir(home):
        import shutil

        shutil.rmtree(home)
    os.makedirs(os.path.join(home, "dags"))
    env = {
        "AIRFLOW_HOME": home,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(home, "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{os.path.join(home, 'airflow.db')}",
        "DBTBUS_REQUIRE_AIRFLOW": "1",
        "PYTHONFAULTHANDLER": "1",
    }
    session.run("airflow", "db", "migrate", env=env, silent=True)
    # tests/test_secrets.py has an Airflow connection's form, skipped where Airflow is absent: it runs here.
    session.run("pytest", "tests/airflow", "tests/test_secrets.py", "-p", "no:cacheprovider", "-rs",
                *(session.posargs or ["-q"]), env=env)


@nox.session
def airflow_live(session: nox.Session) -> None:
    """The live-scheduler suite (tests/airflow_live): a real Airflow 3 deployment on this machine.

    api-server, scheduler (LocalExecutor), dag-processor and triggerer as separate processes on a throw-away
    PostgreSQL database (127.0.0.1:5432, trust auth; ``DBTBUS_LIVE_PG`` overrides the server's DSN) and a
    throw-away redis-server; test_celery.py runs first on a CeleryExecutor deployment of its own (two workers,
    a throw-away Redis broker, the result backend on the PostgreSQL database). ``DBTBUS_REQUIRE_AIRFLOW_LIVE=1``
    makes a missing service fail the suite, never skip it. ``DBTBUS_LIVE_FIGURES=path`` writes the scenarios'
    timings as JSON.
    """
    # The CeleryExecutor deployment (test_celery.py): the Celery provider, and Celery below 5.7, which removed
    # celery.backends.database.retry that the provider (3.26) imports.
    session.install("-e", ".[test]", "apache-airflow>=3.0,<3.4", "psycopg2-binary>=2.9", "asyncpg>=0.29",
                    "apache-airflow-providers-openlineage>=2.20", "apache-airflow-providers-celery>=3.10",
                    "celery[redis]>=5.5,<5.7")
    env = {"DBTBUS_REQUIRE_AIRFLOW_LIVE": "1", "PYTHONFAULTHANDLER": "1"}
    figures = os.environ.get("DBTBUS_LIVE_FIGURES")
    if figures:
        env["DBTBUS_LIVE_FIGURES"] = figures
    session.run("pytest", "tests/airflow_live", "-p", "no:cacheprovider", "-rs",
                "--basetemp", os.path.join(session.create_tmp(), "live"), *(session.posargs or ["-q"]), env=env)
