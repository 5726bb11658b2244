"""The MNIST recipe's unchanged job.json as an Azure ML v1 pipeline, built offline by its generated pipeline.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "cntk-mnist"


def migrate(tmp_path: Path, *flags: str) -> dict:  # type: ignore[type-arg]
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "azbai", "migrate", str(RECIPE / "job.json"), "-o", str(out), *flags],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    dry = subprocess.run(
        [sys.executable, str(out / "pipeline.py"), "--dry-run", "--json"], capture_output=True, text=True
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    return json.loads(dry.stdout)


def test_the_quickstart_as_an_azure_ml_pipeline(tmp_path: Path) -> None:
    summary = migrate(tmp_path, "--storage-account-name", "mystorage")
    refs = summary["run_references"]
    assert {n: (r["mode"], r["datastore"]) for n, r in refs.items()} == {
        "logs": ("mount", "logs_share"),
        "scripts": ("mount", "scripts_share"),
        "data": ("mount", "data_blob"),
        "output_model": ("upload", "logs_share"),
    }
    assert refs["output_model"]["path_on_datastore"] == f"{summary['run_segment']}/outputs"
    assert refs["output_model"]["path_on_compute"] == "azbai/outputs/MODEL"
    assert {
        d["name"]: (d["type"], d["account_name"], d["container_name"]) for d in summary["datastores"]
    } == {
        "logs_share": ("AzureFileDatastore", "mystorage", "logs"),
        "scripts_share": ("AzureFileDatastore", "mystorage", "scripts"),
        "data_blob": ("AzureBlobDatastore", "mystorage", "data"),
    }
    (step,) = summary["pipeline"]
    assert step["arguments"][:2] == ["--job", "azbai_job.json"]
    assert {"logs", "scripts", "data"} <= set(step["inputs"]) and step["outputs"] == ["output_model"]
    assert all(port["mode"] == "mount" for port in step["inputs"].values())
    assert (
        summary["compute"]["type"] == "AmlCompute" and summary["compute"]["vm_size"] == "STANDARD_NC4AS_T4_V3"
    )
    assert (
        summary["environment"]["image"].startswith("mcr.microsoft.com/azureml/")
        and "torch" in summary["environment"]["pip_packages"]
    )
    # the step runs the unchanged command line through the launcher
    job = json.loads((tmp_path / "out/snapshot/azbai_job.json").read_text())
    (group,) = job["launch"]["groups"]
    assert group["command"] == (
        "python $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/cntk/ConvNet_MNIST.py "
        "$AZ_BATCHAI_JOB_MOUNT_ROOT/data/mnist_cntk $AZ_BATCHAI_OUTPUT_MODEL"
    )
    assert (group["stdout"], group["stderr"]) == ("stdout.txt", "stderr.txt")
    report = (tmp_path / "out/MIGRATION.md").read_text()
    assert "STANDARD_NC6" in report and "retired" in report and "--vm-size" in report
    assert "end of support on 2026-06-30" in report


def test_choosing_the_vm_size(tmp_path: Path) -> None:
    summary = migrate(tmp_path, "--vm-size", "STANDARD_NC24ADS_A100_V4")
    assert summary["compute"]["vm_size"] == "STANDARD_NC24ADS_A100_V4"
