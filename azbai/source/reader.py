"""Read Batch AI ``job.json`` and ``cluster.json`` files into the typed model, strictly but as tolerantly as the CLI.

    >>> job = load_job("job.json", storage=StorageAccount.resolve("mystorage"))
    >>> job.config.properties.toolkit_key
    'cntkSettings'

Every problem is collected before anything fails; :class:`~azbai.errors.SpecError` carries all of them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from azbai.errors import AzbaiError, SpecError
from azbai.source.checks import check_job, check_mount_volumes, check_setup_task
from azbai.source.decode import JOB_SCHEMA_KINDS, UNPARSEABLE, Decoded, decode_json, unwrap
from azbai.source.diagnostics import Collector, Diagnostic
from azbai.source.model import ClusterConfig, ClusterProperties, JobConfig, JobProperties
from azbai.source.placeholders import StorageAccount, substitute
from azbai.source.walker import Walker


@dataclass(frozen=True)
class LoadedJob:
    """A job file that read without errors: the model, the warnings, and where each model object came from."""

    source: str
    config: JobConfig
    diagnostics: tuple[Diagnostic, ...]
    walker: Walker

    @property
    def properties(self) -> JobProperties:
        """The job's properties."""
        return self.config.properties

    def path_of(self, instance: object) -> str:
        """The JSON path a model object came from."""
        return self.walker.path_of(instance)


@dataclass(frozen=True)
class LoadedCluster:
    """A cluster file that read without errors."""

    source: str
    config: ClusterConfig
    diagnostics: tuple[Diagnostic, ...]
    walker: Walker

    @property
    def properties(self) -> ClusterProperties:
        """The cluster's properties."""
        return self.config.properties


def read_text(path: str | Path) -> str:
    """Read a config file as UTF-8, translating OS errors into azbai's."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise AzbaiError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            str(path),
            [Diagnostic("", "invalid-encoding", f"not UTF-8 text (byte {exc.start} cannot be decoded)")],
        ) from exc


def load_job(
    path: str | Path,
    *,
    storage: StorageAccount | None = None,
    merge: Sequence[str | Path] = (),
    text: str | None = None,
) -> LoadedJob:
    """Read and check a job file; raise :class:`SpecError` (with every diagnostic) when it has errors.

    ``merge`` lists fragments (``{"properties": {...}}``) deep-merged over the job in order, as the Batch AI docs'
    "add this to your job.json" snippets intend. ``text`` replaces the file's content (the name still labels it).
    """
    collector = Collector()
    value = decode_json(read_text(path) if text is None else text, collector)
    decoded = unwrap(value, collector, what="job") if value is not UNPARSEABLE else None
    for fragment in merge:
        decoded = _merge(decoded, fragment, collector)
    if decoded is None:
        raise SpecError(str(path), collector.items)
    if decoded.schema_kind is not None and decoded.schema_kind not in JOB_SCHEMA_KINDS:
        _wrong_kind(str(path), decoded.schema_kind, collector)
    base = "properties" if decoded.wrapped else ""
    walker = Walker(collector, decoded.schema_version)
    props = walker.build(JobProperties, decoded.properties, base)
    if props is None:
        raise SpecError(str(path), collector.items)
    check_job(props, walker, base, collector)
    if collector.has_errors:
        raise SpecError(str(path), collector.items)
    if props.mount_volumes is not None:
        props = replace(
            props,
            mount_volumes=substitute(props.mount_volumes, storage or StorageAccount(), walker, collector),
        )
    config = JobConfig(props, decoded.schema_url, decoded.schema_version, decoded.wrapped)
    return LoadedJob(str(path), config, collector.items, walker)


def load_cluster(
    path: str | Path, *, storage: StorageAccount | None = None, text: str | None = None
) -> LoadedCluster:
    """Read and check a cluster file; raise :class:`SpecError` when it has errors."""
    collector = Collector()
    value = decode_json(read_text(path) if text is None else text, collector)
    decoded = unwrap(value, collector, what="cluster") if value is not UNPARSEABLE else None
    if decoded is None:
        raise SpecError(str(path), collector.items)
    if decoded.schema_kind is not None and decoded.schema_kind != "cluster":
        collector.error(
            "$schema",
            "wrong-file",
            f"this file declares the '{decoded.schema_kind}' schema; --cluster expects a cluster.json",
        )
    base = "properties" if decoded.wrapped else ""
    walker = Walker(collector, decoded.schema_version)
    props = walker.build(ClusterProperties, decoded.properties, base)
    if props is None:
        raise SpecError(str(path), collector.items)
    node_setup = props.node_setup
    if node_setup is not None and node_setup.mount_volumes is not None:
        check_mount_volumes(node_setup.mount_volumes, walker, collector)
    if node_setup is not None and node_setup.setup_task is not None:
        check_setup_task(node_setup.setup_task, walker, collector)
    scale = props.scale_settings
    if scale is not None:
        if scale.manual is not None and scale.auto_scale is not None:
            collector.error(
                walker.path_of(scale), "conflict", "give either 'manual' or 'autoScale', not both"
            )
        auto = scale.auto_scale
        if auto is not None and auto.minimum_node_count > auto.maximum_node_count:
            collector.error(
                walker.path_of(auto) + ".minimumNodeCount",
                "out-of-range",
                f"minimumNodeCount {auto.minimum_node_count} exceeds maximumNodeCount {auto.maximum_node_count}",
            )
    if collector.has_errors:
        raise SpecError(str(path), collector.items)
    if node_setup is not None and node_setup.mount_volumes is not None:
        volumes = substitute(node_setup.mount_volumes, storage or StorageAccount(), walker, collector)
        props = replace(props, node_setup=replace(node_setup, mount_volumes=volumes))
    config = ClusterConfig(props, decoded.schema_url, decoded.schema_version, decoded.wrapped)
    return LoadedCluster(str(path), config, collector.items, walker)


def _wrong_kind(source: str, kind: str, collector: Collector) -> None:
    if kind == "cluster":
        advice = "pass it with --cluster cluster.json beside a job file"
    elif kind == "nfs":
        advice = "Batch AI file servers have no Azure ML equivalent; use an Azure Files or blob datastore"
    else:
        advice = "expected a job schema (job.json or a toolkit's schema)"
    collector.error("$schema", "wrong-file", f"this file declares the '{kind}' schema: {advice}")


def _merge(decoded: Decoded | None, fragment: str | Path, collector: Collector) -> Decoded | None:
    inner = Collector()
    value = decode_json(read_text(fragment), inner)
    part = unwrap(value, inner, what="fragment") if value is not UNPARSEABLE else None
    for d in inner.items:
        collector.add(replace(d, message=f"in {fragment}: {d.message}"))
    if decoded is None or part is None:
        return None
    merged = _deep_merge(copy.deepcopy(decoded.properties), part.properties)
    return replace(decoded, properties=merged)


def _deep_merge(base: Any, overlay: Any) -> Any:
    if isinstance(base, dict) and isinstance(overlay, dict):
        for key, value in overlay.items():
            if key in ("$comment", "comment"):
                continue
            base[key] = _deep_merge(base[key], value) if key in base else copy.deepcopy(value)
        return base
    return copy.deepcopy(overlay)
