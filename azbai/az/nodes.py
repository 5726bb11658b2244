"""A recorded cluster's simulated nodes: each runs the cluster's setup task (``--setup-task``) once, before the
first job that uses it, as a Batch AI node ran it when it was allocated.

Node ``i`` is ``<cluster dir>/nodes/node-<i>/``: ``mounts/`` is its ``$AZ_BATCHAI_MOUNT_ROOT`` (a file share is its
local directory itself; a blob container is a mirror downloaded before the task and uploaded after it, changed files
only), ``setup.json`` says how the task ended. The task's stdout and stderr go where Batch AI put them:
``<--setup-task-output>/<stdOutErrPathSuffix>/<node id>/stdouterr/stdout.txt`` (``stderr.txt``), the prefix read with
``$AZ_BATCHAI_MOUNT_ROOT`` set. The command line is a shell command line (the Batch AI field is one), run with bash.
A task that fails leaves its node unusable, as on Batch AI: the job is not started.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from azbai.az.context import Context, timestamp
from azbai.errors import AzError
from azbai.local import transfer
from azbai.local.stores import open_store

log = logging.getLogger(__name__)


def node_id(cluster: str, index: int) -> str:
    """A simulated node's id (Batch AI's were ``tvm-…``)."""
    return f"tvm-{cluster.lower()}-{index}"


def prepare_nodes(ctx: Context, cluster: dict[str, Any], directory: Path, count: int) -> list[str]:
    """Run the setup task on nodes ``0..count-1`` that have not run it yet; the ids of the nodes it ran on."""
    task = ((cluster.get("nodeSetup") or {}).get("setupTask")) or None
    if not task:
        return []
    ran = []
    for index in range(count):
        node = directory / "nodes" / f"node-{index}"
        state = node / "setup.json"
        if state.exists():
            done = ctx.ns.load(state)
            if done["exitCode"] != 0:
                raise AzError(
                    f"node {done['nodeId']} of cluster '{cluster['name']}' is unusable: its setup task failed with "
                    f"exit code {done['exitCode']} (see {done['stdouterr']}); delete and recreate the cluster"
                )
            continue
        ran.append(_run_setup(ctx, cluster, task, node, node_id(cluster["name"], index)))
    return ran


def _run_setup(ctx: Context, cluster: dict[str, Any], task: dict[str, Any], node: Path, nid: str) -> str:
    mounts = node / "mounts"
    mounts.mkdir(parents=True, exist_ok=True)
    mirrors = _mount(ctx, cluster, mounts)
    env = {**ctx.environ, "AZ_BATCHAI_MOUNT_ROOT": str(mounts), "AZ_BATCHAI_NODE_ID": nid}
    for variable in task.get("environmentVariables") or []:
        env[variable["name"]] = str(variable.get("value") or "")
    prefix = os.path.expandvars(task["stdOutErrPathPrefix"].replace("$AZ_BATCHAI_MOUNT_ROOT", str(mounts)))
    outdir = Path(prefix) / task["stdOutErrPathSuffix"] / nid / "stdouterr"
    outdir.mkdir(parents=True, exist_ok=True)
    log.info("running the setup task of cluster %s on %s", cluster["name"], nid)
    with open(outdir / "stdout.txt", "wb") as out, open(outdir / "stderr.txt", "wb") as err:
        try:
            code = subprocess.call(
                ["bash", "-c", task["commandLine"]],
                env=env,
                cwd=mounts,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            raise AzError(f"cannot run the setup task of cluster '{cluster['name']}': {exc}") from exc
    for store, mirror in mirrors:
        transfer.upload(mirror, store, "", incremental=True)
    ctx.ns.save(
        node / "setup.json",
        {"nodeId": nid, "exitCode": code, "endTime": timestamp(), "stdouterr": str(outdir)},
    )
    if code != 0:
        raise AzError(
            f"the setup task of cluster '{cluster['name']}' failed on node {nid} with exit code {code}: the node is "
            f"unusable (see {outdir / 'stderr.txt'})"
        )
    ctx.note(f"setup task of cluster '{cluster['name']}' ran on node {nid}: {outdir}")
    return nid


def _mount(ctx: Context, cluster: dict[str, Any], mounts: Path) -> list[Any]:
    from azbai.source.storage_names import parse_file_share_url

    volumes = (cluster.get("nodeSetup") or {}).get("mountVolumes") or {}
    mirrors = []
    for share in volumes.get("azureFileShares") or []:
        parsed = parse_file_share_url(share["azureFileUrl"])
        if parsed is None:
            continue
        target = ctx.workspace.share_dir(parsed.account, parsed.share)
        target.mkdir(parents=True, exist_ok=True)
        link = mounts / share["relativeMountPath"]
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(
                target / parsed.directory if parsed.directory else target, target_is_directory=True
            )
    for blob in volumes.get("azureBlobFileSystems") or []:
        store = open_store(ctx.workspace, blob["accountName"], container=blob["containerName"])
        mirror = mounts / blob["relativeMountPath"]
        mirror.mkdir(parents=True, exist_ok=True)
        transfer.download(store, "", mirror, incremental=True)
        mirrors.append((store, mirror))
    for nfs in volumes.get("fileServers") or []:
        directory = ctx.workspace.cluster_mount_dir(nfs["relativeMountPath"])
        directory.mkdir(parents=True, exist_ok=True)
        link = mounts / nfs["relativeMountPath"]
        if not link.exists():
            link.symlink_to(directory, target_is_directory=True)
    return mirrors
