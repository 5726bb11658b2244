"""What every Azure ML target ships beside its code: the snapshot folders that the steps' code paths name.

snapshot/                 a single job: the compatibility launcher and the job section it reads
snapshot/<step>/          a pipeline: one folder per step; a parallel step's folder is a copy of its source
"""

from __future__ import annotations

from pathlib import Path

from azbai.errors import TargetError
from azbai.fsutil import code_files
from azbai.plan.model import ParallelStep, Plan, Step
from azbai.plan.serialize import job_to_json

#: the launcher's and the job section's file names inside a step's snapshot
LAUNCHER_FILE = "azbai_launcher.py"
JOB_FILE = "azbai_job.json"
LAUNCHER_SOURCE = Path(__file__).resolve().parents[1] / "launcher.py"

_MAX_SNAPSHOT = 50 * 1024 * 1024


def is_multi_step(plan: Plan) -> bool:
    """Whether the plan is a pipeline (several steps, parameters, a parallel step) rather than one migrated job."""
    return len(plan.steps) > 1 or bool(plan.parameters) or len(plan.job_steps) != len(plan.steps)


def snapshot_dir(plan: Plan, step: Step | ParallelStep) -> str:
    """The step's folder: ``snapshot`` for a single job, ``snapshot/<step>`` in a pipeline."""
    return f"snapshot/{step.name}" if is_multi_step(plan) else "snapshot"


def launcher_source() -> str:
    """The compatibility launcher's source, copied into every job step's snapshot."""
    try:
        return LAUNCHER_SOURCE.read_text(encoding="utf-8")
    except OSError as exc:
        raise TargetError(f"the compatibility launcher is missing from the azbai package: {exc}") from exc


def snapshot_files(plan: Plan, base_dir: Path | None = None) -> dict[str, str | bytes]:
    """Every snapshot file by its path in the migration; ``base_dir`` is where parallel steps' sources start."""
    launcher = launcher_source()
    files: dict[str, str | bytes] = {}
    for step in plan.steps:
        folder = snapshot_dir(plan, step)
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
    try:
        for path, rel in code_files(source):
            total += path.stat().st_size
            if total > _MAX_SNAPSHOT:
                raise TargetError(
                    f"{source} holds more than {_MAX_SNAPSHOT // 2**20} MB: keep data out of a step's code"
                )
            files[f"{folder}/{rel}"] = path.read_bytes()
    except OSError as exc:
        raise TargetError(f"cannot read the parallel step's source directory {source}: {exc}") from exc
    return files
