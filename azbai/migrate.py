"""``azbai migrate`` and ``azbai validate``: read a job, plan it, write what a user needs to run it on Azure ML.

Output directory::

    plan.json            the neutral plan (no secrets)
    pipeline.py          Azure ML SDK v1 code: --dry-run builds it offline, --submit submits it
    migrate.ipynb        the same, step by step, as a notebook
    MIGRATION.md         each Batch AI field and what it became in SDK v1 and v2, and what Azure ML does differently
    v2/                  Azure ML SDK v2 / CLI v2: job.yml or pipeline.yml, datastores, computes, submit.py
    snapshot/            the pipeline step's source directory
      azbai_launcher.py  the compatibility launcher (stdlib only)
      azbai_job.json     the job section of the plan, which the launcher reads

Everything is generated in memory first and written only when the job had no errors. This module never imports
azureml: writing code does not need the SDK (``pipeline.py --dry-run`` does).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from azbai.errors import AzbaiError
from azbai.plan.build import DEFAULT_EXPERIMENT, PlanOptions, build_plan
from azbai.plan.model import DataMode, Plan
from azbai.plan.serialize import job_to_json, plan_to_json
from azbai.plan.storage import ExtraMount
from azbai.source.diagnostics import Diagnostic, Severity
from azbai.source.placeholders import StorageAccount
from azbai.source.reader import LoadedCluster, LoadedJob, load_cluster, load_job
from azbai.targets.azureml_v1.codegen import JOB_FILE, LAUNCHER_FILE, render_pipeline
from azbai.targets.notebook import render_notebook
from azbai.targets.report import render_report

LAUNCHER_SOURCE = Path(__file__).with_name("launcher.py")


@dataclass(frozen=True)
class Loaded:
    """A job and optional cluster that read without errors, with every warning labelled by its file."""

    job: LoadedJob
    cluster: LoadedCluster | None
    diagnostics: tuple[tuple[str, Diagnostic], ...]


@dataclass(frozen=True)
class MigrationResult:
    """What ``migrate`` produced."""

    plan: Plan
    output_dir: Path
    files: tuple[Path, ...]
    diagnostics: tuple[tuple[str, Diagnostic], ...]


def load(
    job_file: str | Path,
    cluster_file: str | Path | None = None,
    merge_files: Sequence[str | Path] = (),
    *,
    storage_account_name: str | None = None,
    storage_account_key: str | None = None,
) -> Loaded:
    """Read a job (and cluster) file; :class:`~azbai.errors.SpecError` when either has errors."""
    storage = StorageAccount.resolve(storage_account_name, storage_account_key)
    job = load_job(job_file, storage=storage, merge=merge_files)
    cluster = load_cluster(cluster_file, storage=storage) if cluster_file else None
    diagnostics = [(str(job_file), d) for d in job.diagnostics]
    if cluster is not None:
        diagnostics += [(str(cluster_file), d) for d in cluster.diagnostics]
    return Loaded(job, cluster, tuple(diagnostics))


@dataclass(frozen=True)
class ValidationReport:
    """Every diagnostic of a job (and cluster) file, errors included."""

    diagnostics: tuple[tuple[str, Diagnostic], ...]


def validate_files(
    job_file: str | Path,
    cluster_file: str | Path | None = None,
    merge_files: Sequence[str | Path] = (),
    mounts: Sequence[str] = (),
    **storage: str | None,
) -> ValidationReport:
    """Check a job file (and cluster file) without writing anything."""
    from azbai.errors import SpecError

    found: list[tuple[str, Diagnostic]] = []
    loaded = None
    try:
        loaded = load(job_file, None, merge_files, **storage)
        found += loaded.diagnostics
    except SpecError as exc:
        found += [(str(job_file), d) for d in exc.diagnostics]
    cluster = None
    if cluster_file:
        try:
            cluster = load_cluster(cluster_file)
            found += [(str(cluster_file), d) for d in cluster.diagnostics]
        except SpecError as exc:
            found += [(str(cluster_file), d) for d in exc.diagnostics]
    if loaded is not None and (cluster is not None or not cluster_file):
        # what the job needs that no file describes (cluster mounts, NFS): the plan knows
        plan = build_plan(loaded.job, cluster, PlanOptions(mounts=tuple(ExtraMount.parse(m) for m in mounts)))
        for note in plan.notes:
            if note.severity.value == "warning" and "does not describe" in note.message:
                found.append(
                    (
                        str(job_file),
                        Diagnostic(note.field, "undescribed-mount", note.message, Severity.WARNING),
                    )
                )
    return ValidationReport(tuple(found))


def plan_files(
    job_file: str | Path,
    *,
    cluster_file: str | Path | None = None,
    merge_files: Sequence[str | Path] = (),
    name: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    mounts: Sequence[str] = (),
    vm_size: str | None = None,
    max_nodes: int | None = None,
    image: str | None = None,
    keep_image: bool = False,
    input_mode: str = "mount",
    output_mode: str = "upload",
    storage_account_name: str | None = None,
    storage_account_key: str | None = None,
) -> tuple[Plan, Loaded]:
    """Read the files and build the plan (nothing is written)."""
    loaded = load(
        job_file,
        cluster_file,
        merge_files,
        storage_account_name=storage_account_name,
        storage_account_key=storage_account_key,
    )
    options = PlanOptions(
        name=name,
        experiment=experiment,
        vm_size=vm_size,
        image=image,
        keep_image=keep_image,
        input_mode=DataMode(input_mode),
        output_mode=DataMode(output_mode),
        mounts=tuple(ExtraMount.parse(m) for m in mounts),
        max_nodes=max_nodes,
    )
    return build_plan(loaded.job, loaded.cluster, options), loaded


def plan_pipeline_file(
    pipeline_file: str | Path,
    *,
    experiment: str | None = None,
    storage_account_name: str | None = None,
    storage_account_key: str | None = None,
) -> tuple[Plan, tuple[tuple[str, Diagnostic], ...]]:
    """Read a pipeline file (and the job files it names) into a plan."""
    from azbai.plan.pipeline import build_pipeline_plan
    from azbai.source.pipeline_spec import load_pipeline_spec

    storage = StorageAccount.resolve(storage_account_name, storage_account_key)
    return build_pipeline_plan(load_pipeline_spec(pipeline_file), storage=storage, experiment=experiment)


TARGETS = ("v1", "v2", "all")


def render_files(plan: Plan, base_dir: Path | None = None, target: str = "all") -> dict[str, str | bytes]:
    """Every output file of a migration, by relative path (text, or bytes for copied source files).

    A multi-step plan gets one snapshot per step: the launcher and its job for a job step, a copy of the source
    directory (relative to ``base_dir``, where the pipeline file is) for a parallel step. ``target`` chooses the
    SDK v1 files, the ``v2/`` folder, or both (``plan.json`` and ``MIGRATION.md`` always).
    """
    if target not in TARGETS:
        raise AzbaiError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    if target == "v2":
        from azbai.targets import azureml_v2

        return {
            "plan.json": plan_to_json(plan),
            "MIGRATION.md": render_report(plan),
            **azureml_v2.render_files(plan, base_dir),
        }
    files = _render_v1(plan, base_dir)
    if target == "all":
        from azbai.targets import azureml_v2

        files.update(azureml_v2.render_files(plan, base_dir))
    return files


def _render_v1(plan: Plan, base_dir: Path | None) -> dict[str, str | bytes]:
    from azbai.plan.model import ParallelStep
    from azbai.targets.azureml_v1.codegen import is_multi_step
    from azbai.targets.azureml_v1.codegen_pipeline import snapshot_dir

    try:
        launcher = LAUNCHER_SOURCE.read_text(encoding="utf-8")
    except OSError as exc:
        raise AzbaiError(f"the compatibility launcher is missing from the azbai package: {exc}") from exc
    files: dict[str, str | bytes] = {
        "plan.json": plan_to_json(plan),
        "pipeline.py": render_pipeline(plan),
        "migrate.ipynb": render_notebook(plan),
        "MIGRATION.md": render_report(plan),
    }
    if not is_multi_step(plan):
        files[f"snapshot/{LAUNCHER_FILE}"] = launcher
        files[f"snapshot/{JOB_FILE}"] = job_to_json(plan.job_steps[0].job)
        return files
    for step in plan.steps:
        folder = snapshot_dir(step)
        if isinstance(step, ParallelStep):
            files.update(_copy_source(Path(base_dir or ".") / step.source_directory, folder))
        else:
            files[f"{folder}/{LAUNCHER_FILE}"] = launcher
            files[f"{folder}/{JOB_FILE}"] = job_to_json(step.job)
    return files


#: what a parallel step's snapshot leaves out of its source directory
_SKIPPED = ("__pycache__", ".ipynb_checkpoints", ".azbai", ".git")
_MAX_SNAPSHOT = 50 * 1024 * 1024


def _copy_source(source: Path, folder: str) -> dict[str, str | bytes]:
    if not source.is_dir():
        raise AzbaiError(f"the parallel step's source directory {source} does not exist")
    files: dict[str, str | bytes] = {}
    total = 0
    for path in sorted(source.rglob("*")):
        if not path.is_file() or any(part in _SKIPPED for part in path.relative_to(source).parts):
            continue
        total += path.stat().st_size
        if total > _MAX_SNAPSHOT:
            raise AzbaiError(
                f"{source} holds more than {_MAX_SNAPSHOT // 2**20} MB: keep data out of a step's code"
            )
        files[f"{folder}/{path.relative_to(source).as_posix()}"] = path.read_bytes()
    return files


def migrate_file(
    job_file: str | Path, output_dir: str | Path | None = None, **kwargs: object
) -> MigrationResult:
    """Read, plan and write a migration (of a job file or an azbai pipeline file); returns what was written."""
    from azbai.source.pipeline_spec import is_pipeline_file

    sdk = str(kwargs.pop("target", None) or "all")
    if is_pipeline_file(job_file):
        unsupported = {k for k, v in kwargs.items() if v not in (None, (), False, "mount", "upload")} - {
            "experiment", "storage_account_name", "storage_account_key",
        }  # fmt: skip
        if unsupported:
            raise AzbaiError(
                f"{', '.join(sorted(unsupported))}: not for pipeline files (set them in each step's job)"
            )
        experiment = kwargs.get("experiment")
        plan, diagnostics = plan_pipeline_file(
            job_file,
            experiment=None if experiment == DEFAULT_EXPERIMENT else experiment,  # type: ignore[arg-type]
            storage_account_name=kwargs.get("storage_account_name"),  # type: ignore[arg-type]
            storage_account_key=kwargs.get("storage_account_key"),  # type: ignore[arg-type]
        )
        files = render_files(plan, Path(job_file).parent, sdk)
    else:
        plan, loaded = plan_files(job_file, **kwargs)  # type: ignore[arg-type]
        diagnostics = loaded.diagnostics
        files = render_files(plan, target=sdk)
    target = Path(output_dir) if output_dir else Path("migrated") / plan.name
    written = write_tree(target, files)
    return MigrationResult(plan, target, written, diagnostics)


def write_tree(root: Path, files: dict[str, str] | dict[str, str | bytes]) -> tuple[Path, ...]:
    """Write ``files`` under ``root``, each atomically (temporary file, then rename)."""
    written = []
    try:
        for relative, text in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(handle, "wb") as stream:
                    stream.write(text.encode("utf-8") if isinstance(text, str) else text)
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            written.append(path)
    except OSError as exc:
        raise AzbaiError(f"cannot write {root}: {exc.strerror or exc}") from exc
    return tuple(written)
