"""Sessions: tests (the whole core suite), lint, typecheck, docs, bench, airflow (once it exists).

``nox -s tests`` is the README's test command and what CI runs; it needs a ``redis-server`` binary on PATH
(the tests start their own throw-away servers) or ``REDIS_URL`` pointing at one.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite against real dbt-core 1.11 + DuckDB and real redis-server processes."""
    session.install("-e", ".[test]")
    # pytest exits 5 when it collects nothing: nox turns that (like any failure) into a failed session.
    session.run("pytest", *(session.posargs or ["-q"]), env={"PYTHONFAULTHANDLER": "1"})


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
    """Build the documentation site; warnings (broken links, missing pages) fail the build."""
    session.install("mkdocs>=1.6")
    session.run("mkdocs", "build", "--strict", "--site-dir", os.path.join(session.create_tmp(), "site"))


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark and rewrite docs/benchmarks.md with the figures (takes a while)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "bench", *session.posargs)
