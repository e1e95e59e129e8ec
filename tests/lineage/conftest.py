"""Real parts for the lineage tests: an HTTP endpoint that receives OpenLineage events, the spec's JSON
schemas (a copy under ``schema/``, see its README), a password-protected redis-server of their own."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dbtbus.testing.redis_server import RedisServer, find_redis_server

SCHEMA_DIR = Path(__file__).parent / "schema"


# ---------------------------------------------------------------------------------------------- the endpoint


@dataclass
class Received:
    """One event as the endpoint got it: the parsed body and when it arrived (wall clock, seconds)."""

    event: dict[str, Any]
    at: float


@dataclass
class LineageEndpoint:
    """An OpenLineage HTTP endpoint (``POST /api/v1/lineage``, as Marquez serves it) in a thread."""

    url: str
    received: list[Received] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r.event for r in self.received]

    def wait_for(self, predicate: Any, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.events):
            if time.monotonic() > deadline:
                raise AssertionError(f"the endpoint did not get what was expected within {timeout} s")
            time.sleep(0.05)


@contextlib.contextmanager
def serve_endpoint() -> Iterator[LineageEndpoint]:
    endpoint = LineageEndpoint(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            arrived = time.time()
            status = 200 if self.path == "/api/v1/lineage" else 404
            if status == 200:
                with endpoint.lock:
                    endpoint.bodies.append(body)
                    endpoint.received.append(Received(json.loads(body), arrived))
            self.send_response(status)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures, not access logs
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    endpoint.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="lineage endpoint", daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def configure_openlineage(patch: pytest.MonkeyPatch, endpoint: LineageEndpoint) -> None:
    """Point openlineage-python's client at ``endpoint`` the OpenLineage way: ``OPENLINEAGE_URL``, nothing else
    of the environment's OpenLineage settings in the way."""
    for name in ("OPENLINEAGE_CONFIG", "OPENLINEAGE_API_KEY", "OPENLINEAGE_NAMESPACE", "OPENLINEAGE_PARENT_ID",
                 "OPENLINEAGE_ROOT_PARENT_ID", "OPENLINEAGE_DISABLED"):  # fmt: skip
        patch.delenv(name, raising=False)
    for name in [name for name in os.environ if name.startswith("OPENLINEAGE__")]:
        patch.delenv(name)
    patch.setenv("OPENLINEAGE_URL", endpoint.url)


@pytest.fixture
def lineage_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[LineageEndpoint]:
    """An endpoint of the test's own, the client configured to send to it."""
    with serve_endpoint() as endpoint:
        configure_openlineage(monkeypatch, endpoint)
        yield endpoint


# ---------------------------------------------------------------------------------------------- the spec


class SpecValidator:
    """Validates an event against ``OpenLineage.json`` and each of its facets against the facet's own schema."""

    def __init__(self) -> None:
        from jsonschema import Draft202012Validator
        from referencing import Registry
        from referencing.jsonschema import DRAFT202012

        schemas = [json.loads(path.read_text()) for path in sorted(SCHEMA_DIR.rglob("*.json"))]
        registry: Registry[Any] = Registry().with_resources(
            # Read as 2020-12 whatever "$schema" says: dbt-ol's facet files name the undated "schema#".
            (schema["$id"], DRAFT202012.create_resource(schema)) for schema in schemas
        )
        self._by_id = {schema["$id"]: schema for schema in schemas}
        self._registry = registry
        self._validator_class = Draft202012Validator
        self.spec = self._by_id["https://openlineage.io/spec/2-0-2/OpenLineage.json"]
        self.checked_facets: set[str] = set()

    def _validator(self, schema: dict[str, Any]) -> Any:
        return self._validator_class(
            schema, registry=self._registry, format_checker=self._validator_class.FORMAT_CHECKER
        )

    def validate(self, event: dict[str, Any]) -> None:
        self._validator(self.spec).validate(event)
        # The formats a plain jsonschema install may not check, checked by hand.
        uuid.UUID(event["run"]["runId"])
        datetime.fromisoformat(event["eventTime"].replace("Z", "+00:00"))
        self._facets(event["run"].get("facets"))
        self._facets(event["job"].get("facets"))
        for dataset in [*event.get("inputs", []), *event.get("outputs", [])]:
            for key in ("facets", "inputFacets", "outputFacets"):
                self._facets(dataset.get(key))

    def _facets(self, facets: dict[str, Any] | None) -> None:
        for name, facet in (facets or {}).items():
            schema = self._schema_of(facet["_schemaURL"], name)
            if schema is None:
                continue  # a facet without a published schema: the event schema checked it as a facet
            self._validator(schema).validate({name: facet})
            self.checked_facets.add(name)

    def _schema_of(self, url: str, name: str) -> dict[str, Any] | None:
        base = url.split("#", 1)[0]
        if base in self._by_id:
            return self._by_id[base]
        # dbt-ol's own facets point at their file on GitHub's tree view, not at the $id it carries.
        for schema_id, schema in self._by_id.items():
            if schema_id.endswith("/" + base.rsplit("/", 1)[-1]):
                return schema
        if base.startswith("https://openlineage.io/spec/"):
            raise AssertionError(f"facet {name!r}: no copy of its schema {base} under tests/lineage/schema/")
        return None


@pytest.fixture(scope="session")
def spec() -> SpecValidator:
    return SpecValidator()


# ---------------------------------------------------------------------------------------------- redis


REDIS_PASSWORD = "lineage-s3cret-do-not-leak"


@pytest.fixture(scope="module")
def secret_redis() -> Iterator[RedisServer]:
    """A redis-server of this module's own whose URL carries a password (it must never reach an event)."""
    executable = find_redis_server()
    if executable is None:
        pytest.fail("no redis-server on PATH: the lineage tests run through a real Redis")
    server = RedisServer(executable=executable, password=REDIS_PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.stop()
