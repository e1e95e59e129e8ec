"""Where a dbt node's relation lives, in OpenLineage's words: a dataset ``(namespace, name)``.

The naming is not dbtbus's to invent: lineage tools join what dbtbus emits with what ``dbt-ol``, Airflow's
OpenLineage provider and the warehouses' own integrations emit only when every one names a table alike. So
both halves come from ``openlineage-integration-common``, the code ``dbt-ol`` runs:

* the **namespace** from the profile's output (``duckdb://<path>``, ``postgres://host:port``,
  ``snowflake://<account>``, ``bigquery``, …): ``DbtArtifactProcessor.extract_namespace``;
* the **name** from the manifest node (``database.schema.alias``; a source's ``database.schema.name``):
  ``DbtArtifactProcessor.extract_dataset_data``.

dbtbus adds only what dbt-ol has no answer for: which nodes *have* a relation (an ephemeral model, a test or
a hook has none, so no dataset is named for it), and, through an ephemeral model, the relations it reads.

A profile's output holds credentials. They are read to name the namespace (host and port, an account) and
never kept anywhere an event could carry them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ..events import RunStarted
from ._errors import LineageUnavailable

if TYPE_CHECKING:  # openlineage is imported on first use: `import dbtbus` must stay light
    from openlineage.common.provider.dbt.processor import (
        DbtArtifactProcessor,
        ModelNode,
    )

__all__ = [
    "DatasetName",
    "DatasetNaming",
    "dataset_name",
    "dataset_namespace",
    "load_manifest",
    "load_profile_output",
    "naming_from_run",
]

#: Resource types whose node is a relation in the warehouse (an ephemeral model aside).
_RELATION_TYPES: Final = frozenset({"model", "seed", "snapshot", "source"})
_INSTALL_HINT: Final = "install dbtbus[lineage] (openlineage-python and openlineage-integration-common)"


@dataclass(frozen=True, slots=True)
class DatasetName:
    """An OpenLineage dataset's identity: ``namespace`` (where: the warehouse) and ``name`` (what: the table)."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def _processor_class() -> type[DbtArtifactProcessor]:
    """dbt-ol's artifact processor, made concrete: dbtbus uses its naming and facet builders, never its reading
    of ``run_results.json`` (the bus is the run's record), so the two artifact hooks it leaves abstract are
    answered here with nothing."""
    global _PROCESSOR
    if _PROCESSOR is not None:
        return _PROCESSOR
    try:
        from openlineage.common.provider.dbt.processor import DbtArtifactProcessor
    except ImportError as exc:
        raise LineageUnavailable(f"OpenLineage is not installed ({exc}): {_INSTALL_HINT}") from None

    class NamingProcessor(DbtArtifactProcessor):
        def get_dbt_metadata(self) -> Any:
            raise NotImplementedError("dbtbus reads a run from its bus, not from dbt's artifacts")

        def dbt_run_run_facet(self) -> dict[str, Any]:
            return {}

    _PROCESSOR = NamingProcessor
    return _PROCESSOR


_PROCESSOR: type[DbtArtifactProcessor] | None = None


def _model_node(
    kind: str, metadata_node: Mapping[str, Any], catalog_node: Mapping[str, Any] | None = None
) -> ModelNode:
    from openlineage.common.provider.dbt.processor import ModelNode

    catalog = dict(catalog_node) if catalog_node is not None else None
    return ModelNode(type=kind, metadata_node=dict(metadata_node), catalog_node=catalog)


def _processor_for(profile_output: Mapping[str, Any]) -> DbtArtifactProcessor:
    """dbt-ol's processor, told the adapter and namespace of ``profile_output`` (nothing else of it is kept)."""
    from .._version import __version__

    processor = _processor_class()(producer=_producer_uri(__version__), job_namespace="")
    try:
        processor.extract_adapter_type(dict(profile_output))
        processor.extract_dataset_namespace(dict(profile_output))
    except NotImplementedError as exc:
        raise LineageUnavailable(str(exc)) from None
    except KeyError as exc:
        adapter = profile_output.get("type")
        raise LineageUnavailable(f"the {adapter!r} profile output lacks {exc}, which its namespace needs") from None
    return processor


def _producer_uri(version: str) -> str:
    return f"https://pypi.org/project/dbtbus/{version}/"


def dataset_namespace(profile_output: Mapping[str, Any]) -> str:
    """The OpenLineage namespace of the warehouse a dbt profile output (``outputs.<target>`` of
    ``profiles.yml``, ``type`` included) connects to, exactly as ``dbt-ol`` names it.

    :raises LineageUnavailable: an adapter dbt-ol does not support, a field its namespace needs is missing,
        or OpenLineage is not installed.
    """
    return str(_processor_for(profile_output).dataset_namespace)


