"""Generate synthetic dbt-duckdb projects for tests and benchmarks.

Pure Python: nothing here imports dbt. The generated project contains

* one seed (``seed.<name>.raw``, columns ``id,value``),
* ``models`` view/table models arranged in layers; every model in layer 0
  selects from the seed, every later model joins 1..``fanout`` earlier models
  (at least one from the layer directly above it),
* ``tests_per_model`` generic tests per model (``not_null(id)``, ``unique(id)``,
  ``not_null(value)``, in that order), all passing unless upstream fails.

Models named in ``failing`` reference a relation that does not exist, so they
fail at *runtime* (parse and compile succeed). In ``dbt build`` every
descendant of a failing model (models and tests) is then skipped.

Unique ids of generic tests contain a hash; :func:`generic_test_unique_id`
reproduces dbt-core's formula (``parser/schema_generic_tests.py``,
``create_test_node``), which has been stable since dbt-core 1.0.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "GeneratedProject",
    "generate_project",
    "generic_test_unique_id",
]

_SEED_NAME = "raw"
_SEED_ROWS = 10
# (test name, column) in the order they are added to a model.
_TEST_KINDS: tuple[tuple[str, str], ...] = (
    ("not_null", "id"),
    ("unique", "id"),
    ("not_null", "value"),
)
_TABLE_PROBABILITY = 0.3


def _empty_parents() -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({})


@dataclass(frozen=True)
class GeneratedProject:
    """Description of a project written by :func:`generate_project`.

    ``parents`` holds the *direct* dependencies of every node as dbt records
    them in ``depends_on.nodes`` (seed: ``()``, model: its refs, test: its
    model). ``dbt build`` additionally makes each node wait for the tests of
    its ancestors (dbt's ``parent_test`` edges); those edges never change
    which nodes are skipped, because they only connect a test to nodes that
    already descend from the test's model.
    """

    path: Path
    name: str
    seed: str
    models: tuple[str, ...]
    tests: tuple[str, ...]
    parents: Mapping[str, tuple[str, ...]] = field(default_factory=_empty_parents)
    materializations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: models whose SQL errors at runtime (as requested via ``failing``)
    failing: frozenset[str] = frozenset()
    #: every descendant of a failing model: skipped in ``dbt build``
    skipped: frozenset[str] = frozenset()
    threads: int = 4

    @property
    def nodes(self) -> tuple[str, ...]:
        """All node unique ids: the seed, then models, then tests."""
        return (self.seed, *self.models, *self.tests)

    @property
    def profiles_dir(self) -> Path:
        return self.path

    @property
    def duckdb_path(self) -> Path:
        return self.path / f"{self.name}.duckdb"

    def dbt_args(self) -> list[str]:
        """``--project-dir``/``--profiles-dir`` arguments for this project."""
        return ["--project-dir", str(self.path), "--profiles-dir", str(self.profiles_dir)]

    def children(self) -> dict[str, tuple[str, ...]]:
        """Inverse of :attr:`parents` (direct children, sorted)."""
        kids: dict[str, list[str]] = {uid: [] for uid in self.parents}
        for uid, ups in self.parents.items():
            for up in ups:
                kids[up].append(uid)
        return {uid: tuple(sorted(v)) for uid, v in kids.items()}

    def descendants(self, unique_id: str) -> frozenset[str]:
        """All transitive descendants of ``unique_id`` (excluding itself)."""
        kids = self.children()
        seen: set[str] = set()
        stack = list(kids[unique_id])
        while stack:
            uid = stack.pop()
            if uid not in seen:
                seen.add(uid)
                stack.extend(kids[uid])
        return frozenset(seen)

    def expected_status(self, unique_id: str) -> str:
        """Expected ``run_result.status`` of a node in a plain ``dbt build``."""
        if unique_id in self.skipped:
            return "skipped"
        if unique_id in self.failing:
            return "error"
        if unique_id in self.tests:
            return "pass"
        return "success"

    @property
    def expected_errors(self) -> frozenset[str]:
        """Failing models that actually run (a failing model downstream of
        another failing model is skipped instead)."""
        return self.failing - self.skipped

    @property
    def expected_success(self) -> bool:
        return not self.failing


def generic_test_unique_id(
    project: str, test: str, model: str, column: str, namespace: str | None = None
) -> str:
    """Unique id dbt-core gives a column-level generic test without arguments."""
    name = f"{test}_{model}_{column}"
    metadata = {
        "kwargs": {"column_name": column, "model": f"{{{{ get_where_subquery(ref('{model}')) }}}}"},
        "name": test,
        "namespace": str(namespace),
    }
    # dbt: md5(name + repr(<metadata with sorted keys, str leaves>))[-10:]
    hashable = {k: metadata[k] for k in sorted(metadata)}
    digest = hashlib.md5((name + repr(hashable)).encode("utf-8"), usedforsecurity=False)
    return f"test.{project}.{name}.{digest.hexdigest()[-10:]}"


def _model_sql(parents: list[str], *, broken: bool, seed_ref: bool) -> str:
    refs = [f"{{{{ ref('{p}') }}}}" for p in parents]
    if seed_ref:
        body = f"select id, value from {refs[0]}"
    else:
        aliases = [f"p{i}" for i in range(len(parents))]
        values = ", ".join(f"{a}.value" for a in aliases)
        value_expr = f"least({values}) + 1" if len(aliases) > 1 else "p0.value + 1"
        joins = "".join(
            f"\njoin {ref} {alias} on {alias}.id = p0.id"
            for ref, alias in zip(refs[1:], aliases[1:], strict=True)
        )
        body = f"select p0.id as id, {value_expr} as value\nfrom {refs[0]} p0{joins}"
    if broken:
        # Compiles fine; fails at runtime because the relation does not exist.
        body = (
            f"select q.id, q.value\nfrom ({body}) q\njoin dbtbus_generated_missing_relation m on m.id = q.id"
        )
    return body + "\n"


def _yaml_str(value: str) -> str:
    # JSON strings are valid YAML flow scalars.
    return json.dumps(value)


def generate_project(
    path: Path,
    *,
    models: int,
    tests_per_model: int = 1,
    fanout: int = 3,
    failing: Iterable[str] = (),
    name: str = "gen",
    threads: int = 4,
    seed: int = 0,
) -> GeneratedProject:
    """Write a dbt-duckdb project into ``path`` (created if missing).

    ``failing`` holds model names (``"m003"``) or unique ids
    (``"model.gen.m003"``) that must fail at runtime. The output is a pure
    function of the arguments (``seed`` drives the DAG shape).
    """
    if models < 1:
        raise ValueError("models must be >= 1")
    if not 0 <= tests_per_model <= len(_TEST_KINDS):
        raise ValueError(f"tests_per_model must be between 0 and {len(_TEST_KINDS)}")
    if fanout < 1:
        raise ValueError("fanout must be >= 1")
    if threads < 1:
        raise ValueError("threads must be >= 1")
    if not name.isidentifier():
        raise ValueError("name must be a valid identifier")

    rng = random.Random(seed)
    width = len(str(models - 1))
    names = [f"m{i:0{max(3, width)}d}" for i in range(models)]
    model_uid = {n: f"model.{name}.{n}" for n in names}
    seed_uid = f"seed.{name}.{_SEED_NAME}"

    failing_names: set[str] = set()
    for item in failing:
        short = item.rsplit(".", 1)[-1] if item.startswith("model.") else item
        if short not in model_uid or (item != short and item != model_uid[short]):
            raise ValueError(f"unknown model in failing: {item!r}")
        failing_names.add(short)

    # Layered DAG.
    layer_size = max(1, math.isqrt(models))
    layers = [names[i : i + layer_size] for i in range(0, models, layer_size)]
    model_parents: dict[str, list[str]] = {}
    materialized: dict[str, str] = {}
    for depth, layer in enumerate(layers):
        earlier = [n for lay in layers[:depth] for n in lay]
        for n in layer:
            if depth == 0:
                model_parents[n] = [_SEED_NAME]
            else:
                first = rng.choice(layers[depth - 1])
                others = [m for m in earlier if m != first]
                k = rng.randint(1, min(fanout, len(others) + 1))
                model_parents[n] = [first, *sorted(rng.sample(others, k - 1))]
            materialized[n] = "table" if rng.random() < _TABLE_PROBABILITY else "view"

    # Files.
    path = Path(path).resolve()
    (path / "models").mkdir(parents=True, exist_ok=True)
    (path / "seeds").mkdir(parents=True, exist_ok=True)
    (path / "dbt_project.yml").write_text(
        f"name: {name}\n"
        'version: "1.0.0"\n'
        f"profile: {name}\n"
        "flags:\n"
        "  send_anonymous_usage_stats: false\n"
        'model-paths: ["models"]\n'
        'seed-paths: ["seeds"]\n'
        'target-path: "target"\n'
    )
    duckdb_path = path / f"{name}.duckdb"
    (path / "profiles.yml").write_text(
        f"{name}:\n"
        "  target: dev\n"
        "  outputs:\n"
        "    dev:\n"
        "      type: duckdb\n"
        f"      path: {_yaml_str(str(duckdb_path))}\n"
        f"      threads: {threads}\n"
    )
    rows = "".join(f"{i},{(i * 7919 + seed) % 1000}\n" for i in range(1, _SEED_ROWS + 1))
    (path / "seeds" / f"{_SEED_NAME}.csv").write_text("id,value\n" + rows)

    schema_lines = ["models:"]
    tests: list[str] = []
    parents: dict[str, tuple[str, ...]] = {seed_uid: ()}
    for n in names:
        ups = model_parents[n]
        sql = _model_sql(ups, broken=n in failing_names, seed_ref=ups == [_SEED_NAME])
        config = f"{{{{ config(materialized='{materialized[n]}') }}}}\n"
        (path / "models" / f"{n}.sql").write_text(config + sql)
        parents[model_uid[n]] = tuple(sorted(seed_uid if u == _SEED_NAME else model_uid[u] for u in ups))
        kinds = _TEST_KINDS[:tests_per_model]
        if not kinds:
            continue
        schema_lines.append(f"  - name: {n}")
        schema_lines.append("    columns:")
        for column in ("id", "value"):
            col_tests = [t for t, c in kinds if c == column]
            if col_tests:
                schema_lines.append(f"      - name: {column}")
                schema_lines.append(f"        data_tests: [{', '.join(col_tests)}]")
        for test, column in kinds:
            uid = generic_test_unique_id(name, test, n, column)
            tests.append(uid)
            parents[uid] = (model_uid[n],)
    if tests:
        (path / "models" / "schema.yml").write_text("\n".join(schema_lines) + "\n")
    else:
        (path / "models" / "schema.yml").unlink(missing_ok=True)

    failing_uids = frozenset(model_uid[n] for n in failing_names)
    project = GeneratedProject(
        path=path,
        name=name,
        seed=seed_uid,
        models=tuple(model_uid[n] for n in names),
        tests=tuple(tests),
        parents=MappingProxyType(parents),
        materializations=MappingProxyType({model_uid[n]: materialized[n] for n in names}),
        failing=failing_uids,
        threads=threads,
    )
    skipped: set[str] = set()
    for uid in failing_uids:
        skipped |= project.descendants(uid)
    return replace(project, skipped=frozenset(skipped))


#: The shop example as the package ships it (the demo's copy; a test keeps it identical to examples/shop).
SHOP_PROJECT = Path(__file__).resolve().parent.parent / "_demo_project"


def copy_shop(dest: Path) -> Path:
    """Copy the shop example project into ``dest`` (without build output) and return ``dest``."""
    shutil.copytree(
        SHOP_PROJECT, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*")
    )
    return dest
