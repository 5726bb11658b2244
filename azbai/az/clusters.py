"""``az batchai cluster …``: a cluster is a record of what ``cluster create`` asked for.

VM size, node count, the mounts of ``-f cluster.json``, ``--afs-*``/``--bfs-*``/``--nfs`` and ``--use-auto-storage``
(the ``batchaishare`` share and ``batchaicontainer`` container of an account in group ``batchaiautostorage``, at
``$AZ_BATCHAI_MOUNT_ROOT/autoafs`` and ``autobfs``), the setup task. ``job create -c CLUSTER`` turns it into the
cluster file azbai reads beside the job (:func:`cluster_file`) and runs the setup task on the simulated nodes the job
uses (:mod:`azbai.az.nodes`). Mount keys are never recorded: the records name accounts only.
"""

from __future__ import annotations

import json
import secrets as random_names
import uuid
from pathlib import Path
from typing import Any

from azbai.az.context import Context, Result, timestamp
from azbai.az.shapes import node_setup, stored_node_setup
from azbai.az.state import SUBSCRIPTION, check_resource_name, resource_id
from azbai.az.workspaces import experiment_create, workspace_create
from azbai.errors import AzError
from azbai.source.placeholders import MSG_CONFIGURE_STORAGE_ACCOUNT, StorageAccount
from azbai.source.storage_names import ACCOUNT_PLACEHOLDER

AUTO_STORAGE_GROUP = "batchaiautostorage"
#: where the 2017 CLI's commands (no workspace, no experiment) put their clusters and jobs
LEGACY_NAME = "default"
AUTO_STORAGE_SHARE, AUTO_STORAGE_SHARE_PATH = "batchaishare", "autoafs"
AUTO_STORAGE_CONTAINER, AUTO_STORAGE_CONTAINER_PATH = "batchaicontainer", "autobfs"

# -- clusters -----------------------------------------------------------------------------------------------------


def cluster_create(
    ctx: Context,
    resource_group: str,
    workspace: str | None,
    name: str,
    config_file: str | None,
    vm_size: str | None,
    target: int | None,
    min_nodes: int | None,
    max_nodes: int | None,
    use_auto_storage: bool,
    storage_account_name: str | None,
    storage_account_key: str | None,
    afs_name: str | None,
    afs_mount_path: str,
    bfs_name: str | None,
    bfs_mount_path: str,
    nfs: str | None,
    nfs_mount_path: str,
    setup_task: str | None,
    setup_task_output: str | None,
    user_name: str | None,
    **_: Any,
) -> Result:
    """``az batchai cluster create``: records the cluster (nothing is allocated; its nodes are simulated)."""
    workspace = workspace or legacy(ctx, resource_group)
    ws = ctx.ns.batchai_workspace(resource_group, workspace)
    group = ctx.ns.group(resource_group)["name"]
    directory = ctx.ns.cluster_dir(group, ws["name"], check_resource_name(name, "cluster"))
    if (directory / "cluster.json").exists():
        raise AzError(f'Cluster "{name}" already exists.')
    if setup_task and not setup_task_output:
        raise AzError("--setup-task requires providing of --setup-task-output")
    params = _cluster_params(config_file)
    storage = StorageAccount.resolve(storage_account_name, storage_account_key, ctx.environ)
    setup = (
        params.setdefault("nodeSetup", {})
        if (params.get("nodeSetup") or afs_name or bfs_name or nfs or use_auto_storage or setup_task)
        else {}
    )
    volumes = setup.get("mountVolumes") or {}
    volumes = _resolve_volumes(ctx, volumes, storage, config_file)
    if (afs_name or bfs_name) and not storage.name:
        raise AzError(MSG_CONFIGURE_STORAGE_ACCOUNT)
    if afs_name:
        volumes.setdefault("azureFileShares", []).append(
            share_mount(storage.name or "", afs_name, afs_mount_path)
        )
    if bfs_name:
        volumes.setdefault("azureBlobFileSystems", []).append(
            container_mount(storage.name or "", bfs_name, bfs_mount_path)
        )
    if nfs:
        volumes.setdefault("fileServers", []).append(
            {
                "fileServer": {"id": nfs},
                "mountOptions": "rw",
                "relativeMountPath": nfs_mount_path,
                "sourceDirectory": None,
            }
        )
        ctx.note(
            f"--nfs {nfs}: a Batch AI file server is a local directory here ({ctx.workspace.cluster_mount_dir(nfs_mount_path)})"
        )
    if use_auto_storage:
        account = _auto_storage(ctx, ws["location"])
        volumes.setdefault("azureFileShares", []).append(
            share_mount(account, AUTO_STORAGE_SHARE, AUTO_STORAGE_SHARE_PATH)
        )
        volumes.setdefault("azureBlobFileSystems", []).append(
            container_mount(account, AUTO_STORAGE_CONTAINER, AUTO_STORAGE_CONTAINER_PATH)
        )
    if volumes:
        setup["mountVolumes"] = volumes
    if setup_task:
        setup["setupTask"] = {
            "commandLine": setup_task,
            "stdOutErrPathPrefix": setup_task_output,
            "runElevated": False,
        }
    task = setup.get("setupTask") if setup else None
    if task:
        task["stdOutErrPathSuffix"] = (
            f"{SUBSCRIPTION}/{group}/workspaces/{ws['name']}/clusters/{name}/{uuid.uuid4()}"
        )
    nodes = _node_counts(params, target, min_nodes, max_nodes)
    now = timestamp()
    record = {
        "name": name,
        "vmSize": (vm_size or params.get("vmSize") or "STANDARD_NC6").upper(),
        "scaleSettings": nodes,
        "nodeSetup": stored_node_setup(setup) if setup else None,
        "vmPriority": params.get("vmPriority") or "dedicated",
        "adminUserName": user_name
        or (params.get("userAccountSettings") or {}).get("adminUserName")
        or _user(ctx),
        "creationTime": now,
    }
    ctx.ns.save(directory / "cluster.json", record)
    return Result(cluster_json(group, ws["name"], record))


