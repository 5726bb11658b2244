"""A recorded cluster's simulated nodes: each runs the cluster's setup task (``--setup-task``) once, before the
first job that uses it, as a Batch AI node ran it when it was allocated.

Node ``i`` is ``<cluster dir>/nodes/node-<i>/``: ``mounts/`` is its ``$AZ_BATCHAI_MOUNT_ROOT``, ``setup.json`` says
how the task ended. A file share (and a file server) is its local directory itself. A blob container
(``azureBlobFileSystems``) is a lazy FUSE mount (:mod:`azbai.local.blobfuse`) while the task runs: a file is fetched
when the task opens it, and the new and changed files and the removals are written back when it ends (a blob never
opened is left as it is); the mount point then links to the mount's cache (``mount-cache/``). Where FUSE is not
available (``$AZBAI_BLOB_MOUNT``, as for jobs: ``auto``, ``fuse`` or ``mirror``), a mirror downloaded before the task
and written back after it the same way (changed files uploaded, removed ones deleted). The mount lives exactly as long as the task: this process serves it
while it waits for the task, so a background process the task leaves behind loses it when the task ends (on Batch AI
it lasted as long as the node); a process killed mid-task leaves a dead mount, detached when the task runs again. The task's stdout and stderr go where Batch AI put them:
``<--setup-task-output>/<stdOutErrPathSuffix>/<node id>/stdouterr/stdout.txt`` (``stderr.txt``), the prefix read with
``$AZ_BATCHAI_MOUNT_ROOT`` set. The command line is a shell command line (the Batch AI field is one), run with bash.
A task that fails leaves its node unusable, as on Batch AI: the job is not started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from azbai.az.context import Context, timestamp
from azbai.errors import AzbaiError, AzError
from azbai.local import blobfuse, transfer
from azbai.local.runner import BLOB_MOUNT_ENV, blob_mount_mode
from azbai.local.stores import Store, iter_local_files, open_store

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
    blobfuse.detach_under(node)  # a dead mount of an earlier try, whose process was killed mid-task
    mounts.mkdir(parents=True, exist_ok=True)
    lazy: list[blobfuse.LazyMount] = []
    try:
        mirrors = _mount(ctx, cluster, node, lazy)
        code, outdir = _call(ctx, cluster, task, mounts, nid)
    finally:
        for mount in lazy:
            mount.stop()
            blobfuse.retire(mount.mountpoint, mount.cache)
    try:
        for mount in lazy:
            blobfuse.write_back(mount.store, mount.prefix, mount.cache, mount.snapshot, mount.journal)
        for store, mirror, listed in mirrors:
            transfer.upload(mirror, store, "", incremental=True)
            kept = {rel for _, rel in iter_local_files(mirror)}
            for rel in sorted(listed - kept):  # what the task removed, as a blob mount would have
                store.delete(rel, missing_ok=True)
    except AzbaiError as exc:
        raise AzError(
            f"the setup task of cluster '{cluster['name']}' ran on node {nid}, but what it wrote to its blob "
            f"mounts cannot be written back: {exc}"
        ) from exc
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


def _call(
    ctx: Context, cluster: dict[str, Any], task: dict[str, Any], mounts: Path, nid: str
) -> tuple[int, Path]:
    """Run the setup task to its end: its exit code and its stdouterr folder."""
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
    return code, outdir


def _mount(ctx: Context, cluster: dict[str, Any], node: Path, lazy: list[blobfuse.LazyMount]) -> list[Any]:
    """Mount the cluster's volumes under ``node/mounts``: the blob mirrors are returned (store, directory, the
    blobs listed when it was made), the lazy mounts appended to ``lazy`` as each is made (so that a failure later
    still unmounts them)."""
    from azbai.source.storage_names import parse_file_share_url

    mounts = node / "mounts"

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
    for index, blob in enumerate(volumes.get("azureBlobFileSystems") or []):
        store = open_store(ctx.workspace, blob["accountName"], container=blob["containerName"])
        mirror = mounts / blob["relativeMountPath"]
        cache = node / "mount-cache" / str(index)
        mount = _lazy(ctx, store, mirror, cache)
        if mount is not None:
            lazy.append(mount)
            continue
        mirror.mkdir(parents=True, exist_ok=True)
        transfer.download(store, "", mirror, incremental=True)
        listed = {e.path for e in store.list("")} if store.root_exists() else set()
        mirrors.append((store, mirror, listed))
    for nfs in volumes.get("fileServers") or []:
        directory = ctx.workspace.cluster_mount_dir(nfs["relativeMountPath"])
        directory.mkdir(parents=True, exist_ok=True)
        link = mounts / nfs["relativeMountPath"]
        if not link.exists():
            link.symlink_to(directory, target_is_directory=True)
    return mirrors


def _lazy(ctx: Context, store: Store, point: Path, cache: Path) -> blobfuse.LazyMount | None:
    """A container mounted with FUSE at ``point``, or None where the mirror is to be used (said in one log line)."""
    setting = blob_mount_mode(ctx.environ)
    reason = f"{BLOB_MOUNT_ENV}=mirror" if setting == "mirror" else blobfuse.fuse_unavailable()
    if reason is None:
        with contextlib.suppress(OSError):
            if point.is_symlink():  # the link an earlier try left to its cache
                point.unlink()
        # an earlier try of the task (killed mid-way) was never written back; the task runs again from the start,
        # on a node as fresh as Batch AI's, so what it fetched and wrote then is not taken for this try's
        shutil.rmtree(cache, ignore_errors=True)
        cache.with_name(f"{cache.name}.removed").unlink(missing_ok=True)
        mount = blobfuse.LazyMount(store, "", point, cache, cache.with_name(f"{cache.name}.removed"))
        try:
            mount.start()
        except blobfuse.FuseUnavailable as exc:
            reason = str(exc)
        except AzbaiError as exc:
            raise AzError(f"cannot mount {store.url_for('')} for the setup task: {exc}") from exc
        else:
            log.info(
                "%s is mounted with FUSE at %s (files are fetched as they are opened)",
                store.url_for(""),
                point,
            )
            return mount
    if setting == "fuse":
        raise AzError(f"{BLOB_MOUNT_ENV}=fuse, but a FUSE mount cannot be made here: {reason}")
    log.info(
        "%s is mirrored at %s before the setup task (no FUSE mount: %s)", store.url_for(""), point, reason
    )
    return None
