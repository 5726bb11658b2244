"""Every recipe's ``cli-instructions.md``, its az commands as written, run through ``azbai az``.

The scripts and data the instructions upload are small files of ours (job scripts: ``tests/data/jobs/report.py``;
job preparation scripts: a stub that also puts ``report.py`` where the job expects its on-node scripts); ``apt``,
``pip`` and ``cntk`` are stubs on ``PATH``, as in ``tests/local/test_jobs.py``. Each command's output is checked
against the example output the recipe shows (its field names), the job must succeed, and ``job show --query
jobOutputDirectoryPathSegment`` must name the recipe's group, workspace, experiment and job.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from azbai.errors import AzError
from tests.az.conftest import Az, write
from tests.az.recipes import FILL, INSTRUCTIONS, job_file_for, missing_fields, recipe_dir, steps
from tests.conftest import DATA

pytestmark = [pytest.mark.azurite, pytest.mark.slow]
REPORT = DATA / "jobs" / "report.py"
#: commands of the recipes that Batch AI refused as written, and the error azbai gives for them
ERRATA = {
    # the Infiniband recipe lists the outputs of the other recipe's job
    "Chainer__Chainer-GPU-Distributed-Infiniband: az batchai job file list -j distributed_chainer -g batchai.recipes -w recipe_workspace -e chainer_experiment  "
    "-g batchai.recipes -d MODEL": "jobs/distributed_chainer' under resource group 'batchai.recipes' was not found",
}
STUB = DATA / "jobs" / "stub.sh"


def _prep_script(job_text: str) -> str:
    """A job preparation stand-in: the on-node scripts a recipe's jobprep fetched, then the stub's echo."""
    on_node = sorted(set(re.findall(r"(\$AZ_BATCHAI_JOB_TEMP/[\w./-]+\.py)\b", job_text)))
    lines = ["#!/bin/sh"]
    for path in on_node:
        lines += [
            f'mkdir -p "$(dirname {path})"',
            f"cat > {path} <<'AZBAI_EOF'",
            REPORT.read_text(),
            "AZBAI_EOF",
        ]
    return "\n".join(lines) + "\n" + STUB.read_text()


def _local_files(argv: list[str], job_text: str, cwd: Path) -> None:
    """The files an upload command names, made small: scripts are report.py, data is a line of text."""

    def value(*names: str) -> str | None:
        for i, word in enumerate(argv[:-1]):
            if word in names:
                return argv[i + 1]
        return None

    if argv[:3] == ["storage", "file", "upload"] or argv[:3] == ["storage", "blob", "upload"]:
        name = value("--source", "--file", "-f")
        assert name
        if name.endswith(".py"):
            shutil.copy(REPORT, cwd / name)
        elif name.endswith(".sh"):
            write(cwd / name, _prep_script(job_text))
        else:
            write(cwd / name, "small data of our own\n")
    if argv[:3] == ["storage", "blob", "upload-batch"]:
        source = value("--source", "-s")
        assert source
        write(cwd / source / "part-0.txt", "small data of our own\n")
        write(cwd / source / "sub" / "part-1.txt", "more data\n")


@pytest.mark.parametrize("md", INSTRUCTIONS, ids=lambda p: p.stem)
def test_every_recipe_s_cli_instructions_run_as_written(
    az: Az, md: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shims = tmp_path / "bin"
    shims.mkdir()
    for tool in ("apt", "apt-get", "pip", "cntk"):
        shutil.copy(STUB, shims / tool)
    monkeypatch.setenv("PATH", f"{shims}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv(
        "AZURE_STORAGE_ACCOUNT", FILL["<storage account name>"]
    )  # the 2017 recipes' share commands
    for name in ("AZURE_BATCHAI_STORAGE_ACCOUNT", "AZURE_BATCHAI_STORAGE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "no-az-config"))
    monkeypatch.chdir(tmp_path)
    az.answer = True
    try:
        _run_steps(az, md, tmp_path)
    finally:
        for group in az.json("group list"):
            az(["group", "delete", "-n", group["name"], "-y"])  # the 2017 recipes never delete theirs


def _wait(az: Az, job: dict[str, Any]) -> None:
    ids = job["id"].split("/")
    outcome = az(
        ["batchai", "job", "wait", "-n", job["name"], "-g", job["resourceGroup"], "-w", ids[8], "-e", ids[10]]
    )
    assert outcome.exit_code == 0, az.notes


def _run_steps(az: Az, md: Path, tmp_path: Path) -> None:
    ran_job: dict[str, Any] | None = None
    streamed = False
    for step in steps(md):
        for target, url in step.downloads.items():
            shutil.copy(job_file_for(md, url), tmp_path / target)
        config = next((tmp_path / w for w in step.argv if w.endswith(".json")), None)
        if config is not None and not config.exists():
            shutil.copy(job_file_for(md, None), config)
        known = (
            tmp_path / "job.json" if (tmp_path / "job.json").exists() else next(recipe_dir(md).glob("*.json"))
        )
        job_text = known.read_text()
        _local_files(step.argv, job_text, tmp_path)
        erratum = ERRATA.get(f"{md.stem}: {step.line}")
        if erratum:
            with pytest.raises(AzError, match=erratum):
                az(step.argv)  # the recipe's own mistake: Batch AI refused it too
            continue
        if step.argv[:4] == ["batchai", "job", "file", "list"] and ran_job and not streamed:
            _wait(
                az, ran_job
            )  # the recipe lists the outputs straight after create: they are there once it ends
        outcome = az(step.argv)
        assert outcome.exit_code == 0, (step.line, outcome)
        streamed = streamed or step.argv[:4] == ["batchai", "job", "file", "stream"]
        printed = outcome.text
        if step.argv[:4] != ["batchai", "job", "file", "stream"] and printed:
            json.loads(printed)  # what az printed by default: JSON
        if step.argv[:3] == ["batchai", "job", "create"]:
            ran_job = json.loads(printed)
            assert ran_job["executionState"] in ("queued", "running", "succeeded")
        if isinstance(step.example, (dict, list)):
            actual = json.loads(printed)
            assert missing_fields(step.example, actual) == [], step.line
        if step.argv[:4] == ["batchai", "job", "file", "stream"]:
            assert printed, f"{step.line}: nothing streamed"
        if step.argv[:4] == ["batchai", "job", "file", "list"]:
            files = json.loads(printed)
            assert files and all(f["fileType"] == "file" for f in files), step.line
        if "--query" in step.argv:
            segment = json.loads(printed)
            args = dict(zip(step.argv, step.argv[1:], strict=False))
            expected = f"{args['-g']}/workspaces/{args['-w']}/experiments/{args['-e']}/jobs/{args['-n']}/"
            assert expected in segment, (step.line, segment)
            state = az.json(step.line.split(" --query")[0].replace("az ", "", 1) + " --query executionState")
            assert state == "succeeded", step.line
        if step.argv[:2] == ["group", "delete"]:
            ran_job = None
    # the 2017 recipes stop at job create: their job must still end well
    if ran_job is not None:
        _wait(az, ran_job)


def test_shown_objects_have_the_fields_of_the_manual_s_examples(
    az: Az, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cluster show``, ``cluster node list`` and ``job show`` print what the Batch AI CLI manual shows."""
    from tests.az.recipes import manual_example

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "no-az-config"))
    az("group create -n demoGroup -l eastus")
    az("storage account create -n demobatchaicli -g demoGroup")
    az("storage share create -n logs --account-name demobatchaicli")
    az("batchai workspace create -g demoGroup -n demoWorkspace")
    az("batchai experiment create -g demoGroup -w demoWorkspace -n demoExperiment")
    az("batchai cluster create -g demoGroup -w demoWorkspace -n demoCluster -t 2 -s Standard_NC6 --use-auto-storage "
       "--storage-account-name demobatchaicli --afs-name logs --setup-task true --setup-task-output $AZ_BATCHAI_MOUNT_ROOT/afs")  # fmt: skip
    job = write(tmp_path / "job.json", json.dumps({"properties": {
        "nodeCount": 2, "chainerSettings": {"pythonScriptFilePath": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs/report.py"},
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        "mountVolumes": {"azureFileShares": [
            {"azureFileUrl": "https://demobatchaicli.file.core.windows.net/logs", "relativeMountPath": "logs"}]}}}))  # fmt: skip
    shutil.copy(REPORT, az.workspace.share_dir("demobatchaicli", "logs") / "report.py")
    az(
        f"batchai job create -g demoGroup -w demoWorkspace -e demoExperiment -n demoJob -c demoCluster -f {job}"
    )
    assert az("batchai job wait -g demoGroup -w demoWorkspace -e demoExperiment -n demoJob").exit_code == 0
    for command in (
        "az batchai cluster show -g demoGroup -w demoWorkspace -n demoCluster",
        "az batchai cluster node list -g demoGroup -w demoWorkspace -c demoCluster",
        "az batchai job show -g demoGroup -w demoWorkspace -e demoExperiment -n demoJob",
    ):
        example, printed = manual_example(command), az.json(command)
        assert missing_fields(example, printed) == [], command
        assert type(example) is type(printed), command
    az.answer = True
    for group in ("demoGroup", "batchaiautostorage"):
        az(["group", "delete", "-n", group, "-y"])
