"""A hand-written CLI v2 command job: each data mode, literal inputs, environment variables, the code snapshot,
the compute record, and ``az ml job cancel`` keeping what the job wrote."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from azbai.local.azurite import DEV_ACCOUNT
from azbai.local.stores import open_store
from azbai.local.workspace import Workspace
from azbai.ml.registry import Registry
from azbai.ml.runs import RunBook
from azbai.ml.service import cancel_job, create_job
from tests.ml.conftest import run_v2

pytestmark = pytest.mark.azurite

SCRIPT = """\
import json, os, sys
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
listing = lambda p: sorted(os.listdir(p))
report = {
    "args": args,
    "folder": listing(args["--folder"]),
    "file": open(args["--file"]).read(),
    "share": listing(args["--share"]),
    "env": os.environ.get("GREETING"),
    "run": os.environ["AZUREML_RUN_ID"],
    "cwd_has_code": os.path.exists("train.py"),
}
open(os.path.join(args["--model"], "model.txt"), "w").write("trained")
open(os.path.join(args["--mirror"], "new.txt"), "w").write("new")
os.remove(os.path.join(args["--mirror"], "old.txt"))
print(json.dumps(report), flush=True)
if os.environ.get("SLEEP"):
    import time; time.sleep(60)
"""


def job_file(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src/train.py").write_text(SCRIPT)
    (tmp_path / "datastores").mkdir()
    (tmp_path / "datastores/blob.yml").write_text(
        "type: azure_blob\nname: blob_store\naccount_name: <AZURE_BATCHAI_STORAGE_ACCOUNT>\ncontainer_name: cmd\n"
    )
    (tmp_path / "datastores/share.yml").write_text(
        "type: azure_file\nname: share_store\naccount_name: devstoreaccount1\nfile_share_name: cmdshare\n"
    )
    (tmp_path / "compute.yml").write_text(
        "type: amlcompute\nname: cpu\nsize: STANDARD_D2_V3\nmin_instances: 0\nmax_instances: 3\n"
    )
    job = tmp_path / "job.yml"
    job.write_text(
        """\
type: command
code: ./src
command: >-
  python train.py --folder ${{inputs.folder}} --file ${{inputs.file}} --share ${{inputs.share}}
  --url ${{inputs.url}} --epochs ${{inputs.epochs}} --model ${{outputs.model}} --mirror ${{outputs.mirror}}
environment: {image: python:3.11}
compute: azureml:cpu
environment_variables: {GREETING: hello}
inputs:
  folder: {type: uri_folder, path: azureml://datastores/blob_store/paths/data, mode: ro_mount}
  file: {type: uri_file, path: azureml://datastores/blob_store/paths/data/a.txt, mode: download}
  share: {type: uri_folder, path: azureml://datastores/share_store/paths/in}
  url: {type: uri_folder, path: azureml://datastores/blob_store/paths/data, mode: direct}
  epochs: 3
outputs:
  model: {type: uri_folder, path: "azureml://datastores/blob_store/paths/models/${{name}}", mode: upload}
  mirror: {type: uri_folder, path: azureml://datastores/blob_store/paths/mirror, mode: rw_mount}
"""
    )
    return job


def setup(workspace: Workspace, folder: Path) -> None:
    registry = Registry(workspace)
    for file in (folder / "datastores").glob("*.yml"):
        registry.create_datastore(file)
    compute = registry.create_compute(folder / "compute.yml")
    assert (compute.size, compute.min_instances, compute.max_instances) == ("STANDARD_D2_V3", 0, 3)
    blob = open_store(workspace, DEV_ACCOUNT, container="cmd")
    blob.write_bytes("data/a.txt", b"alpha")
    blob.write_bytes("data/b.txt", b"beta")
    blob.write_bytes("mirror/old.txt", b"old")
    open_store(workspace, DEV_ACCOUNT, share="cmdshare").write_bytes("in/s.txt", b"s")


def test_every_data_mode_and_literal_reaches_the_command(ml_workspace: Workspace, tmp_path: Path) -> None:
    job = job_file(tmp_path)
    setup(ml_workspace, tmp_path)
    run = run_v2(ml_workspace, job, sets={"inputs.epochs": "5"})
    report = json.loads((run.logs_dir / "std_log.txt").read_text().splitlines()[0])
    assert (
        report["folder"] == ["a.txt", "b.txt"] and report["file"] == "alpha" and report["share"] == ["s.txt"]
    )
    assert report["args"]["--epochs"] == "5"  # --set inputs.epochs=5 over the file's 3
    assert report["args"]["--url"].startswith("http://127.0.0.1:") and report["args"]["--url"].endswith(
        "/cmd/data"
    )
    assert report["args"]["--share"].endswith(
        "/shares/devstoreaccount1/cmdshare/in"
    )  # a share is mounted in place
    assert (report["env"], report["run"], report["cwd_has_code"]) == ("hello", run.name, True)
    blob = open_store(ml_workspace, DEV_ACCOUNT, container="cmd")
    assert blob.read_bytes(f"models/{run.name}/model.txt") == b"trained"
    assert sorted(e.path for e in blob.list("mirror/")) == [
        "mirror/new.txt"
    ]  # written back, deletion included


def test_cancel_stops_the_job_and_keeps_its_outputs(ml_workspace: Workspace, tmp_path: Path) -> None:
    job = job_file(tmp_path)
    setup(ml_workspace, tmp_path)
    record = create_job(ml_workspace, job, sets={"environment_variables.SLEEP": "1"}, name="to-cancel")
    deadline = time.monotonic() + 60
    log = RunBook(ml_workspace).get("to-cancel").logs_dir / "std_log.txt"
    while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cancel_job(ml_workspace, record.name).status == "Canceled"
    blob = open_store(ml_workspace, DEV_ACCOUNT, container="cmd")
    assert blob.read_bytes(f"models/{record.name}/model.txt") == b"trained"  # uploaded after the cancel


def test_a_job_secret_comes_from_the_caller_s_environment_and_is_written_nowhere(
    ml_workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import azbai

    secret = "a-secret-only-the-process-sees"
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"properties": {
        "nodeCount": 1,
        "customToolkitSettings": {"commandLine": "python $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/report.py"},
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        "secrets": [{"name": "DB_PASSWORD", "value": secret}],
        "mountVolumes": {"azureFileShares": [
            {"azureFileUrl": "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/logs", "relativeMountPath": "logs"},
            {"azureFileUrl": "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/scripts", "relativeMountPath": "scripts"},
        ]},
    }}))  # fmt: skip
    open_store(ml_workspace, DEV_ACCOUNT, share="scripts").upload_file(
        Path(__file__).resolve().parents[1] / "data/jobs/report.py", "report.py"
    )
    azbai.migrate(job, tmp_path / "out", target="v2", name="with-secret")
    from tests.ml.conftest import register

    register(ml_workspace, tmp_path / "out/v2")
    monkeypatch.setenv("DB_PASSWORD", secret)
    run = run_v2(ml_workspace, tmp_path / "out/v2/job.yml")
    # the launcher (--echo) copies the script's stdout and stderr through two pipes, so std_log.txt has both lines
    # but in no promised order: once they are two streams, which was written first is not known to the reader
    lines = (run.logs_dir / "std_log.txt").read_text().splitlines()
    assert "a line on stderr" in lines
    report = json.loads(next(line for line in lines if line.startswith("{")))
    assert report["secret_length"] == len(secret)
    for path in [*run.path.rglob("*"), *(ml_workspace.root / "shares").rglob("*")]:
        if path.is_file() and not path.is_symlink():
            assert secret.encode() not in path.read_bytes(), path
