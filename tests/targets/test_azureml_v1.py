"""The plan as real Azure ML SDK v1 objects, built offline from the generated pipeline.py, and inspected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import azbai
from azbai.convert.job import build_plan
from azbai.plan.model import DataMode, Distribution
from azbai.source.reader import load_job
from azbai.targets.azureml_v1 import build_objects, offline
from tests.conftest import CORPUS, corpus_files, corpus_id
from tests.source.test_corpus import FRAGMENTS, INVALID_JSON

RUNNABLE = [p for p in corpus_files("job") if corpus_id(p) not in {*INVALID_JSON, *FRAGMENTS}]
COMMUNICATOR = {
    Distribution.NONE: "None",
    Distribution.MPI: "IntelMpi",
    Distribution.TENSORFLOW: "ParameterServer",
}


@pytest.mark.parametrize("path", RUNNABLE, ids=corpus_id)
def test_every_corpus_job_builds_offline(path: Path, tmp_path: Path) -> None:
    plan = build_plan(load_job(path))
    objects = build_objects(plan, directory=tmp_path)
    summary = offline.summarize(objects)
    launch = plan.steps[0].job.launch

    assert {d["name"] for d in summary["datastores"]} == {d.name for d in plan.datastores}
    assert {n: r["mode"] for n, r in summary["run_references"].items()} == {
        r.name: r.mode.value for r in plan.data_references
    }
    (step,) = summary["pipeline"]
    assert step["node_count"] == launch.node_count
    expected = COMMUNICATOR.get(launch.distribution, "gloo" if launch.backend in (None, "gloo") else "nccl")
    if launch.distribution is Distribution.PYTORCH:
        expected = launch.backend if launch.backend in ("gloo", "nccl") else "gloo"
    assert step["communicator"] == expected
    assert step["image"] == plan.container.image
    assert set(step["inputs"]) == {r.name for r in plan.data_references if r.mode is not DataMode.UPLOAD}
    assert set(step["outputs"]) == {r.name for r in plan.data_references if r.mode is DataMode.UPLOAD}
    assert summary["compute"]["vm_size"] == plan.compute.vm_size
    assert summary["compute"]["max_nodes"] >= launch.node_count


def test_the_cntk_quickstart_in_detail(tmp_path: Path) -> None:
    plan = azbai.load(CORPUS / "recipes/CNTK/CNTK-GPU-Python/job.json", storage_account="mystorage")
    objects = build_objects(plan, directory=tmp_path, account_name="mystorage", with_estimator=True)
    summary = offline.summarize(objects)

    stores = {d["name"]: d for d in summary["datastores"]}
    assert stores["logs_share"] == {
        "name": "logs_share", "type": "AzureFileDatastore", "account_name": "mystorage", "container_name": "logs"
    }  # fmt: skip
    assert stores["data_blob"]["type"] == "AzureBlobDatastore"
    refs = summary["run_references"]
    assert (
        refs["data"]["mode"] == "mount"
        and refs["scripts"]["mode"] == "mount"
        and refs["logs"]["mode"] == "mount"
    )
    model = refs["output_model"]
    assert (
        model["mode"] == "upload" and model["path_on_compute"] == "azbai/outputs/MODEL" and model["overwrite"]
    )
    segment = summary["run_segment"]
    assert model["path_on_datastore"] == f"{segment}/outputs"
    assert segment.startswith(
        f"{offline.SUBSCRIPTION}/{offline.RESOURCE_GROUP}/workspaces/{offline.WORKSPACE}/"
    )
    assert "/experiments/batchai-migration/jobs/cntk-gpu-python/" in segment

    src = summary["script_run_config"]
    assert src["script"] == "azbai_launcher.py"
    assert src["arguments"][:4] == ["--job", "azbai_job.json", "--segment", segment]
    assert src["arguments"][-3:] == ["--data", "output_model", "$AZUREML_DATAREFERENCE_output_model"]
    assert src["node_count"] == 1 and src["communicator"] == "None"
    assert src["data_references"]["output_model"]["mode"] == "upload"

    (step,) = summary["pipeline"]
    assert step["inputs"] == {
        "logs": {"mode": "mount", "path_on_compute": None},
        "scripts": {"mode": "mount", "path_on_compute": None},
        "data": {"mode": "mount", "path_on_compute": None},
    }
    assert step["outputs"] == ["output_model"]
    assert "<input:data>" in step["arguments"] and "{run-id}" in " ".join(step["arguments"])
    assert summary["compute"] == {
        "name": "gpu-cluster", "type": "AmlCompute", "vm_size": "STANDARD_NC4AS_T4_V3",
        "vm_priority": "dedicated", "min_nodes": 0, "max_nodes": 1,
    }  # fmt: skip
    assert summary["environment"]["image"].startswith("mcr.microsoft.com/azureml/")
    assert "torch" in summary["environment"]["pip_packages"]
    assert summary["estimator"]["type"] == "Estimator" and summary["estimator"]["node_count"] == 1
    # the snapshot the step uploads holds the launcher and the job section
    assert (tmp_path / "snapshot" / "azbai_launcher.py").is_file()
    assert json.loads((tmp_path / "snapshot" / "azbai_job.json").read_text())["name"] == "cntk-gpu-python"


def test_distributed_toolkits_map_to_their_sdk_configurations(tmp_path: Path) -> None:
    cases = {
        "recipes/TensorFlow/TensorFlow-GPU-Distributed/job.json": ("ParameterServer", 2),
        "recipes/Horovod/Horovod-Infiniband-Benchmark/job.json": ("IntelMpi", 2),
        "recipes/PyTorch/PyTorch-GPU-Distributed-Gloo/job.json": ("gloo", 2),
        "recipes/CNTK/CNTK-GPU-Python-Distributed-Infiniband/job.json": ("IntelMpi", 2),
    }
    for index, (name, (communicator, nodes)) in enumerate(cases.items()):
        plan = build_plan(load_job(CORPUS / name))
        summary = offline.summarize(build_objects(plan, directory=tmp_path / str(index), with_estimator=True))
        assert summary["script_run_config"]["communicator"] == communicator
        assert summary["script_run_config"]["node_count"] == nodes
        assert "--ranks" in summary["pipeline"][0]["arguments"]
        if name.startswith("recipes/Horovod"):  # processCount 8 on 2 nodes
            assert summary["script_run_config"]["process_count_per_node"] == 4
        assert summary["estimator"]["communicator"] in ("Mpi", "ParameterServer", "Gloo")


def test_pipeline_py_dry_run_is_a_real_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "azbai", "migrate", str(CORPUS / "recipes/TensorFlow/TensorFlow-GPU/job.json"),
         "-o", str(tmp_path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "wrote" in result.stdout
    dry = subprocess.run(
        [sys.executable, str(tmp_path / "pipeline.py"), "--dry-run", "--json"], capture_output=True, text=True
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    summary = json.loads(dry.stdout)
    assert summary["pipeline"][0]["name"] == "tensorflow-gpu"
    assert summary["estimator"]["entry_script"] == "azbai_launcher.py"
    text = subprocess.run(
        [sys.executable, str(tmp_path / "pipeline.py"), "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Built offline" in text and "Pipeline step 'tensorflow-gpu'" in text


def test_item6_a_user_variable_and_a_literal_brace_in_path_prefix_in_generated_code(tmp_path: Path) -> None:
    # issue 11 item 6: Batch AI expanded the job's variables in pathPrefix; {segment} of the user's stays literal
    job = {
        "properties": {
            "nodeCount": 1,
            "customToolkitSettings": {"commandLine": "echo"},
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            "environmentVariables": [{"name": "RUN_GROUP", "value": "exp1"}],
            "mountVolumes": {
                "azureBlobFileSystems": [
                    {"accountName": "acct", "containerName": "logs", "relativeMountPath": "logs"}
                ]
            },
            "outputDirectories": [
                {"id": "OUT", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs/$RUN_GROUP"},
                {"id": "ODD", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs/{segment}"},
            ],
        }
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    code = azbai.migrate(path, tmp_path / "out").output_dir.joinpath("pipeline.py").read_text()
    assert 'path_on_datastore=f"exp1/{segment}/outputs"' in code
    assert 'path_on_datastore=f"{{segment}}/{segment}/outputs"' in code
    assert "$RUN_GROUP" not in code
    objects = build_objects(azbai.load(path), directory=tmp_path / "built")
    paths = {n: r["path_on_datastore"] for n, r in offline.summarize(objects)["run_references"].items()}
    assert paths["output_out"].startswith("exp1/") and paths["output_odd"].startswith("{segment}/")