def legacy(ctx: Context, group: str, workspace: str | None = None) -> str:
    """The workspace (or experiment) 'default' that stands for the 2017 CLI's none; created when missing."""
    if workspace is None:
        path = ctx.ns.workspace_dir(group, LEGACY_NAME) / "workspace.json"
        if not path.exists():
            workspace_create(ctx, group, LEGACY_NAME, None)
        ctx.note(f"no --workspace/-w (the 2017 CLI had none): using workspace '{LEGACY_NAME}'")
    else:
        path = ctx.ns.experiment_dir(group, workspace, LEGACY_NAME) / "experiment.json"
        if not path.exists():
            experiment_create(ctx, group, workspace, LEGACY_NAME)
        ctx.note(f"no --experiment/-e (the 2017 CLI had none): using experiment '{LEGACY_NAME}'")
    return LEGACY_NAME


def _user(ctx: Context) -> str:
    return ctx.environ.get("USER") or "azbai"


def _cluster_params(config_file: str | None) -> dict[str, Any]:
    if not config_file:
        return {}
    from azbai.source.reader import load_cluster

    load_cluster(config_file)  # every problem of the file, as azbai reads cluster files (SpecError)
    data = json.loads(Path(config_file).read_text(encoding="utf-8"))
    return dict(data.get("properties", data))


def _resolve_volumes(
    ctx: Context, volumes: dict[str, Any], storage: StorageAccount, config_file: str | None
) -> dict[str, Any]:
    """The cluster file's mounts with the placeholders replaced as the CLI replaced them; keys are dropped."""
    if not volumes:
        return {}
    from azbai.source.reader import load_cluster

    assert config_file is not None
    loaded = load_cluster(config_file, storage=storage)
    for diagnostic in loaded.diagnostics:
        if (
            diagnostic.code == "unresolved-placeholder"
            and "accountName" in diagnostic.path + diagnostic.message
        ):
            raise AzError(MSG_CONFIGURE_STORAGE_ACCOUNT)
    resolved = loaded.properties.node_setup.mount_volumes if loaded.properties.node_setup else None
    out: dict[str, Any] = {
        k: v for k, v in volumes.items() if k not in ("azureFileShares", "azureBlobFileSystems")
    }
    if resolved is not None:
        shares = [
            {
                "accountName": s.account_name,
                "azureFileUrl": s.azure_file_url,
                "relativeMountPath": s.relative_mount_path,
            }
            for s in resolved.azure_file_shares
        ]
        blobs = [
            {
                "accountName": b.account_name,
                "containerName": b.container_name,
                "relativeMountPath": b.relative_mount_path,
            }
            for b in resolved.azure_blob_file_systems
        ]
        for item in shares + blobs:
            if item["accountName"] == ACCOUNT_PLACEHOLDER or ACCOUNT_PLACEHOLDER in str(
                item.get("azureFileUrl", "")
            ):
                raise AzError(MSG_CONFIGURE_STORAGE_ACCOUNT)
        if shares:
            out["azureFileShares"] = shares
        if blobs:
            out["azureBlobFileSystems"] = blobs
    return out