def dataset_name(manifest_node: Mapping[str, Any], profile_output: Mapping[str, Any]) -> DatasetName:
    """The OpenLineage dataset of one manifest node's relation (a model, seed, snapshot or source as it
    stands in ``manifest.json``'s ``nodes`` or ``sources``), exactly as ``dbt-ol`` names it.

    For many nodes, build one :class:`DatasetNaming` instead: it reads the profile once.
    """
    return _name_of(_processor_for(profile_output), manifest_node)


def _name_of(processor: DbtArtifactProcessor, node: Mapping[str, Any]) -> DatasetName:
    kind = "source" if node.get("resource_type") == "source" else "model"
    try:
        namespace, name, _facets, _input_facets = processor.extract_dataset_data(_model_node(kind, node), None)
    except KeyError as exc:
        raise LineageUnavailable(f"manifest node {node.get('unique_id')!r} lacks {exc}") from None
    return DatasetName(namespace, name)


def load_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``manifest.json`` as a mapping.

    :raises LineageUnavailable: the file is missing or is not a dbt manifest.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as exc:
        raise LineageUnavailable(f"cannot read the dbt manifest {os.fspath(path)!r}: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("nodes"), dict):
        raise LineageUnavailable(f"{os.fspath(path)!r} is not a dbt manifest (no 'nodes')")
    return manifest


def load_profile_output(
    profiles_dir: str | os.PathLike[str], profile: str, target: str | None = None
) -> dict[str, Any]:
    """The ``outputs.<target>`` of ``profile`` in ``<profiles_dir>/profiles.yml`` (``target``: the profile's
    default), its ``{{ env_var(...) }}`` rendered as dbt-ol renders them.

    :raises LineageUnavailable: no such file, profile or target, or OpenLineage is not installed.
    """
    _processor_class()
    # dbt-ol's own reading of profiles.yml: the same jinja environment (env_var, as_number), so a path or a host
    # built from environment variables names the namespace as dbt-ol would.
    import yaml  # type: ignore[import-untyped]  # comes with openlineage-integration-common, no stubs
    from openlineage.common.provider.dbt.local import (
        DbtLocalArtifactProcessor,
        LazyJinjaLoadDict,
    )

    path = Path(profiles_dir).expanduser() / "profiles.yml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise LineageUnavailable(f"cannot read {str(path)!r}: {exc}") from None
    profiles = LazyJinjaLoadDict(raw or {}, jinja_env=DbtLocalArtifactProcessor.setup_jinja())  # type: ignore[no-untyped-call]
    entry = profiles.get(profile)  # type: ignore[no-untyped-call]
    if not isinstance(entry, Mapping):
        raise LineageUnavailable(f"{str(path)!r} has no profile {profile!r}")
    chosen = target or entry.get("target")
    outputs = entry.get("outputs") or {}
    output = outputs.get(chosen) if isinstance(outputs, Mapping) else None
    if not isinstance(output, Mapping):
        raise LineageUnavailable(f"profile {profile!r} in {str(path)!r} has no output (target) {chosen!r}")
    return {key: output[key] for key in output}  # rendered, as a plain dict


class DatasetNaming:
    """The datasets of one dbt project on one target: its manifest's nodes, named in the profile's namespace.

    ``catalog`` (``catalog.json``, optional) gives the schema facet warehouse types, as it does for dbt-ol.
    """

    def __init__(
        self,
        manifest: Mapping[str, Any],
        profile_output: Mapping[str, Any],
        *,
        catalog: Mapping[str, Any] | None = None,
    ) -> None:
        self.processor = _processor_for(profile_output)
        self.processor.manifest = dict(manifest)
        self.manifest = manifest
        self.catalog = catalog
        self._nodes: Mapping[str, Any] = manifest.get("nodes") or {}
        self._sources: Mapping[str, Any] = manifest.get("sources") or {}

    @classmethod
    def from_project(
        cls,
        project_dir: str | os.PathLike[str],
        *,
        profiles_dir: str | os.PathLike[str] | None = None,
        profile: str | None = None,
        target: str | None = None,
        manifest_path: str | os.PathLike[str] | None = None,
        manifest: Mapping[str, Any] | None = None,
    ) -> DatasetNaming:
        """The naming of a dbt project as dbt-ol finds it: ``dbt_project.yml``'s profile (or ``profile``),
        ``profiles.yml`` in ``profiles_dir`` (default: ``$DBT_PROFILES_DIR``, else the project, else
        ``~/.dbt``), ``target/manifest.json`` (or ``manifest_path``, or an already read ``manifest``), and
        ``catalog.json`` beside the manifest file if any."""
        where = _profile_location(project_dir, profiles_dir=profiles_dir, profile=profile, target=target)
        if manifest is None:
            target_path = os.environ.get("DBT_TARGET_PATH") or where.target_path
            manifest_file = (Path(manifest_path) if manifest_path is not None
                             else Path(project_dir) / target_path / "manifest.json")
            manifest = load_manifest(manifest_file)
            catalog_file = manifest_file.with_name("catalog.json")
            catalog = _read_catalog(catalog_file) if catalog_file.exists() else None
        else:
            catalog = None
        return cls(manifest, load_profile_output(where.profiles_dir, where.profile, where.target), catalog=catalog)

    @classmethod
    def from_dbt_args(
        cls, dbt_args: Sequence[str], *, manifest: Mapping[str, Any] | None = None
    ) -> DatasetNaming:
        """The naming of the project dbt would build with these command-line arguments (``["build",
        "--project-dir", ...]``): ``--project-dir``, ``--profiles-dir``, ``--profile``, ``--target`` (the last
        of each wins, as for dbt), else dbt's ``DBT_PROJECT_DIR`` / ``DBT_PROFILES_DIR`` / ``DBT_PROFILE`` /
        ``DBT_TARGET``, else its defaults (the working directory; see :meth:`from_project`). ``manifest``: the
        project's manifest when it is already read (default: the project's ``target/manifest.json``).

        :raises LineageUnavailable: the project, profile or manifest cannot be read, the profile names an
            adapter dbt-ol does not support, or OpenLineage is not installed.
        """
        flags = dbt_flags(dbt_args)
        return cls.from_project(flags.project_dir, profiles_dir=flags.profiles_dir, profile=flags.profile,
                                target=flags.target, manifest=manifest)

    @property
    def namespace(self) -> str:
        """Where every dataset of the project lives (the warehouse)."""
        return str(self.processor.dataset_namespace)

    @property
    def adapter_type(self) -> str:
        """The profile's adapter (``duckdb``, ``postgres``, …), which is also the SQL dialect."""
        return str(self.processor.extract_dialect())

    def manifest_node(self, unique_id: str) -> Mapping[str, Any] | None:
        node = self._nodes.get(unique_id)
        if node is None:
            node = self._sources.get(unique_id)
        return node if isinstance(node, Mapping) else None

    def has_relation(self, unique_id: str) -> bool:
        """The node is a table or view in the warehouse: a model (not ephemeral), seed, snapshot or source."""
        node = self.manifest_node(unique_id)
        if node is None or node.get("resource_type") not in _RELATION_TYPES:
            return False
        return (node.get("config") or {}).get("materialized") != "ephemeral"

    def dataset(self, unique_id: str) -> DatasetName | None:
        """The dataset of a node's relation, or ``None`` for a node without one (a test, an ephemeral model, a
        hook, a node the manifest lacks)."""
        node = self.manifest_node(unique_id)
        if node is None or not self.has_relation(unique_id):
            return None
        return _name_of(self.processor, node)

    def model_node(self, unique_id: str) -> ModelNode | None:
        """dbt-ol's view of a node with a relation (its manifest and catalog entries), for its facet builders."""
        node = self.manifest_node(unique_id)
        if node is None or not self.has_relation(unique_id):
            return None
        is_source = node.get("resource_type") == "source"
        catalog = (self.catalog or {}).get("sources" if is_source else "nodes") or {}
        return _model_node("source" if is_source else "model", node, catalog.get(unique_id))

    def parents(self, unique_id: str) -> list[str]:
        """What a node reads: its ``depends_on.nodes`` that are relations, an ephemeral model replaced by what
        *it* reads (dbt inlines it as a CTE, so the warehouse reads the ephemeral model's parents)."""
        out: list[str] = []
        seen: set[str] = set()
        stack = list(reversed(self._depends_on(unique_id)))
        while stack:
            parent = stack.pop()
            if parent in seen:
                continue
            seen.add(parent)
            if self.has_relation(parent):
                out.append(parent)
            elif (self.manifest_node(parent) or {}).get("resource_type") == "model":  # ephemeral
                stack.extend(reversed(self._depends_on(parent)))
        return out

    def inputs(self, unique_id: str) -> list[DatasetName]:
        """The datasets a node reads (see :meth:`parents`)."""
        return [name for parent in self.parents(unique_id) if (name := self.dataset(parent)) is not None]

    def _depends_on(self, unique_id: str) -> list[str]:
        node = self.manifest_node(unique_id) or {}
        nodes = (node.get("depends_on") or {}).get("nodes") or []
        return [uid for uid in nodes if isinstance(uid, str)]


def naming_from_run(
    started: RunStarted,
    *,
    project_dir: str | os.PathLike[str] | None = None,
    profiles_dir: str | os.PathLike[str] | None = None,
    target: str | None = None,
    manifest_path: str | os.PathLike[str] | None = None,
) -> DatasetNaming:
    """The naming of the project a run built, found where dbt's own arguments of the run say
    (``RunStarted.dbt_args``: ``project_dir``, ``profiles_dir``, ``target``, ``target_path``), each overridden
    by the argument of the same name — so a consumer on the producer's machine needs none of them.

    :raises LineageUnavailable: the run does not say where its project is (a log replay) and no
        ``project_dir`` is given, or the project, profile or manifest cannot be read.
    """
    args = started.dbt_args
    project = project_dir or args.get("project_dir")
    if not project:
        raise LineageUnavailable(
            f"run {started.run_id!r} does not say where its dbt project is (dbt's arguments were not recorded): "
            "give its project directory"
        )
    manifest = manifest_path
    if manifest is None and isinstance(args.get("target_path"), str):
        manifest = Path(project) / args["target_path"] / "manifest.json"
    return DatasetNaming.from_project(
        project,
        profiles_dir=profiles_dir or args.get("profiles_dir") or None,
        target=target or args.get("target") or None,
        manifest_path=manifest,
    )


def _read_catalog(path: Path) -> dict[str, Any] | None:
    """A dbt artifact other than the manifest (``catalog.json``), or ``None`` when it cannot be read: it only
    enriches the schema facet."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True, slots=True)
class DbtFlags:
    """What dbt's command-line arguments (or dbt's environment variables) say of where the project is."""

    project_dir: str
    profiles_dir: str | None
    profile: str | None
    target: str | None


def _flag(args: Sequence[str], name: str) -> str | None:
    """The value of ``--name value`` / ``--name=value`` in dbt's arguments (the last one wins, as for dbt)."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def dbt_flags(dbt_args: Sequence[str]) -> DbtFlags:
    """Where dbt's arguments say the project, profiles, profile and target are (flags, then dbt's variables)."""
    return DbtFlags(
        project_dir=_flag(dbt_args, "--project-dir") or os.environ.get("DBT_PROJECT_DIR") or ".",
        profiles_dir=_flag(dbt_args, "--profiles-dir") or None,
        profile=_flag(dbt_args, "--profile") or os.environ.get("DBT_PROFILE") or None,
        target=_flag(dbt_args, "--target") or os.environ.get("DBT_TARGET") or None,
    )


