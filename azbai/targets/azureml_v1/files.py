"""Every file of the Azure ML SDK v1 migration of a plan, rendered in memory (nothing is written here).

pipeline.py          Azure ML SDK v1 code: --dry-run builds it offline, --submit submits it
migrate.ipynb        the same, step by step, as a notebook
snapshot/            the step's source directory (``azbai.targets.snapshot``)
"""

from __future__ import annotations

from pathlib import Path

from azbai.plan.model import Plan
from azbai.targets.azureml_v1.codegen import render_job_pipeline
from azbai.targets.azureml_v1.codegen_pipeline import render_pipeline_plan
from azbai.targets.azureml_v1.notebook import render_notebook
from azbai.targets.pyformat import format_python
from azbai.targets.snapshot import is_multi_step, snapshot_files


def render_pipeline(plan: Plan) -> str:
    """The source of ``pipeline.py`` for ``plan``, formatted."""
    source = render_pipeline_plan(plan) if is_multi_step(plan) else render_job_pipeline(plan)
    return format_python(source, name="pipeline.py")


def render_files(plan: Plan, base_dir: Path | None = None) -> dict[str, str | bytes]:
    """The v1 files by their path in the migration; ``base_dir`` is where parallel steps' sources start."""
    return {
        "pipeline.py": render_pipeline(plan),
        "migrate.ipynb": render_notebook(plan),
        **snapshot_files(plan, base_dir),
    }
