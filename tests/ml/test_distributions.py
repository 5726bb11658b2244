"""The launcher's one-rank-per-process mode (``--ranks external``) end to end under each distribution Azure ML has:
a Batch AI job on 2 nodes × 2 processes, migrated to ``v2/job.yml`` and run by ``azbai ml job create``, which
starts 4 processes with Azure ML's variables; each rank must run exactly once, on its node, with its identity.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import azbai
from azbai.local.azurite import DEV_ACCOUNT
from azbai.local.stores import open_store
from azbai.local.workspace import Workspace
from tests.conftest import DATA
from tests.ml.conftest import register, run_v2

pytestmark = pytest.mark.azurite
SCRIPT = DATA / "jobs" / "report.py"
MOUNTS = {
    "azureFileShares": [
        {"azureFileUrl": "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/logs", "relativeMountPath": "logs"},
        {"azureFileUrl": "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/scripts", "relativeMountPath": "scripts"},
    ]
}  # fmt: skip
SCRIPT_PATH = "$AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/report.py"
TOOLKITS = {
    "mpi": {"customMpiSettings": {"commandLine": f"python {SCRIPT_PATH} mpi", "processCount": 4}},
    "pytorch": {"pyTorchSettings": {"pythonScriptFilePath": SCRIPT_PATH, "commandLineArgs": "torch", "processCount": 4}},
    "tensorflow": {
        "tensorFlowSettings": {
            "pythonScriptFilePath": SCRIPT_PATH, "parameterServerCount": 2, "workerCount": 2,
            "masterCommandLineArgs": "wk", "workerCommandLineArgs": "wk", "parameterServerCommandLineArgs": "ps",
        }
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def workspace(ml_workspace: Workspace) -> Iterator[Workspace]:
    open_store(ml_workspace, DEV_ACCOUNT, share="scripts").upload_file(SCRIPT, "report.py")
    yield ml_workspace


def reports(workspace: Workspace, run: Any) -> dict[str, list[dict[str, Any]]]:
    """Every stdout file of the run's stdouterr directory, as the report.py lines in it."""
    shares = workspace.root / "shares" / DEV_ACCOUNT / "logs"
    found = {}
    for path in shares.rglob(f"*/{run.name}/stdouterr/stdout*.txt"):
        if "job_prep" not in path.name:
            found[path.name] = [
                json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")
            ]
    return found


@pytest.mark.parametrize("toolkit", sorted(TOOLKITS))
def test_two_instances_of_two_processes_run_each_rank_once(
    workspace: Workspace, tmp_path: Path, toolkit: str
) -> None:
    job = tmp_path / f"{toolkit}.json"
    properties = {
        "nodeCount": 2,
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        "mountVolumes": MOUNTS,
    }
    job.write_text(json.dumps({"properties": {**properties, **TOOLKITS[toolkit]}}))
    azbai.migrate(job, tmp_path / "out", target="v2", name=f"dist-{toolkit}")
    v2 = tmp_path / "out/v2"
    from azbai.ml.loaders import load_job

    loaded = load_job(v2 / "job.yml")
    assert loaded.resources.instance_count == 2
    assert loaded.distribution.type == toolkit
    assert "--ranks external" in loaded.command
    register(workspace, v2)
    run = run_v2(workspace, v2 / "job.yml", sets={"resources.instance_count": "2"})
    assert run.processes == 4
    assert sorted(p.name for p in run.logs_dir.iterdir()) == [f"std_log_process_{i}.txt" for i in range(4)]
    found = reports(workspace, run)
    if toolkit == "mpi":
        assert list(found) == ["stdout.txt"]
        ranks = [r["env"]["OMPI_COMM_WORLD_RANK"] for r in found["stdout.txt"]]
        assert sorted(ranks) == ["0", "1", "2", "3"]
        nodes = {
            r["env"]["OMPI_COMM_WORLD_RANK"]: r["env"]["AZ_BATCHAI_JOB_TEMP"].rsplit("/", 1)[1]
            for r in found["stdout.txt"]
        }
        assert nodes == {"0": "node-0", "1": "node-0", "2": "node-1", "3": "node-1"}
    elif toolkit == "pytorch":
        assert sorted(found) == [f"stdout-{i}.txt" for i in range(4)]
        for i in range(4):
            (report,) = found[f"stdout-{i}.txt"]
            assert report["env"]["AZ_BATCHAI_TASK_INDEX"] == report["env"]["RANK"] == str(i)
            assert report["env"]["AZ_BATCHAI_JOB_TEMP"].endswith(f"node-{i // 2}")
            assert report["env"]["AZ_BATCHAI_PYTORCH_INIT_METHOD"].startswith("tcp://127.0.0.1:")
    else:
        assert sorted(found) == ["stdout-ps-0.txt", "stdout-ps-1.txt", "stdout-wk-0.txt", "stdout-wk-1.txt"]
        for name, (report,) in found.items():
            role, index = name[len("stdout-") : -len(".txt")].split("-")
            task = json.loads(report["env"]["TF_CONFIG"])["task"]
            assert (task["type"], str(task["index"])) == ({"wk": "worker"}.get(role, role), index)
            assert report["argv"] == [role]
            assert report["env"]["AZ_BATCHAI_TASK_INDEX"] == index
            assert len(report["env"]["AZ_BATCHAI_PS_HOSTS"].split(",")) == 2
