"""One DAG run of a rendered dbt group, whatever its layout: the node tasks by node, their logs, its timings.

In the ``one_dag`` layout the node tasks are the group's own (``dbt.m003``); in the ``split`` layout they
live in node DAGs (``<dag_id>.dbt.<folder>``, task ``m003``) whose runs share the DAG run's id, and the group
holds one task per node DAG. Both are presented alike here — node tasks keyed ``dbt.<name>`` — so every
scenario asserts the same things in either layout.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbtbus._dbt.graph import descendants as graph_descendants

from ._deployment import TERMINAL, Deployment, DeploymentError, TaskState

PRODUCER = "dbt.dbt_producer"
NOT_NODES = {PRODUCER, "dbt.dbtbus_carrier"}
#: The scenarios' timings, printed at the end of the session and written to ``DBTBUS_LIVE_FIGURES`` (conftest).
FIGURES: dict[str, Any] = {}


@dataclass
class Scenario:
    af: Deployment
    dag_id: str
    run_id: str

    @property
    def split(self) -> bool:
        return bool(self.node_dags())

    def node_dags(self) -> list[str]:
        rows = self.af.query("select dag_id from dag where dag_id like %s order by dag_id", f"{self.dag_id}.%")
        return [str(r[0]) for r in rows]

    def where(self) -> dict[str, tuple[str, str]]:
        """``dbt.<name>`` → (the DAG holding the node's task, its task id)."""
        out: dict[str, tuple[str, str]] = {}
        for task_id in self.af.tasks(self.dag_id, self.run_id):
            if task_id not in NOT_NODES and not task_id.startswith("dbt.nodes_"):
                out[task_id] = (self.dag_id, task_id)
        for dag_id in self.node_dags():
            for task_id in self.af.tasks(dag_id, self.run_id):
                out[f"dbt.{task_id}"] = (dag_id, task_id)
        return out

    def nodes(self) -> dict[str, TaskState]:
        out: dict[str, TaskState] = {}
        for label, (dag_id, task_id) in self.where().items():
            out[label] = self.af.tasks(dag_id, self.run_id)[task_id]
        return out

    def group_tasks(self) -> dict[str, TaskState]:
        """The rendering DAG's own tasks (producer, carrier, one per node DAG)."""
        return self.af.tasks(self.dag_id, self.run_id)

    def producer(self) -> TaskState:
        return self.group_tasks()[PRODUCER]

    def log(self, label: str) -> str:
        if label == PRODUCER:
            return self.af.task_log(self.dag_id, self.run_id, PRODUCER)
        dag_id, task_id = self.where()[label]
        return self.af.task_log(dag_id, self.run_id, task_id)

    def ran_on_a_worker(self, label: str) -> bool:
        dag_id, task_id = self.where()[label]
        task = self.af.tasks(dag_id, self.run_id)[task_id]
        return task.queued or bool(self.af.worker_logs(dag_id, self.run_id, task_id))

    def history(self) -> list[tuple[str, TaskState]]:
        """Every earlier try of a node task, as (``dbt.<name>``, try)."""
        out = [(h.task_id, h) for h in self.af.history(self.dag_id, self.run_id) if h.task_id not in NOT_NODES]
        for dag_id in self.node_dags():
            out.extend((f"dbt.{h.task_id}", h) for h in self.af.history(dag_id, self.run_id))
        return out

    def wait(self, timeout: float = 240) -> str:
        """Wait for the DAG run and every node DAG run to end; return the DAG run's state."""
        deadline = time.monotonic() + timeout
        state = self.af.wait_run(self.dag_id, self.run_id, timeout=timeout)
        for dag_id in self.node_dags():
            while self.af.dag_run_state(dag_id, self.run_id) not in ("success", "failed"):
                if time.monotonic() > deadline:
                    raise DeploymentError(f"the node DAG run {dag_id}/{self.run_id} did not end: "
                                          f"{ {k: v.state for k, v in self.af.tasks(dag_id, self.run_id).items()} }")
                time.sleep(0.3)
        return state

    def wait_terminal(self, labels: set[str], timeout: float = 85) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            nodes = self.nodes()
            if all(nodes.get(t) is not None and nodes[t].state in TERMINAL for t in labels):
                return
            time.sleep(0.3)

    def wait_node(self, label: str, states: set[str], timeout: float = 180) -> TaskState:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.af.check_alive()
            task = self.nodes().get(label)
            if task is not None and task.state in states:
                return task
            time.sleep(0.2)
        raise DeploymentError(f"{label} never reached {states} in {timeout:.0f} s\n{self.af.tails()}")

    def timings(self) -> dict[str, float]:
        """DAG wall (until the last of the DAG run and its node DAG runs ended), producer, tail after it."""
        start, end = self.af.dag_run_times(self.dag_id, self.run_id)
        ends = [end] + [self.af.dag_run_times(d, self.run_id)[1] for d in self.node_dags()]
        producer = self.producer()
        assert start is not None and None not in ends and producer.start is not None and producer.end is not None
        last = max(e for e in ends if e is not None)
        return {"dag_wall_s": round(last - start, 2), "producer_s": round(producer.end - producer.start, 2),
                "tail_s": round(last - producer.end, 2)}


def project_nodes(project: Path) -> int:
    return sum(1 for p in (project / "models").iterdir() if p.suffix in (".sql", ".py"))


# ---------------------------------------------------------------------------------------------- scenario steps
# The live project's DAGs (live_dags.py): each scenario's DAG in the ``one_dag`` layout, ``<name>_split`` in the
# ``split`` one; the run's conf names the ``gate`` CSV the gated model reads.


def dag_id_for(name: str, layout: str) -> str:
    return name if layout == "one_dag" else f"{name}_split"


def new_run_id(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def gate_file(tmp_path: Path, *, create: bool = True) -> Path:
    """The gated model's CSV (missing: the model fails at runtime)."""
    path = tmp_path / "gate.csv"
    if create:
        path.write_text("ok\n1\n")
    return path


def descendants(project: Path, uid: str) -> set[str]:
    """The node task labels (``dbt.<name>``) of ``uid``'s model descendants in the project's manifest."""
    nodes = json.loads((project / "manifest.render.json").read_text())["nodes"]
    children: dict[str, list[str]] = {}
    for child, node in nodes.items():
        for parent in node.get("depends_on", {}).get("nodes", []):
            children.setdefault(parent, []).append(child)
    return {f"dbt.{c.rsplit('.', 1)[1]}" for c in graph_descendants(children, uid) if c.startswith("model.")}


def start(af: Deployment, name: str, layout: str, conf: dict[str, Any]) -> Scenario:
    run = Scenario(af, dag_id_for(name, layout), new_run_id(name))
    af.trigger(run.dag_id, run.run_id, conf)
    return run


def clean_run(af: Deployment, name: str, layout: str, tmp_path: Path, *, figure: str | None = None) -> Scenario:
    """A run of the live project that must end green, every node task ended in the triggerer."""
    run = start(af, name, layout, {"gate": str(gate_file(tmp_path))})
    state = run.wait()
    nodes = run.nodes()
    assert state == "success", {k: v.state for k, v in nodes.items()}
    assert len(nodes) == 14  # the seed, 12 models, the slow Python model
    assert {t.state for t in nodes.values()} == {"success"}
    assert run.split is (layout == "split")
    assert [k for k in nodes if run.ran_on_a_worker(k)] == [], "these node tasks ran on a worker"
    if layout == "split":
        group = {k: t.state for k, t in run.group_tasks().items() if k.startswith("dbt.nodes_")}
        assert len(group) == len(run.node_dags()) >= 3 and set(group.values()) == {"success"}, group
    FIGURES[figure or run.dag_id] = run.timings()
    return run


@contextlib.contextmanager
def slowed(project: Path) -> Iterator[Path]:
    """dbt's ``slow`` model sleeps while this flag exists (at most 90 s)."""
    flag = project / "slow.flag"
    flag.touch()
    try:
        yield flag
    finally:
        flag.unlink(missing_ok=True)


def heal_when_producer_retries(run: Scenario, gate: Path) -> None:
    run.af.wait_task(run.dag_id, run.run_id, PRODUCER, {"up_for_retry"}, timeout=180)
    gate.write_text("ok\n1\n")  # the transient failure is gone by the producer's next try


def reran_dbt(run: Scenario) -> list[str]:
    """The node tasks that ran dbt themselves (a sensor's re-run on a worker)."""
    return sorted(t for t in run.nodes() if "re-running dbt" in run.log(t))