def share_mount(account: str, share: str, path: str) -> dict[str, Any]:
    """An Azure File share mount of ``account`` at ``path`` (as ``--afs-name`` added it; no key)."""
    if not path:
        raise AzError("Azure File share relative mount path cannot be empty.")
    return {
        "accountName": account,
        "azureFileUrl": f"https://{account}.file.core.windows.net/{share}",
        "relativeMountPath": path,
    }


def container_mount(account: str, container: str, path: str) -> dict[str, Any]:
    """A blob container mount of ``account`` at ``path`` (as ``--bfs-name`` added it; no key)."""
    if not path:
        raise AzError("Azure Storage Container relative mount path cannot be empty.")
    return {"accountName": account, "containerName": container, "relativeMountPath": path}


def _auto_storage(ctx: Context, location: str) -> str:
    """The auto-storage account (in group ``batchaiautostorage``, created when missing) with its share and container."""
    from azbai.az.storage import account_create, container_create, group_create, share_create

    if not (ctx.ns.group_dir(AUTO_STORAGE_GROUP) / "group.json").exists():
        group_create(ctx, AUTO_STORAGE_GROUP, location)
    existing = ctx.ns.accounts_of(AUTO_STORAGE_GROUP)
    account = existing[0]["name"] if existing else "bai" + random_names.token_hex(10)
    if not existing:
        account_create(ctx, account, AUTO_STORAGE_GROUP, location, "Standard_LRS", None)
    share_create(ctx, AUTO_STORAGE_SHARE, account, None)
    container_create(ctx, AUTO_STORAGE_CONTAINER, account, None)
    ctx.note(
        f"auto-storage account '{account}' (group {AUTO_STORAGE_GROUP}): share {AUTO_STORAGE_SHARE}, container {AUTO_STORAGE_CONTAINER}"
    )
    return account


def _node_counts(
    params: dict[str, Any], target: int | None, low: int | None, high: int | None
) -> dict[str, Any]:
    scale = params.get("scaleSettings") or {}
    if low is not None or high is not None:
        low = low if low is not None else 0
        high = high if high is not None else low
        if low > high:
            raise AzError("--min cannot be greater than --max")
        return {
            "autoScale": {
                "initialNodeCount": target or low,
                "maximumNodeCount": high,
                "minimumNodeCount": low,
            },
            "manual": None,
        }
    if target is not None:
        return {"autoScale": None, "manual": {"nodeDeallocationOption": "requeue", "targetNodeCount": target}}
    if scale.get("manual") or scale.get("autoScale"):
        return {"autoScale": scale.get("autoScale"), "manual": scale.get("manual")}
    return {"autoScale": None, "manual": {"nodeDeallocationOption": "requeue", "targetNodeCount": 1}}


def node_count(record: dict[str, Any]) -> int:
    """How many nodes a recorded cluster has (an auto-scale cluster: its maximum, which jobs may use)."""
    scale = record["scaleSettings"]
    if scale.get("manual"):
        return int(scale["manual"]["targetNodeCount"])
    return int(scale["autoScale"]["maximumNodeCount"])


def cluster_json(group: str, workspace: str, record: dict[str, Any]) -> dict[str, Any]:
    """A cluster as ``az batchai cluster show`` printed it."""
    count = node_count(record)
    return {
        "allocationState": "steady",
        "allocationStateTransitionTime": record["creationTime"],
        "creationTime": record["creationTime"],
        "currentNodeCount": count,
        "errors": None,
        "id": resource_id(group, "Microsoft.BatchAI/workspaces", workspace, "clusters", record["name"]),
        "name": record["name"],
        "nodeSetup": node_setup(record["nodeSetup"]),
        "nodeStateCounts": {
            "idleNodeCount": count,
            "leavingNodeCount": 0,
            "preparingNodeCount": 0,
            "runningNodeCount": 0,
            "unusableNodeCount": 0,
        },
        "provisioningState": "succeeded",
        "provisioningStateTransitionTime": record["creationTime"],
        "resourceGroup": group,
        "scaleSettings": record["scaleSettings"],
        "subnet": None,
        "type": "Microsoft.BatchAI/workspaces/clusters",
        "userAccountSettings": {
            "adminUserName": record["adminUserName"],
            "adminUserPassword": None,
            "adminUserSshPublicKey": None,
        },
        "virtualMachineConfiguration": {
            "imageReference": {
                "offer": "UbuntuServer",
                "publisher": "Canonical",
                "sku": "16.04-LTS",
                "version": "latest",
                "virtualMachineImageId": None,
            }
        },
        "vmPriority": record["vmPriority"],
        "vmSize": record["vmSize"],
    }


