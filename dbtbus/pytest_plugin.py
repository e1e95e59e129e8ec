"""dbtbus's pytest plugin: buses, fabricated runs and log replays for testing code that consumes dbtbus.

Installed with dbtbus (entry point ``pytest11``), so the fixtures are available in every test suite of a
project that has dbtbus installed; disable it with ``-p no:dbtbus``. See ``docs/testing.md``.

Fixtures
--------
``dbtbus_url``
    a ``memory://`` URL naming a store no other test shares (dropped after the test).
``dbtbus_bus``
    an open :class:`dbtbus.Bus` on ``dbtbus_url``: an async fixture for anyio's pytest plugin
    (``@pytest.mark.anyio`` tests, asyncio or trio).
``dbtbus_bus_factory``
    a plain fixture returning ``factory(url=None, **options) -> Bus`` to use as ``async with factory() as
    bus:`` inside the test: works under pytest-asyncio, anyio's plugin or anything else.
``dbtbus_redis_url`` / ``dbtbus_redis_bus``
    a real Redis: ``--dbtbus-redis-url``, else ``$REDIS_URL``, else a throw-away ``redis-server`` on a free
    port for the session, else the test is skipped with the reason.
``dbtbus_run_id``
    a run id unique to the test (handy on a shared Redis).
``dbtbus_events``
    fabricates a run's records (lifecycle and per-node outcomes) so consumer logic can be tested without
    dbt: ``run = await dbtbus_events.run("run-1", graph={"model.a": [], "model.b": ["model.a"]})``.
``dbtbus_replay``
    replays a recorded dbt JSON log (``dbt --log-format json``) into a bus:
    ``run_id = await dbtbus_replay("build.jsonl")``.

Importing this module is cheap: dbtbus's own machinery is imported when a fixture is first used.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest

from .testing.fake_runs import EventFactory, FakeRun, LogReplayer

if TYPE_CHECKING:
    from ._bus import Bus

__all__ = [
    "BusFactory",
    "EventFactory",
    "FakeRun",
    "LogReplayer",
    "dbtbus_bus",
    "dbtbus_bus_factory",
    "dbtbus_events",
    "dbtbus_redis_bus",
    "dbtbus_redis_url",
    "dbtbus_replay",
    "dbtbus_run_id",
    "dbtbus_url",
]

_store_counter = itertools.count()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dbtbus")
    group.addoption(
        "--dbtbus-redis-url",
        default=None,
        help="Redis URL for the dbtbus_redis_bus fixture "
        "(default: $REDIS_URL, else a throw-away redis-server).",
    )


# ---------------------------------------------------------------------------------------------- buses


@pytest.fixture
def dbtbus_url() -> Iterator[str]:
    """A ``memory://`` URL naming a store private to this test; the store is dropped afterwards."""
    from .backends.memory import drop_store

    name = f"dbtbus-test-{os.getpid()}-{next(_store_counter)}"
    try:
        yield f"memory://{name}"
    finally:
        drop_store(name)


@asynccontextmanager
async def _open_bus(url: str) -> AsyncIterator[Bus]:
    """An open bus whose lifetime does not depend on which task sets the fixture up and tears it down.

    anyio's plugin runs an async fixture in one task; pytest-asyncio sets it up and tears it down in
    different tasks, where exiting the bus's task group would fail. On asyncio the bus is therefore held
    open by a task of its own.
    """
    import sniffio

    from ._bus import connect

    if sniffio.current_async_library() != "asyncio":
        async with connect(url) as bus:
            yield bus
        return

    import asyncio

    loop = asyncio.get_running_loop()
    ready: asyncio.Future[Bus] = loop.create_future()
    stop = asyncio.Event()

    async def hold() -> None:
        try:
            async with connect(url) as bus:
                ready.set_result(bus)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    from ._format import redact_url

    task = loop.create_task(hold(), name=f"dbtbus fixture bus {redact_url(url)}")
    try:
        bus = await ready
    except BaseException:
        await asyncio.gather(task, return_exceptions=True)
        raise
    try:
        yield bus
    finally:
        stop.set()
        await task


