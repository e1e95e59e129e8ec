"""Runs with known timings, as records (no bus, no dbt): a failure cascade, a live run, a crashed one."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from dbtbus.events import (
    GraphNode,
    Heartbeat,
    NodeResult,
    NodeStarted,
    ProducerInfo,
    Record,
    RunCrashed,
    RunFinished,
    RunStarted,
)
from dbtbus.testing.records import node_result, run_started

T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=timezone.utc)
RUN_ID = "report-run"

#: seed → a (2 s) → b (5 s) → t_b (test, fails) → c (skipped) → d (skipped); x (1 s) on the side.
GRAPH = {
    "seed.p.raw": GraphNode("seed", ()),
    "model.p.a": GraphNode("model", ("seed.p.raw",)),
    "model.p.b": GraphNode("model", ("model.p.a",)),
    "test.p.t_b": GraphNode("test", ("model.p.b",)),
    "model.p.c": GraphNode("model", ("model.p.b", "test.p.t_b")),
    "model.p.d": GraphNode("model", ("model.p.c",)),
    "model.p.x": GraphNode("model", ("seed.p.raw",)),
}
#: node → (thread, start, end, status): the schedule of the finished run.
SCHEDULE = {
    "seed.p.raw": ("Thread-1 (worker)", 0.0, 1.0, "success"),
    "model.p.a": ("Thread-1 (worker)", 1.0, 3.0, "success"),
    "model.p.x": ("Thread-2 (worker)", 1.0, 2.0, "success"),
    "model.p.b": ("Thread-2 (worker)", 3.0, 8.0, "success"),
    "test.p.t_b": ("Thread-1 (worker)", 8.0, 8.5, "fail"),
    "model.p.c": ("Thread-1 (worker)", 8.5, 8.5, "skipped"),
    "model.p.d": ("Thread-2 (worker)", 8.5, 8.5, "skipped"),
}
#: The skipped nodes after the failing test took no time: the path ends at the test.
CRITICAL = ("seed.p.raw", "model.p.a", "model.p.b", "test.p.t_b")
FAIL_MESSAGE = "Got 3 results, configured to fail if != 0"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def started(attempt: int = 1, graph: dict[str, GraphNode] | None = None) -> RunStarted:
    return run_started(
        GRAPH if graph is None else graph,
        run_id=RUN_ID,
        producer=ProducerInfo(id="p1", host="worker-1", pid=42, kind="dbtRunner"),
        started_at=at(0),
        command="build",
        args=("build", "--threads", "4"),
        dbt_version="1.11.16",
        invocation_id="inv-1",
        attempt=attempt,
    )


def result(uid: str, *, attempt: int = 1) -> NodeResult:
    thread, start, end, status = SCHEDULE[uid]
    return node_result(
        uid,
        status,
        run_id=RUN_ID,
        graph=GRAPH,
        started_at=at(start),
        finished_at=at(end),
        execution_time=end - start,
        message=FAIL_MESSAGE if status == "fail" else ("OK" if status == "success" else None),
        adapter_response={"rows_affected": 7} if uid == "seed.p.raw" else {},
        failures=3 if status == "fail" else None,
        thread=thread,
        attempt=attempt,
        skip_cause="test.p.t_b" if status == "skipped" else None,
        relation_name=f'"db"."main"."{uid.rsplit(".", 1)[1]}"' if uid.startswith(("model", "seed")) else None,
    )


def finished_run() -> list[Record]:
    records: list[Record] = [started()]
    for uid in sorted(SCHEDULE, key=lambda u: (SCHEDULE[u][2], u)):
        thread, start, _, _ = SCHEDULE[uid]
        records.append(NodeStarted(run_id=RUN_ID, unique_id=uid, started_at=at(start), thread=thread))
        records.append(result(uid))
        end = SCHEDULE[uid][2]
        records.append(Heartbeat(run_id=RUN_ID, at=at(end), peak_rss=100_000_000 + int(end * 1e6)))
    records.append(
        RunFinished(
            run_id=RUN_ID, success=False, exit_code=1, counts={"success": 4, "fail": 1, "skipped": 2},
            elapsed=9.0, peak_rss=120_000_000, finished_at=at(9.0),
        )
    )
    return records


def live_run() -> list[Record]:
    """Seed and a done; b running since +3 s; the rest pending."""
    return [
        started(),
        result("seed.p.raw"),
        result("model.p.a"),
        result("model.p.x"),
        NodeStarted(run_id=RUN_ID, unique_id="model.p.b", started_at=at(3.0), thread="Thread-2 (worker)"),
        Heartbeat(run_id=RUN_ID, at=at(4.0), running=1, done=3, peak_rss=110_000_000),
    ]


def crashed_run() -> list[Record]:
    return [
        *live_run(),
        RunCrashed(run_id=RUN_ID, error="terminated by signal SIGTERM", elapsed=5.0, finished_at=at(5.0)),
    ]