def cluster_show(ctx: Context, resource_group: str, workspace: str, name: str, **_: Any) -> Result:
    """``az batchai cluster show``."""
    record = ctx.ns.cluster(resource_group, workspace, name)
    return Result(
        cluster_json(
            ctx.ns.group(resource_group)["name"],
            ctx.ns.batchai_workspace(resource_group, workspace)["name"],
            record,
        )
    )


def cluster_list(ctx: Context, resource_group: str, workspace: str, **_: Any) -> Result:
    """``az batchai cluster list -g GROUP -w WORKSPACE``."""
    ws = ctx.ns.batchai_workspace(resource_group, workspace)
    group = ctx.ns.group(resource_group)["name"]
    base = ctx.ns.workspace_dir(resource_group, workspace)
    return Result(
        [cluster_json(group, ws["name"], r) for r in ctx.ns.records("clusters/*/cluster.json", base)]
    )


def cluster_delete(
    ctx: Context, resource_group: str, workspace: str, name: str, yes: bool, **_: Any
) -> Result:
    """``az batchai cluster delete … [-y]``."""
    ctx.ns.cluster(resource_group, workspace, name)
    if not yes and not ctx.confirm("Are you sure you want to perform this operation?"):
        return Result(printed=False)
    ctx.ns.remove(ctx.ns.cluster_dir(resource_group, workspace, name))
    return Result(printed=False)


def cluster_node_list(ctx: Context, resource_group: str, workspace: str, cluster: str, **_: Any) -> Result:
    """``az batchai cluster node list``: the simulated nodes (there is no SSH to them: port 0)."""
    from azbai.az.nodes import node_id

    record = ctx.ns.cluster(resource_group, workspace, cluster)
    return Result(
        [
            {"ipAddress": "127.0.0.1", "nodeId": node_id(record["name"], i), "port": 0}
            for i in range(node_count(record))
        ]
    )


def cluster_file(directory: Path, record: dict[str, Any]) -> Path:
    """The cluster.json azbai reads beside a job: the recorded VM size, nodes and mounts (no keys)."""
    volumes = (record.get("nodeSetup") or {}).get("mountVolumes")
    properties: dict[str, Any] = {
        "vmSize": record["vmSize"],
        "scaleSettings": {k: v for k, v in record["scaleSettings"].items() if v},
    }
    if volumes:
        properties["nodeSetup"] = {"mountVolumes": volumes}
    path = directory / "azbai-cluster.json"
    path.write_text(json.dumps({"properties": properties}, indent=2), encoding="utf-8")
    return path


def cluster_resize(
    ctx: Context, resource_group: str, workspace: str, name: str, target: int, **_: Any
) -> Result:
    """``az batchai cluster resize -t N``: the simulated node count."""
    record = ctx.ns.cluster(resource_group, workspace, name)
    record["scaleSettings"] = {
        "autoScale": None,
        "manual": {"nodeDeallocationOption": "requeue", "targetNodeCount": target},
    }
    ctx.ns.save(ctx.ns.cluster_dir(resource_group, workspace, name) / "cluster.json", record)
    group = ctx.ns.group(resource_group)["name"]
    return Result(cluster_json(group, ctx.ns.batchai_workspace(resource_group, workspace)["name"], record))


def cluster_auto_scale(
    ctx: Context,
    resource_group: str,
    workspace: str,
    name: str,
    min_nodes: int,
    max_nodes: int,
    **_: Any,
) -> Result:
    """``az batchai cluster auto-scale --min N --max M``: jobs may use up to ``M`` simulated nodes."""
    record = ctx.ns.cluster(resource_group, workspace, name)
    record["scaleSettings"] = _node_counts({}, None, min_nodes, max_nodes)
    ctx.ns.save(ctx.ns.cluster_dir(resource_group, workspace, name) / "cluster.json", record)
    group = ctx.ns.group(resource_group)["name"]
    return Result(cluster_json(group, ctx.ns.batchai_workspace(resource_group, workspace)["name"], record))
