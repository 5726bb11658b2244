"""``azbai az``: namespaces, --query and -o as az printed them, the cluster's setup task and mounts, errors, secrets.

Real Azurite, real jobs (small shell command lines), the real ``azbai`` command line for what a user sees.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from azbai.az.commands import TABLE
from azbai.az.parser import parse
from azbai.cli import main
from azbai.errors import AzError, AzUsageError
from tests.az.conftest import Az, write
from tests.conftest import ROOT

pytestmark = pytest.mark.azurite
ACCOUNT = "azbaiclitest"


def job_json(tmp_path: Path, command: str, *, nodes: int = 1, name: str = "job.json", **extra: Any) -> Path:
    properties = {
        "nodeCount": nodes,
        "customToolkitSettings": {"commandLine": command},
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        "outputDirectories": [{"id": "OUT", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"}],
        "mountVolumes": {
            "azureFileShares": [
                {
                    "azureFileUrl": "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/logs",
                    "relativeMountPath": "logs",
                }
            ]
        },
        **extra,
    }
    return write(tmp_path / name, json.dumps({"properties": properties}))


def setup(
    az: Az, group: str, *, experiments: tuple[str, ...] = ("exp",), target: int = 1, cluster: str = ""
) -> None:
    """A group with a storage account (and its logs share), workspace ws, cluster c1 and experiments."""
    az(f"group create -n {group} -l eastus")
    az(f"storage account create -n {ACCOUNT} -g {group}")
    az(f"storage share create -n logs --account-name {ACCOUNT}")
    az(f"batchai workspace create -g {group} -n ws")
    az(f"batchai cluster create -g {group} -w ws -n c1 -s Standard_NC6 -t {target} {cluster}")
    for experiment in experiments:
        az(f"batchai experiment create -g {group} -w ws -n {experiment}")


def wait(az: Az, group: str, experiment: str, name: str) -> int:
    return az(f"batchai job wait -g {group} -w ws -e {experiment} -n {name}").exit_code


@pytest.fixture(autouse=True)
def _clean(az: Az, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    for name in ("AZURE_BATCHAI_STORAGE_ACCOUNT", "AZURE_BATCHAI_STORAGE_KEY", "AZURE_STORAGE_ACCOUNT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "az-config"))
    monkeypatch.chdir(tmp_path)
    yield
    az.answer = True
    for group in az.json("group list"):
        az(["group", "delete", "-n", group["name"], "-y"])


# -- namespaces ---------------------------------------------------------------------------------------------------


def test_two_experiments_hold_jobs_of_the_same_name(az: Az, tmp_path: Path) -> None:
    setup(az, "ns1", experiments=("first", "second"))
    for experiment in ("first", "second"):
        path = job_json(
            tmp_path, f"echo from {experiment} > $AZ_BATCHAI_OUTPUT_OUT/who.txt", name=f"{experiment}.json"
        )
        az(
            f"batchai job create -n train -c c1 -g ns1 -w ws -e {experiment} -f {path} --storage-account-name {ACCOUNT}"
        )
    for experiment in ("first", "second"):
        assert wait(az, "ns1", experiment, "train") == 0
        shown = az.json(f"batchai job show -n train -g ns1 -w ws -e {experiment}")
        assert shown["id"].endswith(f"/workspaces/ws/experiments/{experiment}/jobs/train")
        assert (
            f"ns1/workspaces/ws/experiments/{experiment}/jobs/train/"
            in shown["jobOutputDirectoryPathSegment"]
        )
        files = az.json(f"batchai job file list -j train -g ns1 -w ws -e {experiment} -d OUT")
        assert [f["name"] for f in files] == ["who.txt"]
        text = Path(files[0]["downloadUrl"].removeprefix("file://")).read_text()
        assert text == f"from {experiment}\n"
    with pytest.raises(AzError, match="already exists"):
        az(
            f"batchai job create -n train -c c1 -g ns1 -w ws -e first -f {tmp_path / 'first.json'} --storage-account-name {ACCOUNT}"
        )
    names = [j["name"] for j in az.json("batchai job list -g ns1 -w ws -e first")]
    assert names == ["train"]


def test_a_job_is_addressed_by_group_workspace_and_experiment(az: Az, tmp_path: Path) -> None:
    setup(az, "ns2")
    az("group create -n ns2b -l eastus")
    az("batchai workspace create -g ns2b -n ws")
    with pytest.raises(
        AzError,
        match=re.escape(
            "The Resource 'Microsoft.BatchAI/workspaces/ws/experiments/exp' under resource group 'ns2b' was not found"
        ),
    ):
        az("batchai job show -n any -g ns2b -w ws -e exp")
    with pytest.raises(AzError, match="Resource group 'nowhere' could not be found"):
        az("batchai workspace create -g nowhere -n ws")
    with pytest.raises(AzError, match="clusters/nope' under resource group 'ns2' was not found"):
        az(f"batchai job create -n j -c nope -g ns2 -w ws -e exp -f {job_json(tmp_path, 'true')}")
    # a cluster of another group, by its ARM id
    cluster = az.json("batchai cluster show -n c1 -g ns2 -w ws")["id"]
    az("batchai experiment create -g ns2b -w ws -n exp")
    created = az.json(
        f"batchai job create -n j -c {cluster} -g ns2b -w ws -e exp -f {job_json(tmp_path, 'true')} --storage-account-name {ACCOUNT}"
    )
    assert created["cluster"] == {"id": cluster, "resourceGroup": "ns2"}
    assert wait(az, "ns2b", "exp", "j") == 0
    # names compare case-insensitively, as in Azure
    assert az.json("batchai job show -n J -g NS2B -w WS -e EXP --query executionState") == "succeeded"


# -- --query and -o -----------------------------------------------------------------------------------------------


def test_query_and_output_formats_are_az_s(az: Az, tmp_path: Path) -> None:
    setup(az, "fmt")
    az(
        f"batchai job create -n ok -c c1 -g fmt -w ws -e exp -f {job_json(tmp_path, 'echo hi')} --storage-account-name {ACCOUNT}"
    )
    az(
        f"batchai job create -n bad -c c1 -g fmt -w ws -e exp -f {job_json(tmp_path, 'exit 3', name='bad.json')} --storage-account-name {ACCOUNT}"
    )
    assert wait(az, "fmt", "exp", "ok") == 0
    assert wait(az, "fmt", "exp", "bad") == 3  # the job's exit code, as `az batchai job wait`
    base = "batchai job show -n ok -g fmt -w ws -e exp"
    assert az(f"{base} --query executionState").text == '"succeeded"\n'
    assert az(f"{base} --query executionState -o tsv").text == "succeeded\n"
    assert az(f"{base} --query executionInfo.exitCode").text == "0\n"
    assert json.loads(az(f"{base} --query '{{state: executionState, tool: toolType}}'").text) == {
        "state": "succeeded",
        "tool": "custom",
    }
    assert az(f"{base} -o none").text == ""
    shown = az.json(base)
    assert az(base).text == json.dumps(shown, indent=2, sort_keys=True) + "\n"
    assert list(shown) == sorted(shown)
    listing = "batchai job list -g fmt -w ws -e exp"
    table = az(f"{listing} -o table").text.splitlines()
    assert table[0].split() == [
        "Name",
        "Cluster",
        "Cluster",
        "RG",
        "Cluster",
        "Workspace",
        "Tool",
        "Nodes",
        "State",
        "Exit",
        "code",
    ]
    assert set(table[1]) <= {"-", " "}
    rows = {line.split()[0]: line.split() for line in table[2:]}
    assert rows["ok"][1:] == ["c1", "fmt", "ws", "custom", "1", "succeeded", "0"]
    assert rows["bad"][-2:] == ["failed", "3"]
    assert az(f"{listing} --query \"[?executionState=='failed'].name\" -o tsv").text == "bad\n"
    # with --query, az's automatic table: the scalar fields, capitalised, in the query's order
    auto = az(
        f'{listing} --query "[].{{name: name, exit: executionInfo.exitCode}}" -o table'
    ).text.splitlines()
    assert auto[0].split() == ["Name", "Exit"]
    tsv = az("group show -n fmt -o tsv").text
    assert tsv.split("\t")[:2] == [
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/fmt",
        "eastus",
    ]
    assert az("group exists -n fmt").text == "true\n"
    with pytest.raises(AzUsageError, match="invalid choice: 'xml'"):
        az(f"{base} -o xml")
    with pytest.raises(AzUsageError, match="argument --query"):
        az(f"{base} --query '[?'")
    files = az("batchai job file list -j ok -g fmt -w ws -e exp -o table").text.splitlines()
    assert files[0].split() == ["Name", "Type", "Size", "Modified"]
    assert {line.split()[0] for line in files[2:]} >= {"stdout.txt", "stderr.txt"}
    assert "hi" in az("batchai job file stream -j ok -g fmt -w ws -e exp -f stdout.txt").text
    missing = az("batchai job file stream -j ok -g fmt -w ws -e exp -f nothing.txt")
    assert missing.text == "" and missing.exit_code == 0
    assert 'The file "nothing.txt" not found for the completed job.' in az.notes


# -- clusters: setup task, auto-storage, mounts ---------------------------------------------------------------------


def test_the_setup_task_runs_once_on_each_node_before_its_first_job(az: Az, tmp_path: Path) -> None:
    marker = 'echo "$AZ_BATCHAI_NODE_ID" >> $AZ_BATCHAI_MOUNT_ROOT/autoafs/prepared.txt; echo set up'
    setup(
        az,
        "nodes",
        target=2,
        cluster=f"--use-auto-storage --setup-task '{marker}' --setup-task-output '$AZ_BATCHAI_MOUNT_ROOT/autoafs'",
    )
    cluster = az.json("batchai cluster show -n c1 -g nodes -w ws")
    task = cluster["nodeSetup"]["setupTask"]
    assert task["commandLine"] == marker and task["stdOutErrPathSuffix"].startswith(
        "00000000-0000-0000-0000-000000000000/nodes/workspaces/ws/clusters/c1/"
    )
    shares = cluster["nodeSetup"]["mountVolumes"]["azureFileShares"]
    assert [(s["relativeMountPath"], s["azureFileUrl"].rsplit("/", 1)[1]) for s in shares] == [
        ("autoafs", "batchaishare")
    ]
    blobs = cluster["nodeSetup"]["mountVolumes"]["azureBlobFileSystems"]
    assert [(b["relativeMountPath"], b["containerName"]) for b in blobs] == [("autobfs", "batchaicontainer")]
    auto_account = shares[0]["accountName"]
    assert az.json(f"storage account show -n {auto_account} --query resourceGroup") == "batchaiautostorage"
    command = "cat $AZ_BATCHAI_MOUNT_ROOT/autoafs/prepared.txt > $AZ_BATCHAI_OUTPUT_OUT/seen.txt"
    for name in ("first", "second"):
        az(
            f"batchai job create -n {name} -c c1 -g nodes -w ws -e exp -f {job_json(tmp_path, command, nodes=2)} --storage-account-name {ACCOUNT}"
        )
        assert wait(az, "nodes", "exp", name) == 0
    share = az.workspace.share_dir(auto_account, "batchaishare")
    assert (share / "prepared.txt").read_text().split() == [
        "tvm-c1-0",
        "tvm-c1-1",
    ]  # once per node, not per job
    outputs = sorted(share.glob(f"{task['stdOutErrPathSuffix']}/*/stdouterr/stdout.txt"))
    assert [p.parent.parent.name for p in outputs] == ["tvm-c1-0", "tvm-c1-1"]
    assert all(p.read_text() == "set up\n" for p in outputs)
    assert [n["nodeId"] for n in az.json("batchai job node list -j first -g nodes -w ws -e exp")] == [
        "tvm-c1-0",
        "tvm-c1-1",
    ]
    scaled = az.json(
        "batchai cluster auto-scale -n c1 -g nodes -w ws --min 0 --max 3 --query scaleSettings.autoScale"
    )
    assert scaled == {"initialNodeCount": 0, "maximumNodeCount": 3, "minimumNodeCount": 0}
    az("batchai cluster resize -n c1 -g nodes -w ws -t 2")
    with pytest.raises(AzError, match="asks for 3 node"):
        az(
            f"batchai job create -n third -c c1 -g nodes -w ws -e exp -f {job_json(tmp_path, 'true', nodes=3)} --storage-account-name {ACCOUNT}"
        )
    az.answer = True
    az("group delete -n batchaiautostorage -y")


def test_a_failed_setup_task_leaves_the_node_unusable(az: Az, tmp_path: Path) -> None:
    setup(az, "badsetup", cluster="--setup-task 'echo broken >&2; exit 4' --setup-task-output $AZ_BATCHAI_MOUNT_ROOT/logs "
          f"--storage-account-name {ACCOUNT} --afs-name logs --afs-mount-path logs")  # fmt: skip
    path = job_json(tmp_path, "true")
    for _ in range(2):
        with pytest.raises(AzError, match="exit code 4"):
            az(
                f"batchai job create -n j -c c1 -g badsetup -w ws -e exp -f {path} --storage-account-name {ACCOUNT}"
            )


def test_cluster_mounts_from_flags_and_from_a_cluster_file(az: Az, tmp_path: Path) -> None:
    setup(
        az,
        "mounts",
        cluster=f"--storage-account-name {ACCOUNT} --afs-name logs --afs-mount-path external --bfs-name data",
    )
    az(f"storage container create -n data --account-name {ACCOUNT}")
    write(tmp_path / "in" / "a.txt", "from a blob\n")
    az(f"storage blob upload -c data -f {tmp_path / 'in' / 'a.txt'} -n inputs/a.txt --account-name {ACCOUNT}")
    cluster_file = write(tmp_path / "cluster.json", json.dumps({"properties": {
        "vmSize": "STANDARD_D1", "scaleSettings": {"manual": {"targetNodeCount": 1}},
        "nodeSetup": {"mountVolumes": {"azureFileShares": [
            {"azureFileUrl": "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/logs", "relativeMountPath": "fromfile",
             "credentials": {"accountKey": "<AZURE_BATCHAI_STORAGE_KEY>"}}]}}}}))  # fmt: skip
    with pytest.raises(AzError, match="Please configure Azure Storage account name"):
        az(f"batchai cluster create -n c2 -g mounts -w ws -f {cluster_file}")
    az(
        f"batchai cluster create -n c2 -g mounts -w ws -f {cluster_file} --storage-account-name {ACCOUNT} --storage-account-key secret-cluster-key"
    )
    assert az.json("batchai cluster show -n c2 -g mounts -w ws --query vmSize") == "STANDARD_D1"
    command = ("cat $AZ_BATCHAI_MOUNT_ROOT/bfs/inputs/a.txt > $AZ_BATCHAI_OUTPUT_OUT/seen.txt; "
               "echo external > $AZ_BATCHAI_MOUNT_ROOT/external/written-by-job.txt")  # fmt: skip
    az(
        f"batchai job create -n j1 -c c1 -g mounts -w ws -e exp -f {job_json(tmp_path, command)} --storage-account-name {ACCOUNT}"
    )
    assert wait(az, "mounts", "exp", "j1") == 0
    files = az.json("batchai job file list -j j1 -g mounts -w ws -e exp -d OUT")
    assert Path(files[0]["downloadUrl"].removeprefix("file://")).read_text() == "from a blob\n"
    assert (az.workspace.share_dir(ACCOUNT, "logs") / "written-by-job.txt").exists()
    command = "ls $AZ_BATCHAI_MOUNT_ROOT/fromfile > $AZ_BATCHAI_OUTPUT_OUT/listing.txt"
    az(
        f"batchai job create -n j2 -c c2 -g mounts -w ws -e exp -f {job_json(tmp_path, command, name='j2.json')} --storage-account-name {ACCOUNT}"
    )
    assert wait(az, "mounts", "exp", "j2") == 0
    listing = az.json("batchai job file list -j j2 -g mounts -w ws -e exp -d OUT --query [0].downloadUrl")
    assert "written-by-job.txt" in Path(listing.removeprefix("file://")).read_text()
    # job-level mounts: --afs-name, --bfs-name (with --storage-account-name) and --nfs
    command = ("cat $AZ_BATCHAI_JOB_MOUNT_ROOT/jobbfs/inputs/a.txt > $AZ_BATCHAI_JOB_MOUNT_ROOT/jobafs/copied.txt; "
               "echo kept > $AZ_BATCHAI_JOB_MOUNT_ROOT/nfs/on-nfs.txt")  # fmt: skip
    az(f"batchai job create -n j3 -c c1 -g mounts -w ws -e exp -f {job_json(tmp_path, command, name='j3.json')} "
       f"--storage-account-name {ACCOUNT} --afs-name logs --afs-mount-path jobafs --bfs-name data --bfs-mount-path jobbfs "
       "--nfs mynfs")  # fmt: skip
    assert wait(az, "mounts", "exp", "j3") == 0
    assert (az.workspace.share_dir(ACCOUNT, "logs") / "copied.txt").read_text() == "from a blob\n"
    assert (az.workspace.cluster_mount_dir("nfs") / "on-nfs.txt").read_text() == "kept\n"
    mounts = az.json("batchai job show -n j3 -g mounts -w ws -e exp --query mountVolumes")
    assert [s["relativeMountPath"] for s in mounts["azureFileShares"]] == ["logs", "jobafs"]
    assert mounts["fileServers"][0]["relativeMountPath"] == "nfs"
    assert "secret-cluster-key" not in "".join(
        p.read_text(errors="replace") for p in az.workspace.root.rglob("*.json")
    )


# -- storage ------------------------------------------------------------------------------------------------------


def test_upload_batch_takes_a_pattern_and_a_destination_path(az: Az, tmp_path: Path) -> None:
    az("group create -n store -l eastus")
    az(f"storage account create -n {ACCOUNT} -g store --sku Standard_LRS")
    az(f"storage container create -n data --account-name {ACCOUNT}")
    for name in ("a.png", "b.txt", "deep/c.png"):
        write(tmp_path / "src" / name, name)
    uploaded = az.json(
        f"storage blob upload-batch -s src -d data/images --destination-path run1 --pattern *.png --account-name {ACCOUNT}"
    )
    assert sorted(u["Blob"].split("/data/", 1)[1] for u in uploaded) == [
        "images/run1/a.png",
        "images/run1/deep/c.png",
    ]
    names = az.json(f"storage blob list -c data --account-name {ACCOUNT} --query [].name")
    assert names == ["images/run1/a.png", "images/run1/deep/c.png"]
    by_url = az.json(
        f"storage blob upload-batch -s src -d https://{ACCOUNT}.blob.core.windows.net/data/byurl --pattern b.*"
    )
    assert [u["Blob"].split("/data/", 1)[1] for u in by_url] == ["byurl/b.txt"]
    az(f"storage share create -n code --account-name {ACCOUNT}")
    shared = az.json(
        f"storage file upload-batch -s src -d code --destination-path v1 --account-name {ACCOUNT}"
    )
    assert sorted(u.rsplit("/code/", 1)[1] for u in shared) == ["v1/a.png", "v1/b.txt", "v1/deep/c.png"]
    assert (az.workspace.share_dir(ACCOUNT, "code") / "v1" / "deep" / "c.png").read_text() == "deep/c.png"
    keys = az.json(f"storage account keys list -n {ACCOUNT} -g store")
    assert [k["keyName"] for k in keys] == ["key1", "key2"]
    from azbai.local.azurite import DEV_KEY

    assert keys[0]["value"] == DEV_KEY  # the local key: Azurite's published development key
    az(f"storage share create -n scripts --account-name {ACCOUNT}")
    with pytest.raises(AzError, match="parent path does not exist"):
        az(
            f"storage file upload -s scripts --source {tmp_path / 'src' / 'b.txt'} --path nodir --account-name {ACCOUNT}"
        )
    az(f"storage directory create -n code -s scripts --account-name {ACCOUNT}")
    az(
        f"storage file upload -s scripts --source {tmp_path / 'src' / 'b.txt'} --path code --account-name {ACCOUNT}"
    )
    az(
        f"storage file upload -s scripts --source {tmp_path / 'src' / 'b.txt'} --path code/renamed.txt --account-name {ACCOUNT}"
    )
    assert az.json(f"storage file list -s scripts -p code --account-name {ACCOUNT} --query [].name") == [
        "b.txt",
        "renamed.txt",
    ]
    with pytest.raises(AzError, match="Missing credentials to access storage service"):
        az("storage share create -n other")
    with pytest.raises(AzError, match="was not found"):
        az("storage share create -n other --account-name notcreated")


def test_group_delete_asks_first_and_removes_what_the_group_holds(az: Az, tmp_path: Path) -> None:
    setup(az, "gone")
    az(f"storage container create -n data --account-name {ACCOUNT}")
    az(
        f"batchai job create -n j -c c1 -g gone -w ws -e exp -f {job_json(tmp_path, 'sleep 30')} --storage-account-name {ACCOUNT}"
    )
    az.answer = False
    az("group delete -n gone")
    assert az.json("group exists -n gone") is True
    az.answer = True
    az("group delete -n gone")  # a running job is terminated, its record removed
    assert az.json("group exists -n gone") is False
    assert not az.workspace.share_dir(ACCOUNT, "logs").exists()
    with pytest.raises(AzError, match="was not found"):
        az(f"storage container list --account-name {ACCOUNT}")
    from azbai.local.jobs import JobBook

    assert not [r for r in JobBook(az.workspace).list() if r.name == "j"]


# -- the command line: errors, notes, secrets, the alias ----------------------------------------------------------


def cli(args: list[str], workspace: Path, **kw: Any) -> Any:
    return CliRunner().invoke(main, ["az", *args], env={"AZBAI_WORKSPACE": str(workspace)}, **kw)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["batchai", "jb", "list"], "'jb' is not in the 'az batchai' command group"),
        (["batchai", "job", "create", "--nmae", "x"], "'--nmae': did you mean '--name'?"),
        (["batchai", "job", "show", "-n", "x"], "the following arguments are required: --resource-group/-g"),
        (["group", "create", "-n", "g", "-l"], "argument --location/-l: expected one argument"),
        (["batchai", "cluster", "create", "-n", "c", "-g", "g", "-t", "two"], "invalid int value: 'two'"),
        (["storage", "blob", "upload", "--account-key", "k"], "the following arguments are required"),
        (["batchai", "job", "create", "--storage-acount-key", "s3cr3t-value"], "--storage-acount-key ***"),
        (["batchai", "cluster", "create", "--pasword=s3cr3t-value"], "--pasword=***"),
    ],
)
def test_a_bad_command_or_flag_is_an_az_style_error_without_traceback(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = cli(args, tmp_path)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "s3cr3t-value" not in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_errors_of_the_service_and_prompts_without_a_tty(tmp_path: Path) -> None:
    result = cli(["batchai", "workspace", "create", "-g", "nowhere", "-n", "ws"], tmp_path)
    assert result.exit_code == 1 and result.output == "Error: Resource group 'nowhere' could not be found.\n"
    assert cli(["group", "create", "-n", "g", "-l", "eastus", "-o", "none"], tmp_path).exit_code == 0
    result = cli(["group", "delete", "-n", "g"], tmp_path, input="")
    assert result.exit_code == 1 and "Use --yes" in result.output
    result = cli(["batchai", "-h"], tmp_path)
    assert result.exit_code == 0 and "job" in result.output and "cluster" in result.output


def test_flags_that_mean_nothing_locally_are_noted_and_secrets_never_written(az: Az, tmp_path: Path) -> None:
    secrets = [
        "flag-storage-key-VALUE",
        "admin-password-VALUE",
        "inline-share-key-VALUE",
        "job-secret-VALUE",
        "account-key-VALUE",
    ]
    setup(az, "sec", cluster=f"--generate-ssh-keys -i UbuntuDSVM -u me -p {secrets[1]} --vnet v1 -l westus")
    assert any(n.startswith("--generate-ssh-keys: accepted and ignored") for n in az.notes)
    assert any(n.startswith("--image: accepted and ignored") for n in az.notes)
    az(f"storage share create -n other --account-name {ACCOUNT} --account-key {secrets[4]}")
    az(["storage", "container", "create", "-n", "viaconnection", "--connection-string",
        f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={secrets[4]}"])  # fmt: skip
    path = job_json(
        tmp_path,
        "echo $DB_PASSWORD | wc -c > $AZ_BATCHAI_OUTPUT_OUT/length.txt",
        secrets=[{"name": "DB_PASSWORD", "value": secrets[3]}],
        mountVolumes={"azureFileShares": [
            {"azureFileUrl": "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/logs", "relativeMountPath": "logs"},
            {"accountName": ACCOUNT, "azureFileUrl": f"https://{ACCOUNT}.file.core.windows.net/other", "relativeMountPath": "other",
             "credentials": {"accountKey": secrets[2]}}]},
    )  # fmt: skip
    created = az(
        f"batchai job create -n j -c c1 -g sec -w ws -e exp -f {path} --storage-account-name {ACCOUNT} --storage-account-key {secrets[0]}"
    )
    assert wait(az, "sec", "exp", "j") == 0
    shown = az("batchai job show -n j -g sec -w ws -e exp")
    files = az.json("batchai job file list -j j -g sec -w ws -e exp -d OUT")
    assert Path(files[0]["downloadUrl"].removeprefix("file://")).read_text().strip() == str(
        len(secrets[3]) + 1
    )
    everything = created.text + shown.text + "\n".join(az.notes)
    for path_ in az.workspace.root.rglob("*"):
        if path_.is_file() and "azurite" not in path_.parts:
            everything += path_.read_text(errors="replace")
    for secret in secrets:
        assert secret not in everything, secret
    assert json.loads(shown.text)["secrets"] == [
        {"name": "DB_PASSWORD", "value": None, "valueSecretReference": None}
    ]


def test_the_alias_sends_az_batchai_storage_group_here_and_the_rest_to_a_real_az(tmp_path: Path) -> None:
    script = write(tmp_path / "their-script.sh", "\n".join([
        'eval "$(azbai az --alias)"',
        "az group create -n aliased -l eastus --query name -o tsv",
        "mkdir -p elsewhere && cd elsewhere",
        "az batchai workspace create -g aliased -n ws --query provisioningState -o tsv",
        "az account show || echo \"account show: $?\"",
    ]) + "\n")  # fmt: skip
    bin_dir = tmp_path / "bin"
    write(bin_dir / "azbai", f'#!/bin/sh\nexec {sys.executable} -m azbai "$@"\n').chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "AZBAI_WORKSPACE": str(tmp_path / "ws"),
    }
    done = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["aliased", "succeeded", "account show: 127"]
    assert "'az account' is not run locally" in done.stderr and "no az CLI is installed" in done.stderr
    write(bin_dir / "az", '#!/bin/sh\necho real az: "$@"\n').chmod(0o755)
    done = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert done.stdout.splitlines()[-1] == "real az: account show"


# -- the parser never crashes -------------------------------------------------------------------------------------

_WORDS = st.sampled_from(
    ["batchai", "job", "create", "show", "storage", "group", "blob", "-n", "--name", "-g", "-o", "table", "--query",
     "x", "--nmae", "-t", "2", "--yes", "-h", "=", "--output=tsv", "cluster", "file", "list", ""]
)  # fmt: skip


@given(st.lists(_WORDS, max_size=8))
@settings(max_examples=300, deadline=None)
def test_the_parser_refuses_with_az_errors_only(argv: list[str]) -> None:
    try:
        parse(TABLE, argv)
    except AzUsageError as exc:
        assert str(exc)


def test_a_setup_task_s_blob_mount_fetches_what_it_opens_and_writes_back(
    az: Az, tmp_path: Path, blob_mount: str
) -> None:
    """The cluster's ``azureBlobFileSystems`` during the setup task: lazy (FUSE) or a mirror, the same result in
    the container; a big blob the task never opens is never fetched by the lazy mount, and survives either way."""
    import hashlib

    from azbai.local import blobfuse
    from azbai.local.stores import open_store

    group = f"bfs-{blob_mount}"
    task = ("cat $AZ_BATCHAI_MOUNT_ROOT/bfs/in/small.txt > $AZ_BATCHAI_MOUNT_ROOT/bfs/seen.txt; "
            "echo changed >> $AZ_BATCHAI_MOUNT_ROOT/bfs/in/changed.txt; rm $AZ_BATCHAI_MOUNT_ROOT/bfs/in/removed.txt")  # fmt: skip
    az(f"group create -n {group} -l eastus")
    az(f"storage account create -n {ACCOUNT} -g {group}")
    az(f"storage share create -n logs --account-name {ACCOUNT}")
    az(f"storage container create -n setupdata --account-name {ACCOUNT}")
    store = open_store(az.workspace, ACCOUNT, container="setupdata")
    big = os.urandom(8 << 20)
    store.write_bytes("in/small.txt", b"small\n")
    store.write_bytes("in/big.bin", big)
    store.write_bytes("in/changed.txt", b"before\n")
    store.write_bytes("in/removed.txt", b"gone soon\n")
    az(f"batchai workspace create -g {group} -n ws")
    az(f"batchai cluster create -g {group} -w ws -n c1 -s Standard_NC6 -t 1 --storage-account-name {ACCOUNT} "
       f"--afs-name logs --afs-mount-path logs --bfs-name setupdata --bfs-mount-path bfs "
       f"--setup-task '{task}' --setup-task-output '$AZ_BATCHAI_MOUNT_ROOT/logs'")  # fmt: skip
    az(f"batchai experiment create -g {group} -w ws -n exp")
    az(f"batchai job create -n j -c c1 -g {group} -w ws -e exp -f {job_json(tmp_path, 'true')} --storage-account-name {ACCOUNT}")  # fmt: skip
    assert wait(az, group, "exp", "j") == 0
    assert sorted(e.path for e in store.list("")) == [
        "in/big.bin",
        "in/changed.txt",
        "in/small.txt",
        "seen.txt",
    ]
    assert store.read_bytes("seen.txt") == b"small\n"
    assert store.read_bytes("in/changed.txt") == b"before\nchanged\n"
    assert hashlib.md5(store.read_bytes("in/big.bin")).digest() == hashlib.md5(big).digest()
    nodes = az.workspace.root.rglob("node-0")
    node = next(p for p in nodes if (p / "setup.json").exists())
    assert blobfuse.mounts_under(node) == []  # unmounted when the task ended
    if blob_mount == "fuse":
        cache = node / "mount-cache" / "0"
        fetched = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())
        assert fetched == [
            "in/changed.txt",
            "in/small.txt",
            "seen.txt",
        ]  # big.bin: never opened, never fetched
        assert (node / "mounts" / "bfs").is_symlink() and (
            node / "mounts/bfs/seen.txt"
        ).read_text() == "small\n"


def test_cluster_delete_detaches_a_blob_mount_left_under_the_cluster(az: Az, tmp_path: Path) -> None:
    """A CLI killed during a setup task leaves its lazy mount under the cluster's node: ``cluster delete`` detaches
    it before removing the folder, so the walk neither fails on it nor empties the container through it."""
    from azbai.local import blobfuse
    from azbai.local.stores import open_store

    if (reason := blobfuse.fuse_unavailable()) is not None:
        pytest.skip(f"no FUSE mount here: {reason}")
    setup(az, "bfsdel")
    az(f"storage container create -n keep --account-name {ACCOUNT}")
    store = open_store(az.workspace, ACCOUNT, container="keep")
    store.write_bytes("in/a.txt", b"a\n")
    (cluster_dir,) = [p for p in az.workspace.root.glob("**/clusters/c1") if p.is_dir()]
    point = cluster_dir / "nodes" / "node-0" / "mounts" / "bfs"
    mount = blobfuse.LazyMount(store, "", point, tmp_path / "cache", tmp_path / "removed")
    mount.start()
    try:
        assert os.listdir(point / "in") == ["a.txt"]
        assert az("batchai cluster delete -g bfsdel -w ws -n c1 -y").exit_code == 0
        assert not cluster_dir.exists() and blobfuse.mounts_under(cluster_dir.parent) == []
        assert blobfuse.read_journal(tmp_path / "removed") == set()  # nothing was removed through the mount
        assert store.read_bytes("in/a.txt") == b"a\n"
    finally:
        mount.stop()


def test_job_and_cluster_records_hold_only_the_model_s_keys_without_secrets(az: Az, tmp_path: Path) -> None:
    leaks = ("SAS_LEAK", "KEY_LEAK", "SECRET_LEAK", "IKEY_LEAK", "CSAS_LEAK", "SETUP_LEAK")
    setup(az, "rec")
    share = {"azureFileUrl": f"https://{ACCOUNT}.file.core.windows.net/logs?sv=1&sig=SAS_LEAK",
             "relativeMountPath": "logs", "credentials": {"acountKey": "KEY_LEAK"}}  # fmt: skip
    path = job_json(
        tmp_path,
        "echo hi",
        mountVolumes={"azureFileShares": [share]},
        secrets=[{"name": "T", "value": "s", "Value": "SECRET_LEAK"}],
    )
    created = az(f"batchai job create -c c1 -n j1 -g rec -w ws -e exp -f {path}")
    assert created.exit_code == 0, created.text
    assert wait(az, "rec", "exp", "j1") == 0
    shown = az.json("batchai job show -n j1 -g rec -w ws -e exp")
    assert (
        shown["mountVolumes"]["azureFileShares"][0]["azureFileUrl"]
        == f"https://{ACCOUNT}.file.core.windows.net/logs"
    )
    assert shown["secrets"] == [{"name": "T", "value": None, "valueSecretReference": None}]
    cluster = write(tmp_path / "cluster.json", json.dumps({"properties": {
        "vmSize": "STANDARD_NC6", "scaleSettings": {"manual": {"targetNodeCount": 1}},
        "nodeSetup": {
            "setupTask": {"commandLine": "echo setup", "stdOutErrPathPrefix": str(tmp_path / "setup"),
                          "secrets": [{"name": "S", "value": "SETUP_LEAK"}]},
            "mountVolumes": {"azureFileShares": [{
                "azureFileUrl": f"https://{ACCOUNT}.file.core.windows.net/logs?sv=1&sig=CSAS_LEAK",
                "relativeMountPath": "logs", "credentials": {"accountKey": "KEY_LEAK"}}]},
            "performanceCountersSettings": {"appInsightsReference": {
                "component": {"id": "/x"}, "instrumentationKey": "IKEY_LEAK"}}}}}))  # fmt: skip
    made = az(f"batchai cluster create -n c2 -g rec -w ws -f {cluster}")
    assert made.exit_code == 0, made.text
    everything = (
        created.text + made.text + az("batchai cluster show -n c2 -g rec -w ws").text + "\n".join(az.notes)
    )
    everything += json.dumps(shown)
    for file in az.workspace.root.rglob("*"):
        if file.is_file() and "azurite" not in file.parts:
            everything += file.read_text(errors="replace")
    for leak in leaks:
        assert leak not in everything, leak


def test_a_too_deep_job_file_is_refused_before_a_job_is_created(az: Az, tmp_path: Path) -> None:
    setup(az, "deep")
    path = job_json(tmp_path, "echo hi")
    text = path.read_text()
    path.write_text(text[:-2] + ', "x": ' + '{"a": ' * 900 + "1" + "}" * 902)
    from azbai.errors import SpecError

    with pytest.raises(SpecError, match="too-deep"):
        az(f"batchai job create -c c1 -n j1 -g deep -w ws -e exp -f {path}")
    assert az.json("batchai job list -g deep -w ws -e exp") == []
