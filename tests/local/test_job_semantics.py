"""Issue 11: Batch AI's semantics in a local job — paths, environment, reasons — each checked end to end."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import azbai
from azbai.cli import main as cli
from azbai.errors import JobError, JobFailed
from azbai.local.azurite import DEV_ACCOUNT, Emulator
from azbai.local.service import create_job, list_files, stream_file
from azbai.local.stores import open_store
from azbai.local.workspace import Workspace
from tests.conftest import DATA
from tests.local.conftest import run_job

pytestmark = pytest.mark.azurite
SHARE = "https://devstoreaccount1.file.core.windows.net/"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path_factory.mktemp("semantics-ws"))
    emulator = Emulator(workspace)
    emulator.ensure()
    open_store(workspace, DEV_ACCOUNT, share="scripts").upload_file(DATA / "jobs" / "report.py", "report.py")
    try:
        yield workspace
    finally:
        emulator.stop()


def job_file(tmp_path: Path, command: str, **properties: Any) -> Path:
    base: dict[str, Any] = {
        "nodeCount": 1,
        "customToolkitSettings": {"commandLine": command},
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        "mountVolumes": {
            "azureFileShares": [
                {"azureFileUrl": SHARE + "logs", "relativeMountPath": "logs"},
                {"azureFileUrl": SHARE + "scripts", "relativeMountPath": "scripts"},
            ],
            "azureBlobFileSystems": [
                {"accountName": DEV_ACCOUNT, "containerName": "semantics", "relativeMountPath": "blob"}
            ],
        },
    }
    base.update(properties)
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"properties": base}))
    return path


def stdout(record: Any) -> str:
    return b"".join(stream_file(record, "stdout.txt", follow=False)).decode()


def test_item2_files_named_azbai_are_outputs_too(
    workspace: Workspace, tmp_path: Path, blob_mount: str
) -> None:
    command = "echo share > $AZ_BATCHAI_OUTPUT_S/.azbai-mine && echo blob > $AZ_BATCHAI_OUTPUT_B/.azbai-mine"
    path = job_file(
        tmp_path,
        command,
        outputDirectories=[
            {"id": "S", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"},
            {"id": "B", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/blob"},
        ],
    )
    record = run_job(workspace, path, name=f"dotfiles-{blob_mount}", wait=True)
    segment = record.segment
    assert (
        open_store(workspace, DEV_ACCOUNT, share="logs").read_bytes(f"{segment}/outputs/.azbai-mine")
        == b"share\n"
    )
    blob = open_store(workspace, DEV_ACCOUNT, container="semantics")
    assert blob.read_bytes(f"{segment}/outputs/.azbai-mine") == b"blob\n"
    assert [f.name for f in list_files(record, "B")] == [".azbai-mine"]


@pytest.mark.parametrize(
    ("prefix", "where"),
    [
        ("$AZ_BATCHAI_JOB_TEMP_DIR", "work/jobs"),  # the variable Batch AI's docs name
        ("$AZ_BATCHAI_JOB_MOUNT_ROOT/logs/$RUN_GROUP", "mounts/logs/exp1"),  # a user variable
    ],
)
def test_item5_stdouterr_prefix_expands_like_batch_ai(
    workspace: Workspace, tmp_path: Path, prefix: str, where: str
) -> None:
    path = job_file(
        tmp_path,
        "echo hello",
        stdOutErrPathPrefix=prefix,
        environmentVariables=[{"name": "RUN_GROUP", "value": "exp1"}],
    )
    name = "stdouterr-" + str(abs(hash(prefix)) % 10_000)
    record = run_job(workspace, path, name=name, wait=True)
    assert record.stdouterr_dir and Path(record.stdouterr_dir).is_absolute()
    assert where in record.stdouterr_dir and "$" not in record.stdouterr_dir
    assert "stdout.txt" in [f.name for f in list_files(record)]
    assert stdout(record) == "hello\n"


def test_item6_a_user_variable_in_path_prefix_lands_expanded(workspace: Workspace, tmp_path: Path) -> None:
    path = job_file(
        tmp_path,
        "echo out > $AZ_BATCHAI_OUTPUT_OUT/result.txt",
        environmentVariables=[{"name": "RUN_GROUP", "value": "exp1"}],
        outputDirectories=[{"id": "OUT", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/blob/$RUN_GROUP"}],
    )
    plan = azbai.load(path, name="rungroup")
    assert [r.path_on_datastore for r in plan.data_references if r.name == "output_out"] == [
        "exp1/{segment}/outputs"
    ]
    record = run_job(workspace, path, name="rungroup", wait=True)
    blob = open_store(workspace, DEV_ACCOUNT, container="semantics")
    assert blob.read_bytes(f"exp1/{record.segment}/outputs/result.txt") == b"out\n"
    assert not [e for e in blob.list("") if "$RUN_GROUP" in e.path]


def test_item6_a_literal_segment_token_stays_literal(workspace: Workspace, tmp_path: Path) -> None:
    path = job_file(
        tmp_path,
        "echo out > $AZ_BATCHAI_OUTPUT_OUT/result.txt",
        outputDirectories=[{"id": "OUT", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/blob/{segment}x"}],
        stdOutErrPathPrefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
    )
    record = run_job(workspace, path, name="literal", wait=True)
    blob = open_store(workspace, DEV_ACCOUNT, container="semantics")
    assert blob.read_bytes(f"{{segment}}x/{record.segment}/outputs/result.txt") == b"out\n"


def test_item7_a_job_gets_batch_ai_environment_only(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_BATCHAI_STORAGE_KEY", "the-clients-storage-key")
    monkeypatch.setenv("SOMETHING_ONLY_THE_CLI_HAD", "x")
    monkeypatch.setenv("ASKED_FOR", "given")
    path = job_file(
        tmp_path,
        "printenv",
        environmentVariables=[{"name": "MODE", "value": "mine"}],
        secrets=[{"name": "DB_PASSWORD", "value": "pw"}],
    )
    plan = azbai.load(path, name="printenv")
    from azbai.facade import secret_values

    record = create_job(
        workspace, plan, wait=True, secrets=secret_values(plan), env={"ASKED_FOR": os.environ["ASKED_FOR"]}
    )
    names = {line.partition("=")[0] for line in stdout(record).splitlines() if "=" in line}
    assert "the-clients-storage-key" not in stdout(record)
    assert {"AZURE_BATCHAI_STORAGE_KEY", "SOMETHING_ONLY_THE_CLI_HAD", "AZBAI_WORKSPACE"}.isdisjoint(names)
    assert {"MODE", "DB_PASSWORD", "ASKED_FOR", "PATH", "HOME", "AZ_BATCHAI_JOB_TEMP"} <= names


def test_item8_a_launcher_error_is_in_the_record(workspace: Workspace, tmp_path: Path) -> None:
    path = job_file(
        tmp_path,
        "echo never",
        environmentVariables=[{"name": "STYLE", "value": "{parameters.style}"}],
    )
    with pytest.raises(JobFailed, match="pipeline parameter 'style'") as failed:
        run_job(workspace, path, name="launchererror", wait=True)
    assert "launcher" in str(failed.value)
    from azbai.local.jobs import JobBook

    record = JobBook(workspace).get("launchererror")
    assert record.to_dict()["executionInfo"]["errors"] and record.exit_code == 125


def test_item8_a_wall_clock_kill_says_why(workspace: Workspace, tmp_path: Path) -> None:
    path = job_file(tmp_path, "sleep 30", constraints={"maxWallClockTime": "00:00:01"})
    with pytest.raises(JobFailed, match=r"maxWallClockTime \(1 s\) exceeded"):
        run_job(workspace, path, name="wallclock", wait=True)


def test_item8_an_impossible_node_count_is_refused_and_validate_says_so(
    workspace: Workspace, tmp_path: Path
) -> None:
    path = job_file(tmp_path, "echo x", nodeCount=10**9)
    codes = [d.code for d in azbai.validate(path).diagnostics]
    assert "local-size-limit" in codes
    with pytest.raises(JobError, match="simulates at most"):
        run_job(workspace, path, name="huge", wait=True)


def test_item8_job_create_prints_the_warnings_validate_prints(workspace: Workspace, tmp_path: Path) -> None:
    # a typo'd key, and a mount no mountVolumes entry describes (it becomes an empty directory)
    path = job_file(
        tmp_path,
        "ls $AZ_BATCHAI_MOUNT_ROOT/external/data",
        stdOutErrPathPrefx="$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
    )
    validate = CliRunner().invoke(cli, ["validate", str(path)])
    created = CliRunner().invoke(
        cli, ["job", "--workspace", str(workspace.root), "create", "-f", str(path), "-n", "typo", "--wait"]
    )

    def warnings(output: str) -> set[str]:
        return {line.split("warning: ", 1)[1] for line in output.splitlines() if "warning: " in line}

    warned = warnings(validate.output)
    assert any("stdOutErrPathPrefx" in w for w in warned) and any("undescribed-mount" in w for w in warned)
    assert warned <= warnings(created.output), created.output


def test_item9_an_output_is_batch_ai_s_path_under_the_mount(workspace: Workspace, tmp_path: Path) -> None:
    path = job_file(
        tmp_path,
        "python $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/report.py",
        outputDirectories=[
            {"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs", "pathSuffix": "Models"}
        ],
    )
    record = run_job(workspace, path, name="shape", wait=True)
    env = json.loads(stdout(record).splitlines()[0])["env"]
    expected = f"{env['AZ_BATCHAI_JOB_MOUNT_ROOT']}/logs/{record.segment}/outputs/Models"
    assert env["AZ_BATCHAI_OUTPUT_MODEL"] == expected
    # written through the share's mount: the share has it (no upload staging)
    logs = open_store(workspace, DEV_ACCOUNT, share="logs")
    assert logs.read_bytes(f"{record.segment}/outputs/Models/result-0.txt") == b"written by rank 0\n"
    assert not (record.work_dir / "azbai" / "outputs").exists() or not any(
        (record.work_dir / "azbai" / "outputs").rglob("*.txt")
    )


def test_item11_an_absolute_stdouterr_prefix_is_a_warning(tmp_path: Path) -> None:
    path = job_file(tmp_path, "echo x", stdOutErrPathPrefix="/var/tmp/logs")
    assert "path-absolute" in [d.code for d in azbai.validate(path).diagnostics]


def test_item8_argument_list_too_long_is_in_the_record(workspace: Workspace, tmp_path: Path) -> None:
    path = job_file(tmp_path, "echo " + "x" * 200_000)  # one argument longer than Linux's MAX_ARG_STRLEN
    with pytest.raises(JobFailed, match="Argument list too long"):
        run_job(workspace, path, name="toolong", wait=True)
    from azbai.local.jobs import JobBook

    (error,) = JobBook(workspace).get("toolong").to_dict()["executionInfo"]["errors"]
    assert "the launcher could not run the job" in error and "Argument list too long" in error