@pytest.fixture
async def dbtbus_bus(dbtbus_url: str) -> AsyncIterator[Bus]:
    """An open bus on this test's private memory store.

    An async fixture: for anyio's plugin (``@pytest.mark.anyio``, asyncio or trio) and pytest-asyncio in
    auto mode. In pytest-asyncio's strict mode use ``dbtbus_bus_factory``.
    """
    async with _open_bus(dbtbus_url) as bus:
        yield bus


class BusFactory:
    """``factory(url=None, **options)``: an unopened :class:`dbtbus.Bus`; enter it with ``async with``."""

    def __init__(self, default_url: str) -> None:
        self.url = default_url

    def __call__(self, url: str | None = None, **options: Any) -> Bus:
        from ._bus import connect

        return connect(url or self.url, **options)


@pytest.fixture
def dbtbus_bus_factory(dbtbus_url: str) -> BusFactory:
    """Open buses on this test's private memory store: ``async with dbtbus_bus_factory() as bus:``.

    Works under any async test runner (pytest-asyncio, anyio, trio's), since the bus is opened by the test.
    """
    return BusFactory(dbtbus_url)


@pytest.fixture
def dbtbus_run_id(request: pytest.FixtureRequest) -> str:
    """A run id unique to this test: ``test-<short test name>-<random>``."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40].strip("-")
    return f"test-{name}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------------------------------- redis


def _redis_skip_reason() -> str | None:
    try:
        import redis  # noqa: F401
    except ImportError:
        return "dbtbus_redis_bus needs the redis package: pip install 'dbtbus[redis]'"
    return None


@pytest.fixture(scope="session")
def _dbtbus_redis_session(request: pytest.FixtureRequest) -> Iterator[str]:
    reason = _redis_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    try:
        from .testing.redis_server import RedisServer, find_redis_server, redis_url_from_env
    except ImportError as exc:  # pragma: no cover - shipped together
        pytest.skip(f"dbtbus_redis_bus: cannot use the redis-server helper ({exc})")
    url = request.config.getoption("--dbtbus-redis-url") or redis_url_from_env()
    if url:
        yield url
        return
    executable = find_redis_server()
    if executable is None:
        pytest.skip("dbtbus_redis_bus: no --dbtbus-redis-url, no $REDIS_URL and no redis-server on PATH")
    try:
        server = RedisServer(executable=executable)
        server.start()
    except Exception as exc:
        pytest.skip(f"dbtbus_redis_bus: could not start a throw-away redis-server: {exc}")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def dbtbus_redis_url(_dbtbus_redis_session: str) -> str:
    """The URL of a real Redis (shared by the session: use unique run ids, e.g. ``dbtbus_run_id``)."""
    return _dbtbus_redis_session


@pytest.fixture
async def dbtbus_redis_bus(dbtbus_redis_url: str) -> AsyncIterator[Bus]:
    """An open bus on a real Redis (same async-fixture rules as ``dbtbus_bus``; asyncio only)."""
    import sniffio

    if sniffio.current_async_library() != "asyncio":
        pytest.skip("dbtbus_redis_bus: the Redis backend runs on asyncio only")
    async with _open_bus(dbtbus_redis_url) as bus:
        yield bus


# ---------------------------------------------------------------------------------------------- events


@pytest.fixture
def dbtbus_events(dbtbus_url: str) -> EventFactory:
    """Fabricate runs and node outcomes on this test's memory store (or any bus: ``run(..., bus=bus)``)."""
    return EventFactory(dbtbus_url)


# ---------------------------------------------------------------------------------------------- replay


@pytest.fixture
def dbtbus_replay(dbtbus_url: str) -> LogReplayer:
    """Replay a recorded dbt JSON log into this test's memory store (or ``bus=`` / ``url=``)."""
    return LogReplayer(dbtbus_url)
