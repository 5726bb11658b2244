"""The Azure ML SDK v1 target: the plan as real ``azureml`` objects and as readable generated code.

:func:`azbai.targets.azureml_v1.files.render_files` writes ``pipeline.py``; :func:`build_objects` imports that
same code and calls its ``build``, so a notebook, a test or another pipeline gets the very objects the script would
submit. ``azureml`` is imported only here, lazily, never by ``azbai migrate``.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from azbai.plan.model import Plan


def write_pipeline(plan: Plan, directory: str | Path, base_dir: str | Path | None = None) -> Path:
    """Write ``pipeline.py`` and its ``snapshot/`` for ``plan`` into ``directory``; returns the pipeline.py path.

    ``base_dir`` is where a pipeline file's relative paths (parallel steps' source directories) start.
    """
    from azbai.fsutil import write_tree
    from azbai.targets.azureml_v1.files import render_files

    rendered = render_files(plan, Path(base_dir) if base_dir else None)
    files = {k: v for k, v in rendered.items() if k == "pipeline.py" or k.startswith("snapshot/")}
    write_tree(Path(directory), files)
    return Path(directory) / "pipeline.py"


def load_pipeline_module(path: str | Path) -> ModuleType:
    """Import a generated ``pipeline.py`` as a module (under a unique name, so several can coexist)."""
    name = f"azbai_generated_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_objects(
    plan: Plan,
    *,
    workspace: Any = None,
    account_name: str | None = None,
    account_key: str | None = None,
    with_estimator: bool = False,
    directory: str | Path | None = None,
    base_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The plan's Azure ML objects: datastores, data references, compute, environment, ScriptRunConfig, pipeline.

    With no ``workspace`` everything is built offline (nothing contacts Azure) and the pipeline graph is finalised,
    so its steps can be inspected. ``directory`` keeps the generated code (default: a temporary directory).
    """
    target = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="azbai-pipeline-"))
    module = load_pipeline_module(write_pipeline(plan, target, base_dir))
    dry_run = workspace is None
    if dry_run:
        from azbai.targets.azureml_v1 import offline

        workspace = offline.workspace()
    objects: dict[str, Any] = module.build(
        workspace,
        account_name or module.ACCOUNT_PLACEHOLDER,
        account_key,
        dry_run=dry_run,
        with_estimator=with_estimator,
    )
    if dry_run:
        offline.finalize(objects["pipeline"])
    objects["module"] = module
    return objects
