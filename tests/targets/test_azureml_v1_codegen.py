"""The generated SDK v1 code as a reviewer reads it: clean under the project's own ruff configuration."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

import azbai
from azbai.targets.azureml_v1.files import render_files
from tests.conftest import CORPUS, DATA, ROOT

RECIPES = sorted((CORPUS / "recipes").rglob("*.json"))
STYLE = ROOT / "recipes/style-transfer/pipeline.json"
MOUNTS = {
    "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/afs",
    "mountVolumes": {
        "azureFileShares": [
            {"azureFileUrl": "https://acct.file.core.windows.net/share", "relativeMountPath": "afs"}
        ]
    },
}
SCRIPT = "$AZ_BATCHAI_JOB_MOUNT_ROOT/afs/train.py"
#: toolkits no recipe of the corpus uses, and the image cases: (toolkit settings, node count, container settings)
JOBS: dict[str, tuple[dict[str, Any], int, dict[str, Any] | None]] = {
    "caffe": ({"caffeSettings": {"configFilePath": "$AZ_BATCHAI_JOB_MOUNT_ROOT/afs/solver.txt"}}, 2, None),
    "custom-mpi": ({"customMpiSettings": {"commandLine": "python a.py", "processCount": 4}}, 2, None),
    "custom-toolkit": ({"customToolkitSettings": {"commandLine": "echo hello"}}, 1, None),
    "pytorch-4-on-2": ({"pyTorchSettings": {"pythonScriptFilePath": SCRIPT, "processCount": 4}}, 2, None),
    "private-registry": (
        {"horovodSettings": {"pythonScriptFilePath": SCRIPT, "processCount": 8}},
        2,
        {
            "imageSourceRegistry": {
                "image": "myreg.azurecr.io/img:1",
                "serverUrl": "myreg.azurecr.io",
                "credentials": {"username": "u", "password": "not-in-generated-code"},
            }
        },
    ),
}


def write_job(folder: Path, name: str) -> Path:
    """A job.json for one of :data:`JOBS`."""
    toolkit, nodes, container = JOBS[name]
    properties = {**MOUNTS, "nodeCount": nodes, **toolkit}
    if container is not None:
        properties["containerSettings"] = container
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"properties": properties}))
    return path


def ruff(*arguments: str) -> subprocess.CompletedProcess[str]:
    from ruff.__main__ import find_ruff_bin

    return subprocess.run(
        [find_ruff_bin(), *arguments, "--config", str(ROOT / "pyproject.toml")],
        capture_output=True,
        text=True,
    )


def generated_python(tmp_path: Path) -> list[Path]:
    """The v1 Python files azbai writes for every recipe, a job of each other toolkit, and the pipeline files."""
    sources = [
        *((path, path.parent, {}) for path in RECIPES),
        *((write_job(tmp_path, name), None, {}) for name in JOBS),
        (CORPUS / "recipes/Horovod/Horovod-PyTorch/job.json", None, {"keep_image": True}),
        (STYLE, STYLE.parent, {}),
        (DATA / "pipeline/parallel.json", DATA / "pipeline", {}),
        (DATA / "pipeline/pipeline.json", DATA / "pipeline", {}),
    ]
    written = []
    for index, (path, base_dir, options) in enumerate(sources):
        folder = tmp_path / f"{index}-{path.stem}"
        for name, text in render_files(azbai.load(path, **options), base_dir).items():
            # the snapshot holds the launcher (azbai's own module) and copies of the user's code, which is theirs
            if name.endswith(".py") and "/" not in name:
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_text(str(text))
                written.append(folder / name)
    return written


def test_generated_code_passes_the_projects_ruff_check_and_format(tmp_path: Path) -> None:
    """No unused or unsorted import, nothing ruff would reformat: the code reads as a person wrote it."""
    files = generated_python(tmp_path)
    assert len(files) >= len(RECIPES) + len(JOBS) + 4
    checked = ruff("check", "--no-cache", "--output-format=concise", *map(str, files))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    formatted = ruff("format", "--no-cache", "--check", *map(str, files))
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


@pytest.mark.parametrize("path", [STYLE, DATA / "pipeline/parallel.json"], ids=lambda p: p.stem)
def test_a_pipeline_imports_what_its_steps_use(path: Path) -> None:
    code = render_files(azbai.load(path), path.parent)["pipeline.py"]
    assert isinstance(code, str)
    header = code[: code.index("\nHERE = ")]
    assert "import uuid" not in header  # a pipeline step's segment uses its run id, no fresh uuid
    assert "from azureml.pipeline.steps import ParallelRunConfig, ParallelRunStep, PythonScriptStep" in header