@dataclass(frozen=True, slots=True)
class ProfileLocation:
    """Where dbt finds a project's profile: ``<profiles_dir>/profiles.yml``, ``profile``, ``target``
    (``None``: the profile's default), and the project's ``target-path``."""

    profiles_dir: str
    profile: str
    target: str | None
    target_path: str

    @property
    def path(self) -> Path:
        return Path(self.profiles_dir).expanduser() / "profiles.yml"


def _profile_location(
    project_dir: str | os.PathLike[str],
    *,
    profiles_dir: str | os.PathLike[str] | None = None,
    profile: str | None = None,
    target: str | None = None,
) -> ProfileLocation:
    """dbt's profile discovery, once: ``profile`` or ``dbt_project.yml``'s; ``profiles_dir`` or
    ``$DBT_PROFILES_DIR``, else the project's ``profiles.yml``, else ``~/.dbt``."""
    import yaml  # type: ignore[import-untyped,unused-ignore]  # comes with dbt and OpenLineage, no stubs

    project = Path(project_dir)
    try:
        spec = yaml.safe_load((project / "dbt_project.yml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise LineageUnavailable(f"cannot read the dbt project in {str(project)!r}: {exc}") from None
    if not isinstance(spec, Mapping):
        raise LineageUnavailable(f"{str(project / 'dbt_project.yml')!r} is not a dbt project file")
    profile_name = profile or spec.get("profile")
    if not profile_name:
        raise LineageUnavailable(f"{str(project / 'dbt_project.yml')!r} names no profile: pass --profile")
    if profiles_dir is None:
        from_env = os.environ.get("DBT_PROFILES_DIR")
        profiles_dir = from_env or (project if (project / "profiles.yml").exists() else Path("~/.dbt").expanduser())
    return ProfileLocation(os.fspath(profiles_dir), str(profile_name), target, str(spec.get("target-path") or "target"))
