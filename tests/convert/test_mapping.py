"""The Batch AI → plan mapping tables, row by row (docs/mapping.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from azbai.convert.compute import VM_SIZES, replacement_for, vm_size
from azbai.convert.job import PlanOptions, build_plan
from azbai.convert.storage import ExtraMount
from azbai.errors import PlanError
from azbai.plan.model import DataMode, Distribution, LaunchMode, MountRoot, Plan, StoreKind, VolumeKind
from azbai.source.reader import load_job

SHARE = {"azureFileUrl": "https://acct.file.core.windows.net/logs", "relativeMountPath": "logs"}
BLOB = {"accountName": "acct", "containerName": "data", "relativeMountPath": "data"}


def plan_of(tmp_path: Path, options: PlanOptions | None = None, **props: Any) -> Plan:
    base: dict[str, Any] = {
        "nodeCount": 1,
        "customToolkitSettings": {"commandLine": "echo $AZ_BATCHAI_JOB_MOUNT_ROOT"},
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        "mountVolumes": {"azureFileShares": [SHARE], "azureBlobFileSystems": [BLOB]},
    }
    base.update(props)
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"properties": base}))
    return build_plan(load_job(path), options=options)


def test_volumes_become_datastores_mounted(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    assert [(d.name, d.kind, d.container_name) for d in plan.datastores] == [
        ("logs_share", StoreKind.FILE_SHARE, "logs"),
        ("data_blob", StoreKind.BLOB_CONTAINER, "data"),
    ]
    assert {r.name: r.mode for r in plan.data_references} == {"logs": DataMode.MOUNT, "data": DataMode.MOUNT}
    volumes = plan.steps[0].job.volumes
    assert [(v.kind, v.root, v.relative_mount_path, v.data_reference) for v in volumes] == [
        (VolumeKind.AZURE_FILE_SHARE, MountRoot.JOB, "logs", "logs"),
        (VolumeKind.AZURE_BLOB, MountRoot.JOB, "data", "data"),
    ]


def test_same_container_twice_is_one_datastore(tmp_path: Path) -> None:
    twice = {**SHARE, "relativeMountPath": "logs2"}
    plan = plan_of(tmp_path, mountVolumes={"azureFileShares": [SHARE, twice]})
    assert [d.name for d in plan.datastores] == ["logs_share"]
    assert [r.name for r in plan.data_references] == ["logs", "logs2"]


def test_a_share_subdirectory_is_a_path_on_the_datastore(tmp_path: Path) -> None:
    sub = {"azureFileUrl": "https://acct.file.core.windows.net/logs/team/a", "relativeMountPath": "team"}
    plan = plan_of(tmp_path, mountVolumes={"azureFileShares": [sub]})
    assert plan.data_reference("team").path_on_datastore == "team/a"


def test_input_directories_alias_or_download(tmp_path: Path) -> None:
    inputs = [{"id": "DATA", "path": "$AZ_BATCHAI_JOB_MOUNT_ROOT/data/mnist"}]
    alias = plan_of(tmp_path, inputDirectories=inputs)
    assert alias.steps[0].job.input_directories[0].data_reference is None
    download = plan_of(tmp_path, PlanOptions(input_mode=DataMode.DOWNLOAD), inputDirectories=inputs)
    ref = download.data_reference("input_data")
    assert (ref.mode, ref.datastore, ref.path_on_datastore, ref.path_on_compute) == (
        DataMode.DOWNLOAD, "data_blob", "mnist", "azbai/inputs/DATA",
    )  # fmt: skip


def test_output_directories_upload_to_the_batch_ai_path(tmp_path: Path) -> None:
    outputs = [{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs/runs", "pathSuffix": "Models"}]
    plan = plan_of(tmp_path, outputDirectories=outputs)
    ref = plan.data_reference("output_model")
    assert (ref.mode, ref.datastore, ref.path_on_datastore, ref.overwrite) == (
        DataMode.UPLOAD, "logs_share", "runs/{segment}/outputs/Models", True,
    )  # fmt: skip
    mounted = plan_of(tmp_path, PlanOptions(output_mode=DataMode.MOUNT), outputDirectories=outputs)
    assert mounted.steps[0].job.output_directories[0].data_reference is None


def test_output_on_no_volume_goes_to_the_workspace_default(tmp_path: Path) -> None:
    outputs = [{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_TEMP"}]
    plan = plan_of(tmp_path, outputDirectories=outputs)
    ref = plan.data_reference("output_model")
    assert ref.datastore == "workspaceblobstore" and plan.datastore("workspaceblobstore").workspace_default
    assert any("on no datastore" in n.message for n in plan.notes)


def test_nfs_unmanaged_and_undescribed_mounts_are_warnings(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        mountVolumes={
            "fileServers": [{"fileServer": {"id": "/x/fs"}, "relativeMountPath": "nfs"}],
            "unmanagedFileSystems": [
                {"mountCommand": "mount -t glusterfs 10.0.0.4:/gv0", "relativeMountPath": "gl"}
            ],
        },
        inputDirectories=[{"id": "SCRIPT", "path": "$AZ_BATCHAI_MOUNT_ROOT/external/scripts"}],
    )
    kinds = {v.relative_mount_path: (v.kind, v.data_reference) for v in plan.steps[0].job.volumes}
    assert kinds == {
        "nfs": (VolumeKind.FILE_SERVER, None),
        "gl": (VolumeKind.UNMANAGED, None),
        "external": (VolumeKind.UNDESCRIBED, None),
        "logs": (VolumeKind.UNDESCRIBED, None),  # stdOutErrPathPrefix names a job mount that is not described
    }
    messages = " ".join(n.message for n in plan.notes)
    assert "NFS file servers have no Azure ML equivalent" in messages
    assert "--mount external=afs://ACCOUNT/SHARE" in messages
    described = plan_of(
        tmp_path,
        PlanOptions(mounts=(ExtraMount.parse("external=afs://acct/share/dir"),)),
        inputDirectories=[{"id": "SCRIPT", "path": "$AZ_BATCHAI_MOUNT_ROOT/external/scripts"}],
    )
    assert described.data_reference("cluster_external").path_on_datastore == "dir"


@pytest.mark.parametrize(
    ("settings", "mode", "distribution", "processes", "stdout"),
    [
        ({"cntkSettings": {"pythonScriptFilePath": "/a.py", "processCount": 4}}, LaunchMode.MPI, Distribution.MPI, 4, "stdout.txt"),
        ({"cntkSettings": {"configFilePath": "/a.cntk"}}, LaunchMode.MPI, Distribution.MPI, 2, "stdout.txt"),
        ({"chainerSettings": {"pythonScriptFilePath": "/a.py"}}, LaunchMode.MPI, Distribution.MPI, 2, "stdout.txt"),
        ({"horovodSettings": {"pythonScriptFilePath": "/a.py", "processCount": 8}}, LaunchMode.MPI, Distribution.MPI, 8, "stdout.txt"),
        ({"customMpiSettings": {"commandLine": "python -u /a.py"}}, LaunchMode.MPI, Distribution.MPI, 2, "stdout.txt"),
        ({"caffeSettings": {"configFilePath": "/s.prototxt"}}, LaunchMode.MPI, Distribution.MPI, 2, "stdout.txt"),
        ({"pyTorchSettings": {"pythonScriptFilePath": "/a.py", "communicationBackend": "Gloo"}}, LaunchMode.PER_PROCESS, Distribution.PYTORCH, 2, "stdout-{index}.txt"),
        ({"pyTorchSettings": {"pythonScriptFilePath": "/a.py", "communicationBackend": "MPI"}}, LaunchMode.PER_PROCESS, Distribution.MPI, 2, "stdout-{index}.txt"),
        ({"caffe2Settings": {"pythonScriptFilePath": "/a.py"}}, LaunchMode.PER_PROCESS, Distribution.MPI, 2, "stdout-{index}.txt"),
        ({"tensorFlowSettings": {"pythonScriptFilePath": "/a.py", "workerCount": 2, "parameterServerCount": 1}}, LaunchMode.PARAMETER_SERVER, Distribution.TENSORFLOW, 3, "stdout-ps-{index}.txt"),
        ({"customToolkitSettings": {"commandLine": "mpirun --hostfile $AZ_BATCHAI_MPI_HOST_FILE x"}}, LaunchMode.MASTER_ONLY, Distribution.MPI, 1, "stdout.txt"),
    ],
)  # fmt: skip
def test_toolkits_become_processes(
    tmp_path: Path,
    settings: dict[str, Any],
    mode: LaunchMode,
    distribution: Distribution,
    processes: int,
    stdout: str,
) -> None:
    job = {"nodeCount": 2, "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP", "mountVolumes": None, **settings}
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"properties": job}))
    launch = build_plan(load_job(path)).steps[0].job.launch
    assert (launch.mode, launch.distribution, launch.process_count) == (mode, distribution, processes)
    assert launch.groups[0].stdout == stdout


def test_tensorflow_single_process_uses_the_master_arguments(tmp_path: Path) -> None:
    settings = {
        "pythonScriptFilePath": "/t.py",
        "masterCommandLineArgs": "--m",
        "workerCommandLineArgs": "--w",
    }
    plan = plan_of(tmp_path, tensorFlowSettings=settings, customToolkitSettings=None)
    (group,) = plan.steps[0].job.launch.groups
    assert (group.role, group.command, group.stdout) == (
        "worker",
        "python /t.py --m",
        "stdout-wk-{index}.txt",
    )


def test_retired_vm_sizes_have_current_replacements() -> None:
    for size in VM_SIZES.values():
        if size.retired:
            replacement = vm_size(size.replacement or "")
            assert replacement is not None and not replacement.retired
            assert replacement.gpus >= size.gpus
            assert replacement.infiniband or not size.infiniband


def test_retired_images_are_replaced_and_kept_on_request(tmp_path: Path) -> None:
    assert replacement_for("microsoft/cntk:2.5.1-gpu-python2.7-cuda9.0-cudnn7.0") is not None
    assert replacement_for("tensorflow/tensorflow:1.8.0-gpu") is not None
    assert replacement_for("tensorflow/tensorflow:2.15.0-gpu") is None
    image = {"imageSourceRegistry": {"image": "pytorch/pytorch:0.4_cuda9_cudnn7"}}
    replaced = plan_of(tmp_path, containerSettings=image)
    assert (
        replaced.container.source_image == "pytorch/pytorch:0.4_cuda9_cudnn7"
        and replaced.container.pip_packages == ("torch",)
    )
    kept = plan_of(tmp_path, PlanOptions(keep_image=True), containerSettings=image)
    assert kept.container.image == "pytorch/pytorch:0.4_cuda9_cudnn7" and kept.container.source_image is None
    chosen = plan_of(tmp_path, PlanOptions(image="myreg.azurecr.io/train:1"), containerSettings=image)
    assert chosen.container.image == "myreg.azurecr.io/train:1"


def test_vm_size_flag_and_cluster_scale(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, PlanOptions(vm_size="STANDARD_NC24ADS_A100_V4", max_nodes=4), nodeCount=2)
    assert (plan.compute.vm_size, plan.compute.max_nodes, plan.compute.source_vm_size) == (
        "STANDARD_NC24ADS_A100_V4",
        4,
        None,
    )


# --- what a job names that Azure ML takes differently --------------------------------------------------------


def test_mount_paths_with_spaces_are_matched_whole(tmp_path: Path) -> None:
    """A described mount whose path holds a space ("my share") is that mount, not an undescribed "my"."""
    plan = plan_of(
        tmp_path,
        customToolkitSettings={"commandLine": "ls '$AZ_BATCHAI_JOB_MOUNT_ROOT/blob data/in' > /dev/null"},
        stdOutErrPathPrefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/my share/logs",
        mountVolumes={
            "azureFileShares": [dict(SHARE, relativeMountPath="my share")],
            "azureBlobFileSystems": [dict(BLOB, relativeMountPath="blob data")],
        },
        outputDirectories=[{"id": "OUT", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/my share"}],
    )
    assert not [n for n in plan.notes if n.code == "undescribed-mount"]
    assert {v.relative_mount_path for v in plan.steps[0].job.volumes} == {"my share", "blob data"}
    # a mount no file describes is still found, and named by its first path segment
    plan = plan_of(tmp_path, stdOutErrPathPrefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/other share/logs")
    [note] = [n for n in plan.notes if n.code == "undescribed-mount"]
    assert "'other'" in note.message


def test_file_share_modes_other_than_batch_ais_default_are_noted(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path, mountVolumes={"azureFileShares": [dict(SHARE, fileMode="0777", directoryMode="0777")]}
    )
    assert not [n for n in plan.notes if n.code == "share-mode-ignored"]
    plan = plan_of(
        tmp_path, mountVolumes={"azureFileShares": [dict(SHARE, fileMode="0644", directoryMode="0755")]}
    )
    notes = {n.field: n.message for n in plan.notes if n.code == "share-mode-ignored"}
    assert set(notes) == {
        "properties.mountVolumes.azureFileShares[0].fileMode",
        "properties.mountVolumes.azureFileShares[0].directoryMode",
    }
    assert "0644" in notes["properties.mountVolumes.azureFileShares[0].fileMode"]


def test_uneven_pytorch_processes_are_noted(tmp_path: Path) -> None:
    """Azure ML starts as many processes on every node: 3 over 2 nodes asks for 2 each, and says so."""
    toolkit = {"pythonScriptFilePath": "train.py", "processCount": 3}
    plan = plan_of(tmp_path, nodeCount=2, customToolkitSettings=None, pyTorchSettings=toolkit)
    [note] = [n for n in plan.notes if n.code == "uneven-processes"]
    assert note.field == "properties.pyTorchSettings" and "asks for 2 per node" in note.message
    plan = plan_of(
        tmp_path, nodeCount=2, customToolkitSettings=None, pyTorchSettings=dict(toolkit, processCount=4)
    )
    assert not [n for n in plan.notes if n.code == "uneven-processes"]


def test_distributed_tensorflow_master_arguments_that_reach_no_process_are_noted(tmp_path: Path) -> None:
    toolkit = {
        "pythonScriptFilePath": "mnist_replica.py",
        "workerCount": 2,
        "parameterServerCount": 1,
        "masterCommandLineArgs": "--job_name=worker --chief",
        "workerCommandLineArgs": "--job_name=worker",
        "parameterServerCommandLineArgs": "--job_name=ps",
    }
    plan = plan_of(tmp_path, nodeCount=2, customToolkitSettings=None, tensorFlowSettings=toolkit)
    [note] = [n for n in plan.notes if n.code == "master-args-unused"]
    assert note.field == "properties.tensorFlowSettings.masterCommandLineArgs" and "--chief" in note.message
    # the recipes give both the same arguments (nothing is lost), and a single process runs the master's
    for same in (
        dict(toolkit, masterCommandLineArgs="--job_name=worker"),
        {"pythonScriptFilePath": "m.py", "masterCommandLineArgs": "--x"},
    ):
        plan = plan_of(tmp_path, customToolkitSettings=None, tensorFlowSettings=same)
        assert not [n for n in plan.notes if n.code == "master-args-unused"]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (PlanOptions(name="it's a/b"), 'the job name "it\'s a/b" cannot name a job'),
        (PlanOptions(name=".."), "the job name '..' cannot name a job"),
        (PlanOptions(name="x" * 65), "1 to 64 letters"),
        (
            PlanOptions(experiment="exp {y} $HOME"),
            "the experiment 'exp {y} $HOME' cannot be an Azure ML experiment",
        ),
        (PlanOptions(experiment="-exp"), "starting with a letter or a digit"),
        (PlanOptions(experiment="my.exp"), "the experiment 'my.exp'"),
    ],
)
def test_names_azure_ml_refuses_are_refused_here(tmp_path: Path, options: PlanOptions, error: str) -> None:
    with pytest.raises(PlanError, match=re.escape(error)):
        plan_of(tmp_path, options)


def test_names_batch_ai_and_azure_ml_take_are_taken(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, PlanOptions(name="my.job_1-a", experiment="Exp_1-b"))
    assert (plan.name, plan.experiment) == ("my.job_1-a", "Exp_1-b")


def test_a_mount_given_with_a_sas_token_is_refused_without_repeating_it() -> None:
    with pytest.raises(PlanError) as caught:
        ExtraMount.parse("x=blob://acct/cont/dir?sv=2020-01-01&sig=TOKEN123")
    assert "TOKEN123" not in str(caught.value) and "sv=" not in str(caught.value)
    assert "'x=blob://acct/cont/dir'?…: a query string (a SAS token?)" in str(caught.value)
