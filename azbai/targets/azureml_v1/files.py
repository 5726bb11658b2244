"""Every file of the Azure ML SDK v1 migration of a plan, rendered in memory (nothing is written here).

plan.json            the neutral plan (no secrets)
pipeline.py          Azure ML SDK v1 code: --dry-run builds it offline, --submit submits it
migrate.ipynb        the same, step by step, as a notebook
MIGRATION.md         each Batch AI field and what it became, and what Azure ML does differently
snapshot/            the pipeline step's source directory (one folder per step for a multi-step plan)
  azbai_launcher.py  the compatibility launcher (stdlib only)
  azbai_job.json     the job section of the plan, which the launcher reads
"""

from __future__ import annotations

from pathlib import Path

from azbai.errors import TargetError
from azbai.plan.model import ParallelStep, Plan
from azbai.plan.serialize import job_to_json, plan_to_json
from azbai.targets.azureml_v1.codegen import JOB_FILE, LAUNCHER_FILE, render_job_pipeline
from azbai.targets.azureml_v1.codegen_pipeline import render_pipeline_plan, snapshot_dir
from azbai.targets.azureml_v1.notebook import render_notebook
from azbai.targets.azureml_v1.report import render_report
from azbai.targets.pyformat import format_python

LAUNCHER_SOURCE = Path(__file__).parents[2] / "launcher.py"

#: what a parallel step's snapshot leaves out of its source directory
_SKIPPED = ("__pycache__", ".ipynb_checkpoints", ".azbai", ".git")
_MAX_SNAPSHOT = 50 * 1024 * 1024


def is_multi_step(plan: Plan) -> bool:
    """Whether the plan is a pipeline of several steps (or has parameters) rather than one migrated job."""
    return len(plan.steps) > 1 or bool(plan.parameters) or len(plan.job_steps) != len(plan.steps)


def render_pipeline(plan: Plan) -> str:
    """The source of ``pipeline.py`` for ``plan``, formatted."""
    source = render_pipeline_plan(plan) if is_multi_step(plan) else render_job_pipeline(plan)
    return format_python(source, name="pipeline.py")


def launcher_source() -> str:
    """The compatibility launcher's source, copied into every job step's snapshot."""
    try:
        return LAUNCHER_SOURCE.read_text(encoding="utf-8")
    except OSError as exc:
        raise TargetError(f"the compatibility launcher is missing from the azbai package: {exc}") from exc


def render_files(plan: Plan, base_dir: Path | None = None) -> dict[str, str | bytes]:
    """Every output file of a v1 migration, by relative path (text, or bytes for copied source files).

    A multi-step plan gets one snapshot per step: the launcher and its job for a job step, a copy of the source
    directory (relative to ``base_dir``, where the pipeline file is) for a parallel step.
    """
    launcher = launcher_source()
    files: dict[str, str | bytes] = {
        "plan.json": plan_to_json(plan),
        "pipeline.py": render_pipeline(plan),
        "migrate.ipynb": render_notebook(plan),
        "MIGRATION.md": render_report(plan),
    }
    multi_step = is_multi_step(plan)
    for step in plan.steps:
        folder = snapshot_dir(step) if multi_step else "snapshot"
        if isinstance(step, ParallelStep):
            files.update(_copy_source(Path(base_dir or ".") / step.source_directory, folder))
        else:
            files[f"{folder}/{LAUNCHER_FILE}"] = launcher
            files[f"{folder}/{JOB_FILE}"] = job_to_json(step.job)
    return files


def _copy_source(source: Path, folder: str) -> dict[str, str | bytes]:
    if not source.is_dir():
        raise TargetError(f"the parallel step's source directory {source} does not exist")
    files: dict[str, str | bytes] = {}
    total = 0
    for path in sorted(source.rglob("*")):
        if not path.is_file() or any(part in _SKIPPED for part in path.relative_to(source).parts):
            continue
        total += path.stat().st_size
        if total > _MAX_SNAPSHOT:
            raise TargetError(
                f"{source} holds more than {_MAX_SNAPSHOT // 2**20} MB: keep data out of a step's code"
            )
        files[f"{folder}/{path.relative_to(source).as_posix()}"] = path.read_bytes()
    return files
