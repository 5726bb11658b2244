"""The generated SDK v1 code as a reviewer reads it: clean under the project's ruff configuration, its Estimator
the same run as its ScriptRunConfig, and the job's own image left with its own Python."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import azbai
from azbai.plan.model import Plan
from azbai.targets.azureml_v1 import build_objects
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
    "tensorflow-4-workers": (
        {"tensorFlowSettings": {"pythonScriptFilePath": SCRIPT, "workerCount": 4, "parameterServerCount": 2}},
        2,
        None,
    ),
    "pytorch-4-on-2": ({"pyTorchSettings": {"pythonScriptFilePath": SCRIPT, "processCount": 4}}, 2, None),
    "pytorch-3-on-2": ({"pyTorchSettings": {"pythonScriptFilePath": SCRIPT, "processCount": 3}}, 2, None),
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


def own_image_pipeline(folder: Path) -> Path:
    """The test pipeline file, its consume step in an image of the user's own (produce keeps Azure ML's)."""
    shutil.copytree(DATA / "pipeline", folder, ignore=shutil.ignore_patterns("__pycache__"))
    job = json.loads((folder / "consume.job.json").read_text())
    job["properties"]["containerSettings"] = {"imageSourceRegistry": {"image": "myorg/tools:1"}}
    (folder / "consume.job.json").write_text(json.dumps(job))
    return folder / "pipeline.json"


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
        (own_image_pipeline(tmp_path / "own-image"), tmp_path / "own-image", {}),
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
    assert len(files) >= len(RECIPES) + len(JOBS) + 5
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


def started(run_config: Any) -> int:
    """How many processes Azure ML starts for a run configuration."""
    communicator = run_config.communicator
    if communicator in ("IntelMpi", "OpenMpi", "Mpi"):
        return int(run_config.node_count * run_config.mpi.process_count_per_node)
    if communicator == "ParameterServer":
        return int(run_config.tensorflow.worker_count + run_config.tensorflow.parameter_server_count)
    if communicator in ("Gloo", "Nccl"):  # the Estimator's: one process per node
        return int(run_config.node_count)
    if run_config.pytorch is not None and run_config.pytorch.process_count:  # PyTorchConfiguration
        return int(run_config.pytorch.process_count)
    return 1


def built(plan: Plan, folder: Path) -> tuple[Any, Any, dict[str, Any]]:
    objects = build_objects(plan, directory=folder, with_estimator=True)
    return objects["script_run_config"].run_config, objects["estimator"].run_config, objects


@pytest.mark.parametrize(
    "source",
    [*(str(p.relative_to(CORPUS)) for p in RECIPES), *JOBS],
    ids=lambda s: s.removeprefix("recipes/"),
)
def test_the_estimator_starts_the_processes_the_script_run_config_starts(source: str, tmp_path: Path) -> None:
    path = write_job(tmp_path, source) if source in JOBS else CORPUS / source
    plan = azbai.load(path)
    launch = plan.steps[0].job.launch
    src, est, _ = built(plan, tmp_path / "built")
    assert src.node_count == est.node_count == launch.node_count
    assert started(est) == started(src) >= launch.process_count


def test_pytorch_with_two_processes_a_node_starts_four_from_the_estimator_too(tmp_path: Path) -> None:
    src, est, objects = built(azbai.load(write_job(tmp_path, "pytorch-4-on-2")), tmp_path / "built")
    assert (src.communicator, src.pytorch.process_count, src.node_count) == ("gloo", 4, 2)
    # the Estimator's Gloo() would start one process a node: ranks 2 and 3 would never start
    assert (est.communicator, est.mpi.process_count_per_node, est.node_count) == ("Mpi", 2, 2)
    assert "--ranks" in est.arguments  # each rank is read from MPI, PyTorch still uses the job's backend
    assert objects["module"].legacy_distribution().__class__.__name__ == "Mpi"


def test_uneven_pytorch_processes_start_as_many_on_every_node(tmp_path: Path) -> None:
    """3 processes on 2 nodes: Azure ML starts 2 a node, as the v2 job asks; the launcher runs ranks 0-2 only."""
    src, est, _ = built(azbai.load(write_job(tmp_path, "pytorch-3-on-2")), tmp_path / "built")
    assert (src.pytorch.process_count, src.node_count) == (4, 2)
    assert (est.mpi.process_count_per_node, est.node_count) == (2, 2)


def test_a_private_registry_reaches_the_estimator_without_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_job(tmp_path, "private-registry")
    code = render_files(azbai.load(path))["pipeline.py"]
    assert "not-in-generated-code" not in str(code)
    monkeypatch.setenv("AZBAI_REGISTRY_PASSWORD", "from-the-environment")
    src, est, _ = built(azbai.load(path), tmp_path / "built")
    for run_config in (src, est):
        registry = run_config.environment.docker.base_image_registry
        assert (registry.address, registry.username) == ("myreg.azurecr.io", "u")
        assert registry.password == "from-the-environment"
    assert est.environment.docker.base_image == "myreg.azurecr.io/img:1"


@pytest.mark.parametrize(
    ("source", "options"),
    [("private-registry", {}), ("recipes/Horovod/Horovod-PyTorch/job.json", {"keep_image": True})],
    ids=["custom-image", "keep-image"],
)
def test_the_jobs_own_image_runs_with_its_own_python(
    source: str, options: dict[str, Any], tmp_path: Path
) -> None:
    path = write_job(tmp_path, source) if source in JOBS else CORPUS / source
    plan = azbai.load(path, **options)
    code = str(render_files(plan)["pipeline.py"])
    assert "CondaDependencies" not in code and "pip_packages" not in code
    src, est, _ = built(plan, tmp_path / "built")
    for run_config in (src, est):
        assert run_config.environment.docker.base_image == plan.container.image
        assert run_config.environment.python.user_managed_dependencies is True


@pytest.mark.parametrize(
    ("image", "own"),
    [
        ("mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04:latest", False),
        ("mcr.microsoft.com/azureml/curated/acpt-pytorch-2.2-cuda12.1:10", True),
        ("myreg.azurecr.io/img:1", True),
        ("pytorch/pytorch:0.4_cuda9_cudnn7", True),
    ],
)
def test_the_own_image_rule_both_targets_use(image: str, own: bool) -> None:
    """One rule (``Container.own_image``) decides v1's user-managed Python and v2's missing conda file."""
    from azbai.plan.model import Container

    assert Container(image).own_image is own


def test_an_azureml_image_gets_its_conda_environment(tmp_path: Path) -> None:
    """A retired image azbai replaced by Azure ML's: Azure ML builds the pip packages on it, as before."""
    plan = azbai.load(CORPUS / "recipes/Horovod/Horovod-PyTorch/job.json")
    assert plan.container.source_image is not None
    src, est, _ = built(plan, tmp_path / "built")
    for run_config in (src, est):
        assert run_config.environment.python.user_managed_dependencies is False
        assert "torch" in run_config.environment.python.conda_dependencies.serialize_to_string()


def test_a_pipeline_step_in_its_own_image_runs_with_its_own_python(tmp_path: Path) -> None:
    path = own_image_pipeline(tmp_path / "pipeline")
    objects = build_objects(azbai.load(path), directory=tmp_path / "built", base_dir=path.parent)
    own, azureml = objects["module"].environment("consume"), objects["module"].environment("produce")
    assert own.docker.base_image == "myorg/tools:1" and own.python.user_managed_dependencies is True
    assert azureml.python.user_managed_dependencies is False
