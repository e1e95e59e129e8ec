"""The producer's hook into dbt: the selected graph as dbt builds it, and dbt's final results.

dbt computes the nodes it will run (and the edges between them, with ``build``'s test edges and transitive
edges through unselected nodes) into a ``GraphQueue``. For the duration of one invocation we wrap
``GraphQueue.__init__``: once dbt has built its queue, the wrapper copies the queue's graph (dbt mutates it
as nodes finish) into a plain ``{unique_id: [resource_type, [parents]]}`` payload and hands it to a sink. It
runs on dbt's main thread after parsing and before the first node starts, so the payload is exactly what dbt
runs, at the cost of one pass over the selected graph — no second parse, no second selection. The queue is
the one place every command goes through: ``dbt retry`` builds its own queue (``RetryTask``'s wrapper task
overrides ``get_graph_queue``), so a hook on ``NodeSelector.get_graph_queue`` would miss it. For a retry the
payload also names the command retried (``args.which`` of the previous ``run_results.json``), whose skip
rules the retry follows. The project hooks the task runs around its nodes (``on-run-start``/``on-run-end``,
results of their own in dbt's ``run_results.json``) are nodes of the payload too: ``_runtime_initialize``,
which builds the queue, is wrapped as well, so the queue's wrapper knows its task.

This module imports nothing outside the standard library at import time, and it is self-contained but for
``test_edges.py``: the subprocess producer runs its source verbatim (``python -c``, after ``exit_codes.py``'s
and ``test_edges.py``'s, before ``bootstrap.py``'s) in the dbt process of another virtualenv, where dbtbus
is not installed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from typing import Any

if __name__ != "__main__":  # run verbatim in dbt's interpreter, test_edges.py's source comes before this one
    from .test_edges import TEST_RESOURCE_TYPES, drop_implied_test_edges

GRAPH_EVENT = "DbtbusGraph"
RESULTS_EVENT = "DbtbusResults"
#: A node's compiled code as dbt's RunResult has it, sent just before the node's NodeFinished (no event of
#: dbt carries it).
COMPILED_EVENT = "DbtbusCompiled"

GraphPayload = dict[str, Any]
#: The resource type of a project hook (``on-run-start`` / ``on-run-end``) in dbt's results.
HOOK_RESOURCE_TYPE = "operation"


def _lookup(manifest: Any, unique_id: str) -> Any:
    for name in ("nodes", "sources", "unit_tests", "exposures", "saved_queries", "functions"):
        table = getattr(manifest, name, None)
        if table is not None and unique_id in table:
            return table[unique_id]
    return None


def _resource_type(node: Any, unique_id: str) -> str:
    rtype = getattr(node, "resource_type", None)
    if rtype is None:
        return unique_id.split(".", 1)[0]
    return str(getattr(rtype, "value", rtype))


def _config_value(node: Any, key: str) -> str | None:
    config = getattr(node, "config", None)
    if config is None:
        return None
    value = getattr(config, key, None)
    if value is None and hasattr(config, "get"):
        try:
            value = config.get(key)
        except Exception:
            value = None
    if value is None:
        return None
    return str(getattr(value, "value", value))


def project_hooks(task: Any, graph: Any) -> list[str]:
    """The project hooks (``on-run-start``, then ``on-run-end``) ``task`` runs around ``graph``'s nodes.

    dbt's own rule, asked of the task itself: the ``RunTask`` family (``build``, ``run``, ``seed``,
    ``snapshot``, ``test``, ``source freshness`` and their ``retry``) runs them, in
    ``get_hooks_by_type``'s order, whenever it runs at least one node (with none it says "Nothing to do").
    Each is a node of dbt's results (``operation.<package>.<package>-on-run-start-0``), without parents.
    """
    get_hooks = getattr(task, "get_hooks_by_type", None)
    if get_hooks is None or getattr(task, "manifest", None) is None or not len(graph.nodes):
        return []
    out: list[str] = []
    for hook_type in ("on-run-start", "on-run-end"):  # RunHookType's values (a StrEnum)
        out.extend(str(hook.unique_id) for hook in get_hooks(hook_type))
    return out


def build_unit_tests(task: Any, graph: Any) -> list[tuple[str, str]]:
    """``(unit test, its model)`` for the unit tests ``dbt build`` runs outside its queue.

    ``BuildTask`` takes the selected unit tests out of the queue and runs each right before its model
    (``model_to_unit_test_map``; a failing one skips the model). They are nodes of dbt's results, so of the
    payload too, with the model as their parent, as ``depends_on`` (and ``dbt test``'s queue) has it.
    """
    by_model = getattr(task, "model_to_unit_test_map", None)
    if not isinstance(by_model, dict):
        return []
    return [(str(uid), model) for model, tests in by_model.items() if model in graph.nodes for uid in tests]


def payload_from_graph(manifest: Any, graph: Any, task: Any = None) -> GraphPayload:
    """Copy a queue's ``networkx`` graph (node → resource type, parents) into a JSON-able payload.

    ``build``'s test edges that another path implies are left out (``_test_edges.py``): every node keeps
    the ancestors dbt gives it, in O(nodes) edges instead of dbt's O(nodes × depth). The project hooks the
    queue's ``task`` runs (:func:`project_hooks`) are nodes too, without parents, and so are the unit
    tests ``dbt build`` runs beside its queue (:func:`build_unit_tests`).
    """
    types: dict[str, str] = {}
    parents: dict[str, list[str]] = {}
    continue_on_error: list[str] = []
    ephemeral: list[str] = []
    for uid in graph.nodes:
        node = _lookup(manifest, uid)
        types[uid] = _resource_type(node, uid)
        parents[uid] = sorted(graph.predecessors(uid))
        if node is not None:
            if _config_value(node, "on_error") == "continue":
                continue_on_error.append(uid)
            if _config_value(node, "materialized") == "ephemeral":
                ephemeral.append(uid)
    kept = drop_implied_test_edges(parents, lambda uid: types.get(uid) in TEST_RESOURCE_TYPES)
    nodes = {uid: [types[uid], kept[uid]] for uid in parents}
    for uid, model in build_unit_tests(task, graph) if task is not None else ():
        nodes.setdefault(uid, ["unit_test", [model]])
    for uid in project_hooks(task, graph) if task is not None else ():
        nodes.setdefault(uid, [HOOK_RESOURCE_TYPE, []])
    return {"nodes": nodes, "continue_on_error": continue_on_error, "ephemeral": ephemeral}


#: A ``--vars`` entry whose name contains one of these (any case, at any depth) is never carried: its value
#: becomes :data:`REDACTED`, in ``vars`` and wherever it shows in ``invocation_command``.
SECRET_NAME_PARTS = ("password", "passwd", "pwd", "secret", "token", "api_key", "apikey", "private_key",
                     "credential", "auth", "passphrase")
REDACTED = "**redacted**"


def _secret_name(name: Any) -> bool:
    text = str(name).lower()
    return any(part in text for part in SECRET_NAME_PARTS)


def _url_password(text: str, found: list[str]) -> str:
    """``scheme://user:password@host`` with the password redacted (remembered in ``found``)."""
    scheme = text.find("://")
    at = text.find("@", scheme + 3) if scheme >= 0 else -1
    colon = text.find(":", scheme + 3, at) if at >= 0 else -1
    if colon < 0 or "/" in text[scheme + 3:at]:
        return text
    found.append(text[colon + 1:at])
    return text[:colon + 1] + REDACTED + text[at:]


def redact(value: Any, found: list[str], secret: bool = False) -> Any:
    """``value`` (JSON-shaped) with secret-looking entries redacted; the redacted strings go to ``found``."""
    if isinstance(value, dict):
        return {k: redact(v, found, secret or _secret_name(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, found, secret) for v in value]
    if secret and value is not None and not isinstance(value, bool):
        if str(value):
            found.append(str(value))
        return REDACTED
    if isinstance(value, str):
        return _url_password(value, found)
    return value


class _Forgiving:
    @staticmethod
    def of(base: type[json.JSONEncoder]) -> type[json.JSONEncoder]:
        """``base``, with ``str()`` for whatever it cannot encode (never fail over an exotic flag)."""

        class Encoder(base):  # type: ignore[misc, valid-type]
            def default(self, o: Any) -> Any:
                try:
                    return super().default(o)
                except TypeError:
                    return str(o)

        return Encoder


def invocation_payload() -> dict[str, Any]:
    """dbt's ``args`` as it writes them in ``run_results.json`` (``args_to_dict`` of the invocation's flags),
    secret-looking ``--vars`` values redacted there and in ``invocation_command``, and dbt's
    ``invocation_started_at`` (naive UTC, ISO). Empty where this dbt cannot say (never raises)."""
    out: dict[str, Any] = {}
    try:
        from dbt.flags import get_flags
        from dbt.utils import args_to_dict

        encoder: type[json.JSONEncoder] = json.JSONEncoder
        with contextlib.suppress(Exception):  # the encoder of dbt's artifacts (datetimes ISO, Decimals floats)
            from dbt_common.utils.encoding import JSONEncoder as dbt_encoder

            encoder = dbt_encoder
        flags = get_flags()  # type: ignore[no-untyped-call]
        raw = args_to_dict(flags)  # type: ignore[no-untyped-call]
        args = json.loads(json.dumps(raw, cls=_Forgiving.of(encoder)))
        found: list[str] = []
        args["vars"] = redact(args.get("vars"), found) if "vars" in args else None
        if args["vars"] is None:
            del args["vars"]
        command = args.get("invocation_command")
        if isinstance(command, str):
            for secret in sorted(set(found), key=len, reverse=True):
                if len(secret) >= 3:  # a one- or two-character value would redact half the command line
                    command = command.replace(secret, REDACTED)
            args["invocation_command"] = _url_password(command, [])
        out["dbt_args"] = args
    except Exception:
        pass
    try:
        from dbt_common.invocation import get_invocation_started_at

        out["invocation_started_at"] = get_invocation_started_at().isoformat()
    except Exception:
        pass
    return out


def install_graph_hook(
    sink: Callable[[GraphPayload], None],
    args: Sequence[str],
    compiled: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[], None]:
    """Wrap dbt's ``GraphQueue`` so each queue dbt builds is reported to ``sink``; with ``compiled``, also
    dbt's ``BaseRunner.safe_run``, so each node's compiled code (what dbt writes as ``compiled_code``) goes
    to ``compiled`` as ``{"unique_id", "compiled_code"}`` once the node ran, before its NodeFinished.

    ``args`` are the invocation's arguments: ``dbt retry``'s own hook is installed only when they name it,
    because importing ``dbt.task.retry`` costs ~2 MiB that no other command loads.
    Returns the function that restores dbt. ``sink`` must not raise (errors are swallowed: the graph is a
    courtesy to consumers, never a reason to fail dbt).
    """
    from dbt.graph.queue import GraphQueue
    from dbt.task.runnable import GraphRunnableTask

    original_init = GraphQueue.__dict__["__init__"]
    original_initialize = GraphRunnableTask.__dict__["_runtime_initialize"]
    retried: list[str] = []
    #: The task building its queue (``_runtime_initialize`` builds it): it knows the hooks it will run.
    tasks: list[Any] = []

    def _runtime_initialize(self: Any, *args: Any, **kwargs: Any) -> Any:
        tasks.append(self)
        try:
            return original_initialize(self, *args, **kwargs)
        finally:
            tasks.pop()

    def __init__(self: Any, graph: Any, manifest: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, graph, manifest, *args, **kwargs)
        try:
            payload = payload_from_graph(manifest, self.graph, tasks[-1] if tasks else None)
            if retried:
                payload["retry_of"] = retried[-1]
            payload.update(invocation_payload())
            sink(payload)
        except Exception:  # pragma: no cover - defensive
            return

    GraphQueue.__init__ = __init__  # type: ignore[method-assign]
    GraphRunnableTask._runtime_initialize = _runtime_initialize  # type: ignore[method-assign]
    restore_retry = _hook_retry(retried) if "retry" in args else _nothing
    # Project hooks run in RunTask and its subclasses: a command that runs none is spared importing dbt.task.run.
    hooks = not _HOOK_COMMANDS.isdisjoint(args)
    restore_compiled = _hook_compiled(compiled, hooks) if compiled is not None else _nothing

    def restore() -> None:
        GraphQueue.__init__ = original_init  # type: ignore[method-assign]
        GraphRunnableTask._runtime_initialize = original_initialize  # type: ignore[method-assign]
        restore_retry()
        restore_compiled()

    return restore


def _nothing() -> None:
    return None


#: The commands whose task is a RunTask (they run the project's on-run-start / on-run-end hooks).
_HOOK_COMMANDS = frozenset({"build", "run", "seed", "snapshot", "test", "retry"})


def _hook_compiled(sink: Callable[[dict[str, Any]], None], hooks: bool) -> Callable[[], None]:
    """Report each node's compiled code from the result ``BaseRunner.safe_run`` returns (on dbt's worker
    thread, before ``call_runner`` fires NodeFinished): dbt writes ``node.compiled_code`` of that result
    when ``node.compiled``. A microbatch model's batches report theirs too (the producer drops them).
    A project hook's, from ``RunTask.get_hook_sql`` (which compiles the hook in place, before
    LogHookStartLine)."""
    try:
        from dbt.task.base import BaseRunner
    except Exception:  # pragma: no cover - a dbt without it
        return _nothing
    run_task: Any = None
    if hooks:
        try:
            from dbt.task.run import RunTask as run_task
        except Exception:  # pragma: no cover - a dbt without it
            run_task = None
    original = BaseRunner.__dict__["safe_run"]
    original_hook_sql = run_task.__dict__.get("get_hook_sql") if run_task is not None else None

    def report(node: Any) -> None:
        code = getattr(node, "compiled_code", None)
        if getattr(node, "compiled", False) and isinstance(code, str):
            sink({"unique_id": node.unique_id, "compiled_code": code})

    def safe_run(self: Any, manifest: Any) -> Any:
        result = original(self, manifest)
        with contextlib.suppress(Exception):  # never fail dbt over a courtesy
            report(getattr(result, "node", None))
        return result

    def get_hook_sql(self: Any, adapter: Any, hook: Any, *args: Any, **kwargs: Any) -> Any:
        assert original_hook_sql is not None
        sql = original_hook_sql(self, adapter, hook, *args, **kwargs)
        with contextlib.suppress(Exception):
            report(hook)
        return sql

    BaseRunner.safe_run = safe_run  # type: ignore[method-assign]
    if original_hook_sql is not None:
        run_task.get_hook_sql = get_hook_sql

    def restore() -> None:
        BaseRunner.safe_run = original  # type: ignore[method-assign]
        if original_hook_sql is not None:
            run_task.get_hook_sql = original_hook_sql

    return restore


def _hook_retry(retried: list[str]) -> Callable[[], None]:
    """Remember which command a ``dbt retry`` retries (dbt reads it from the previous run's artifacts)."""
    try:
        from dbt.task.retry import RetryTask
    except Exception:  # pragma: no cover - a dbt without retry
        return _nothing
    original = RetryTask.__dict__["__init__"]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        name = getattr(self, "previous_command_name", None)
        if isinstance(name, str) and name:
            retried.append(name)

    RetryTask.__init__ = __init__  # type: ignore[method-assign]

    def restore() -> None:
        RetryTask.__init__ = original  # type: ignore[method-assign]

    return restore


def results_payload(dbt_result: Any) -> list[tuple[str, str, str]]:
    """dbt's final per-node results as ``[(unique_id, status, message), ...]`` (fail-fast reconciliation)."""
    out: list[tuple[str, str, str]] = []
    run_results = getattr(getattr(dbt_result, "result", None), "results", None) or []
    for item in run_results:
        node = getattr(item, "node", None)
        uid = getattr(node, "unique_id", None)
        if uid is None:
            continue
        status = getattr(item, "status", "")
        out.append((uid, str(getattr(status, "value", status)), str(getattr(item, "message", "") or "")))
    return out


def dbt_elapsed(dbt_result: Any) -> float | None:
    """dbt's own ``elapsed_time`` of the run (what its run_results.json says), or None."""
    value = getattr(getattr(dbt_result, "result", None), "elapsed_time", None)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def vm_hwm(pid: int | str = "self") -> int | None:
    """Peak RSS in bytes of a live process since its last exec (Linux ``VmHWM``), or None."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def json_line(name: str, data: Any) -> str:
    """One line in the shape of dbt's ``--log-format json`` (info level: it is printed at any log level)."""
    return json.dumps({"info": {"name": name, "level": "info", "msg": ""}, "data": data}) + "\n"
