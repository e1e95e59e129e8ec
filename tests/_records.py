"""Fabricated records for the core tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dbtbus._dbt.rules import SKIP_CHILDREN_ON
from dbtbus.events import GraphNode, NodeResult, NodeStatus, ProducerInfo, RunStarted

RUN = "run-1"


def graph(spec: Mapping[str, Sequence[str]], types: Mapping[str, str] | None = None) -> dict[str, GraphNode]:
    types = types or {}
    return {uid: GraphNode(types.get(uid, uid.split(".")[0]), tuple(parents)) for uid, parents in spec.items()}


def started(
    spec: Mapping[str, Sequence[str]] | None,
    *,
    run_id: str = RUN,
    command: str = "build",
    heartbeat_interval: float = 5.0,
    continue_on_error: frozenset[str] = frozenset(),
    attempt: int = 1,
) -> RunStarted:
    return RunStarted(
        run_id=run_id,
        producer=ProducerInfo(id="test-producer"),
        command=command,
        graph=graph(spec) if spec is not None else None,
        skip_children_on=SKIP_CHILDREN_ON.get(command, frozenset()),
        continue_on_error=continue_on_error,
        heartbeat_interval=heartbeat_interval,
        attempt=attempt,
    )


def result(
    uid: str, status: NodeStatus | str = NodeStatus.SUCCESS, *, run_id: str = RUN, **fields: object
) -> NodeResult:
    return NodeResult(run_id=run_id, unique_id=uid, status=NodeStatus(status), **fields)  # type: ignore[arg-type]


# model.a → model.b → model.c, model.a → test.a_ok, model.b → test.b_fails; seed.s → model.a; model.x alone
DIAMOND = {
    "seed.s": [],
    "model.a": ["seed.s"],
    "test.a_ok": ["model.a"],
    "model.b": ["model.a", "test.a_ok"],
    "test.b_fails": ["model.b"],
    "model.c": ["model.b", "test.b_fails"],
    "model.x": [],
}
