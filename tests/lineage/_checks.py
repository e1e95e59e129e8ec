"""What every run's events must satisfy, checked from what the HTTP endpoint received."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import anyio

import dbtbus
from dbtbus.events import NodeResult, NodeStatus, Record
from dbtbus.lineage import lineage_run_id

from .conftest import SpecValidator

ENDING = {"COMPLETE", "FAIL", "ABORT"}


def expected_ending(status: NodeStatus) -> str:
    if status.is_success:
        return "COMPLETE"
    if status.is_failure:
        return "FAIL"
    return "ABORT"


def records_of(url: str, run_id: str) -> list[Record]:
    async def main() -> list[Record]:
        async with dbtbus.connect(url) as bus:
            return [entry.record async for entry in bus.history(run_id)]

    return anyio.run(main)


def by_run(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        out.setdefault(event["run"]["runId"], []).append(event)
    return out


def check_run(events: list[dict[str, Any]], records: list[Record], run_id: str, spec: SpecValidator) -> None:
    """Every event valid; every run one START first and one ending last; each node of the log ended as its
    status says, under its stable run id, a child of the invocation."""
    for event in events:
        spec.validate(event)
    runs = by_run(events)
    for run, lifecycle in runs.items():
        types = [e["eventType"] for e in lifecycle]
        assert types[0] == "START" and types[-1] in ENDING and sum(t in ENDING for t in types) == 1, (run, types)
    results: Mapping[str, NodeResult] = {r.unique_id: r for r in records if isinstance(r, NodeResult)}
    invocation = lineage_run_id(run_id, "@invocation", 1)
    assert invocation in runs
    lineage_nodes = {e["job"]["name"] for e in events} - {runs[invocation][0]["job"]["name"]}
    assert lineage_nodes == {uid for uid in results if not uid.startswith("operation.")}
    for uid, result in results.items():
        if uid.startswith("operation."):
            continue
        lifecycle = runs[lineage_run_id(run_id, uid, result.attempt)]
        assert {e["job"]["name"] for e in lifecycle} == {uid}
        assert lifecycle[-1]["eventType"] == expected_ending(result.status), uid
        assert lifecycle[0]["run"]["facets"]["parent"]["run"]["runId"] == invocation


def ending_latencies(received: list[Any]) -> list[float]:
    """Seconds from a node's end (its event's time: dbt's ``node_finished_at``) to its COMPLETE / FAIL
    arriving at the endpoint."""
    from datetime import datetime

    out = []
    for item in received:
        event = item.event
        if event["eventType"] in ("COMPLETE", "FAIL") and not event["job"]["name"].startswith("dbt-run"):
            ended = datetime.fromisoformat(event["eventTime"].replace("Z", "+00:00")).timestamp()
            out.append(item.at - ended)
    return out


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def no_secret(bodies: list[bytes], secret: str) -> bool:
    return bool(bodies) and not any(secret.encode() in body for body in bodies) and secret not in json.dumps(
        [json.loads(body) for body in bodies]
    )
