"""Local jobs on the embedded default, end to end: real Azurite, real launcher, real processes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from azbai.errors import JobError, JobFailed
from azbai.local.azurite import DEV_ACCOUNT, Emulator
from azbai.local.jobs import JobBook
from azbai.local.service import delete_job, list_files, stream_file, terminate_job, wait_job
from azbai.local.stores import open_store
from azbai.local.workspace import Workspace
from tests.conftest import CORPUS, DATA
from tests.local.conftest import run_job

pytestmark = pytest.mark.azurite
SCRIPT = DATA / "jobs" / "report.py"
STUB = DATA / "jobs" / "stub.sh"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path_factory.mktemp("jobs-ws"))
    emulator = Emulator(workspace)
    emulator.ensure()
    share = open_store(workspace, DEV_ACCOUNT, share="scripts")
    share.upload_file(SCRIPT, "report.py")
    try:
        yield workspace
    finally:
        emulator.stop()


def job_file(tmp_path: Path, name: str = "job.json", **properties: Any) -> Path:
    base: dict[str, Any] = {
        "nodeCount": 1,
        "customToolkitSettings": {"commandLine": "python $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/report.py first second"},
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        "mountVolumes": {
            "azureFileShares": [
                {"azureFileUrl": "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/logs", "relativeMountPath": "logs"},
                {"azureFileUrl": "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/scripts", "relativeMountPath": "scripts"},
            ],
            "azureBlobFileSystems": [
                {"accountName": "<AZURE_BATCHAI_STORAGE_ACCOUNT>", "containerName": "data", "relativeMountPath": "data"}
            ],
        },
    }  # fmt: skip
    base.update(properties)
    path = tmp_path / name
    path.write_text(json.dumps({"properties": base}))
    return path


def stdout_report(record: Any, name: str = "stdout.txt") -> dict[str, Any]:
    text = b"".join(stream_file(record, name, follow=False)).decode()
    return json.loads(text.splitlines()[0])


def test_a_job_sees_the_batch_ai_environment(workspace: Workspace, tmp_path: Path, blob_mount: str) -> None:
    data = open_store(workspace, DEV_ACCOUNT, container="data")
    data.write_bytes("inputs/train.csv", b"1,2,3\n")
    path = job_file(
        tmp_path,
        jobPreparation={
            "commandLine": "echo preparing on $(hostname) > $AZ_BATCHAI_JOB_TEMP/prep.txt; echo prepared"
        },
        environmentVariables=[{"name": "MODE", "value": "report"}],
        secrets=[{"name": "DB_PASSWORD", "value": "a-secret-only-the-process-sees"}],
        inputDirectories=[{"id": "DATA", "path": "$AZ_BATCHAI_JOB_MOUNT_ROOT/data/inputs"}],
        outputDirectories=[
            {"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs", "pathSuffix": "Models"},
            {"id": "SCRATCH", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/data/scratch"},
        ],
    )
    record = run_job(workspace, path, name=f"env-{blob_mount}", wait=True)
    assert (record.state, record.exit_code) == ("succeeded", 0)
    report = stdout_report(record)
    env = report["env"]
    assert report["argv"] == ["first", "second"]
    assert env["MODE"] == "report" and report["secret_length"] == len("a-secret-only-the-process-sees")
    assert env["AZ_BATCHAI_INPUT_DATA"].endswith("/data/inputs")
    assert report["inputs"]["AZ_BATCHAI_INPUT_DATA"] == ["train.csv"]
    segment = record.segment
    assert re.fullmatch(
        r"[0-9-]+/local/workspaces/local/experiments/batchai-migration/jobs/env-(fuse|mirror)/[0-9a-f-]{36}",
        segment,
    )
    assert env["AZ_BATCHAI_STDOUTERR_DIR"].endswith(f"/logs/{segment}/stdouterr")
    for name in (
        "AZ_BATCHAI_JOB_TEMP",
        "AZ_BATCHAI_SHARED_JOB_TEMP",
        "AZ_BATCHAI_MPI_HOST_FILE",
        "AZ_BATCHAI_NUM_GPUS",
    ):
        assert name in env
    # stdout/stderr with Batch AI's names, job preparation first
    names = sorted(f.name for f in list_files(record))
    assert "stdout.txt" in names and "stderr.txt" in names
    assert any(re.fullmatch(r"stdout-job_prep-node-0-\d{8}t\d{6}z\.txt", n) for n in names)
    assert any(n.startswith("execution-node-0-") for n in names)
    assert b"a line on stderr" in b"".join(stream_file(record, "stderr.txt", follow=False))
    # outputs: uploaded to <prefix>/<segment>/outputs/<suffix> on the logs share, and to the data container
    logs = open_store(workspace, DEV_ACCOUNT, share="logs")
    assert logs.read_bytes(f"{segment}/outputs/Models/result-0.txt") == b"written by rank 0\n"
    assert data.read_bytes(f"scratch/{segment}/outputs/result-0.txt") == b"written by rank 0\n"
    assert [f.name for f in list_files(record, "MODEL")] == ["result-0.txt"]
    # the secret is nowhere on disk
    for file in workspace.root.rglob("*"):
        if file.is_file() and file.stat().st_size < 5_000_000:
            assert b"a-secret-only-the-process-sees" not in file.read_bytes(), file


def test_a_blob_mount_reads_and_writes_the_container(
    workspace: Workspace, tmp_path: Path, blob_mount: str
) -> None:
    data = open_store(workspace, DEV_ACCOUNT, container="mounted")
    data.write_bytes("in/a.txt", b"a\n")
    data.write_bytes("in/gone.txt", b"delete me\n")
    command = (
        "cat $AZ_BATCHAI_JOB_MOUNT_ROOT/m/in/a.txt > $AZ_BATCHAI_JOB_MOUNT_ROOT/m/in/copy.txt && "
        "rm $AZ_BATCHAI_JOB_MOUNT_ROOT/m/in/gone.txt"
    )
    path = job_file(
        tmp_path,
        customToolkitSettings={"commandLine": command},
        mountVolumes={
            "azureFileShares": [
                {
                    "azureFileUrl": "https://devstoreaccount1.file.core.windows.net/logs",
                    "relativeMountPath": "logs",
                }
            ],
            "azureBlobFileSystems": [
                {"accountName": DEV_ACCOUNT, "containerName": "mounted", "relativeMountPath": "m"}
            ],
        },
    )
    run_job(workspace, path, {"storage_account": DEV_ACCOUNT}, name=f"blobmount-{blob_mount}", wait=True)
    assert sorted(e.path for e in data.list()) == ["in/a.txt", "in/copy.txt"]
    assert data.read_bytes("in/copy.txt") == b"a\n"


def test_two_nodes_run_every_rank(workspace: Workspace, tmp_path: Path) -> None:
    path = job_file(
        tmp_path,
        nodeCount=2,
        customToolkitSettings=None,
        pyTorchSettings={
            "pythonScriptFilePath": "$AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/report.py",
            "commandLineArgs": "--rank $AZ_BATCHAI_TASK_INDEX --dist-url $AZ_BATCHAI_PYTORCH_INIT_METHOD",
            "processCount": 4,
        },
    )
    record = run_job(workspace, path, name="ranks", wait=True)
    reports = [stdout_report(record, f"stdout-{rank}.txt") for rank in range(4)]
    assert [r["argv"][1] for r in reports] == ["0", "1", "2", "3"]
    assert reports[0]["argv"][3].startswith("file://")
    temps = {r["env"]["AZ_BATCHAI_JOB_TEMP"] for r in reports}
    assert len(temps) == 2  # two simulated nodes, two ranks each
    hostfile = Path(reports[0]["env"]["AZ_BATCHAI_MPI_HOST_FILE"]).read_text().splitlines()
    assert len(hostfile) == 2


def test_a_failing_job_keeps_its_logs_and_partial_outputs(workspace: Workspace, tmp_path: Path) -> None:
    path = job_file(
        tmp_path,
        environmentVariables=[{"name": "MODE", "value": "fail"}],
        outputDirectories=[{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"}],
    )
    with pytest.raises(JobFailed) as failed:
        run_job(workspace, path, name="fails", wait=True)
    assert failed.value.exit_code == 3
    record = JobBook(workspace).get("fails")
    assert (record.state, record.exit_code) == ("failed", 3)
    assert b"failing on purpose" in b"".join(stream_file(record, "stderr.txt", follow=False))
    logs = open_store(workspace, DEV_ACCOUNT, share="logs")
    assert logs.read_bytes(f"{record.segment}/outputs/result-0.txt") == b"written by rank 0\n"
    # through the command line: the exit code is the job's
    path2 = job_file(tmp_path, "job2.json", environmentVariables=[{"name": "MODE", "value": "fail"}])
    result = subprocess.run(
        [sys.executable, "-m", "azbai", "job", "--workspace", str(workspace.root), "create", "-f", str(path2), "-n", "fails2", "--wait"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 3 and "Error: job 'fails2' failed with exit code 3" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_wall_clock_limit_kills_the_job(workspace: Workspace, tmp_path: Path) -> None:
    path = job_file(
        tmp_path,
        environmentVariables=[{"name": "MODE", "value": "sleep"}],
        constraints={"maxWallClockTime": "00:00:02"},
    )
    started = time.monotonic()
    with pytest.raises(JobFailed) as failed:
        run_job(workspace, path, name="slow", wait=True)
    assert time.monotonic() - started < 30
    assert failed.value.exit_code == 124
    record = JobBook(workspace).get("slow")
    log = "".join(f.name for f in list_files(record))
    assert "execution-node-0" in log


def test_background_job_stream_terminate_and_delete(
    workspace: Workspace, tmp_path: Path, blob_mount: str
) -> None:
    path = job_file(tmp_path, environmentVariables=[{"name": "MODE", "value": "sleep"}])
    record = run_job(workspace, path, name=f"background-{blob_mount}")
    assert record.state in ("queued", "running") and record.runner_pid
    first = next(iter(stream_file(record, "stdout.txt")))  # follows until the first output arrives
    assert b'"argv"' in first
    with pytest.raises(JobError, match="terminate it first"):
        delete_job(record)
    record = terminate_job(record)
    assert record.state == "terminated"
    with pytest.raises(JobFailed):
        wait_job(record)
    assert any(f.name == "stdout.txt" for f in list_files(record))
    delete_job(record)
    with pytest.raises(JobError, match="no job named"):
        JobBook(workspace).get(f"background-{blob_mount}")


def test_records_survive_azurite_restarts(workspace: Workspace, tmp_path: Path) -> None:
    producer = job_file(
        tmp_path,
        "produce.json",
        outputDirectories=[{"id": "OUT", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/data/produced"}],
    )
    first = run_job(workspace, producer, name="producer", wait=True)
    Emulator(workspace).stop()
    assert not Emulator(workspace).status().running
    consumer = job_file(
        tmp_path,
        "consume.json",
        customToolkitSettings={
            "commandLine": f"cat $AZ_BATCHAI_JOB_MOUNT_ROOT/data/produced/{first.segment}/outputs/result-0.txt"
        },
    )
    second = run_job(workspace, consumer, name="consumer", wait=True)
    assert b"".join(stream_file(second, "stdout.txt", follow=False)) == b"written by rank 0\n"
    assert JobBook(workspace).get("producer").state == "succeeded"


def test_job_names_are_unique_per_experiment(workspace: Workspace, tmp_path: Path) -> None:
    path = job_file(tmp_path)
    run_job(workspace, path, name="twice", experiment="one", wait=True)
    with pytest.raises(JobError, match="already exists"):
        run_job(workspace, path, name="twice", experiment="one")
    run_job(workspace, path, name="twice", experiment="two", wait=True)
    with pytest.raises(JobError, match="several experiments"):
        JobBook(workspace).get("twice")


RECIPES = sorted((CORPUS / "recipes").rglob("*.json"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(CORPUS / "recipes")))
def test_every_recipe_runs_against_small_scripts(workspace: Workspace, tmp_path: Path, recipe: Path) -> None:
    """Each Batch AI recipe, unchanged, with our report.py at every script path it names and stubs for apt/pip/cntk."""
    from azbai.convert.job import build_plan
    from azbai.source.reader import load_job

    inputs = {d.id: d.path for d in build_plan(load_job(recipe)).steps[0].job.input_directories}
    text = re.sub(
        r"\$AZ_BATCHAI_INPUT_(\w+)", lambda m: inputs.get(m.group(1), m.group(0)), recipe.read_text()
    )
    scripts = open_store(workspace, DEV_ACCOUNT, share="scripts")
    # scripts a job preparation puts on the node's local disk (Horovod clones its benchmarks into $AZ_BATCHAI_JOB_TEMP)
    on_node = set(re.findall(r"(\$AZ_BATCHAI_JOB_TEMP/[\w./-]+\.py)\b", text))
    prep = "#!/bin/sh\n" + "".join(
        f'mkdir -p "$(dirname {p})" && cp $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/report.py {p}\n'
        for p in sorted(on_node)
    )
    (tmp_path / "prep.sh").write_text(prep + STUB.read_text())
    for match in set(re.findall(r"\$AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/([\w./-]+\.(?:py|sh))\b", text)):
        source = tmp_path / "prep.sh" if match.endswith(".sh") else SCRIPT
        scripts.upload_file(source, match)
    shims = tmp_path / "bin"
    shims.mkdir()
    for tool in ("apt", "pip", "cntk"):
        shutil.copy(STUB, shims / tool)
    env = {"PATH": f"{shims}:{os.environ['PATH']}"}
    name = re.sub(r"[^a-z0-9]+", "-", str(recipe.relative_to(CORPUS / "recipes")).lower())[:60].strip("-")
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        record = run_job(workspace, recipe, name=name, wait=True)
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert record.state == "succeeded"
    files = {f.name for f in list_files(record)}
    assert files & {"stdout.txt", "stdout-0.txt", "stdout-wk-0.txt"}


def test_a_job_waited_for_in_the_foreground_is_not_taken_for_dead(
    workspace: Workspace, tmp_path: Path
) -> None:
    """`azbai job create --wait` runs the job in the CLI's own process; another `azbai job show` must see it running."""
    import threading

    path = job_file(
        tmp_path,
        environmentVariables=[{"name": "MODE", "value": "sleep"}],
        constraints={"maxWallClockTime": "00:00:04"},
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_job(workspace, path, name="foreground", wait=True)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    seen = set()
    while thread.is_alive() and time.monotonic() < deadline:
        with contextlib.suppress(JobError):
            seen.add(JobBook(workspace).get("foreground").state)
        time.sleep(0.1)
    thread.join()
    assert not [e for e in errors if not isinstance(e, JobFailed)], errors
    assert "running" in seen
    record = JobBook(workspace).get("foreground")
    # it ended on its wall clock, not because an observer decided its runner was gone
    assert (record.state, record.exit_code) == ("failed", 124) and "runner" not in (record.message or "")
