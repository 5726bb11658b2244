"""``az batchai job …``, locally: ``job create -c CLUSTER`` reads job.json beside the recorded cluster's file (its
``$AZ_BATCHAI_MOUNT_ROOT`` mounts, VM size, node count), runs the cluster's setup task on each simulated node the job
uses (:mod:`azbai.az.nodes`) and starts an ordinary local job (``azbai job``) in the job book under an experiment key
of its own group, workspace and experiment. What the commands print is Batch AI's JSON — the same field names, so
``--query`` expressions written for Azure work here.

Keys (``--storage-account-key``, inline ``accountKey`` values, job ``secrets``) are kept in memory only: the
records hold the names of accounts, never their keys, and what is printed has them as ``null``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from azbai.az.clusters import cluster_file, container_mount, legacy, node_count, share_mount
from azbai.az.context import Context, Result
from azbai.az.shapes import stored
from azbai.az.state import SUBSCRIPTION, book_experiment, check_resource_name, resource_id
from azbai.errors import AzError, JobError
from azbai.local.azurite import DEV_ACCOUNT
from azbai.source.placeholders import MSG_CONFIGURE_STORAGE_ACCOUNT, StorageAccount
from azbai.source.storage_names import ACCOUNT_PLACEHOLDER, KEY_PLACEHOLDER

TOOL_TYPES = {
    "cntkSettings": "cntk",
    "caffeSettings": "caffe",
    "caffe2Settings": "caffe2",
    "chainerSettings": "chainer",
    "tensorFlowSettings": "tensorflow",
    "pyTorchSettings": "pytorch",
    "horovodSettings": "horovod",
    "customMpiSettings": "custommpi",
    "customToolkitSettings": "custom",
}

# -- jobs ---------------------------------------------------------------------------------------------------------


def job_create(
    ctx: Context,
    resource_group: str,
    workspace: str | None,
    experiment: str | None,
    name: str,
    config_file: str | None,
    cluster: str | None,
    cluster_name: str | None,
    storage_account_name: str | None,
    storage_account_key: str | None,
    afs_name: str | None,
    afs_mount_path: str,
    bfs_name: str | None,
    bfs_mount_path: str,
    nfs: str | None,
    nfs_mount_path: str,
    **_: Any,
) -> Result:
    """``az batchai job create -n JOB -c CLUSTER -g -w -e -f job.json``: the job starts in the background."""
    from azbai.az.nodes import prepare_nodes
    from azbai.facade import SourceOptions, read, secret_values
    from azbai.local.service import create_job
    from azbai.plan.model import SEGMENT_TEMPLATE

    if (
        config_file is None
        and cluster
        and cluster.endswith(".json")
        and Path(cluster).is_file()
        and cluster_name
    ):
        # the 2017 CLI: `-r CLUSTER -c job.json`
        config_file, cluster = cluster, cluster_name
        ctx.note("-r CLUSTER -c job.json is the 2017 CLI's spelling; today's is -c CLUSTER -f job.json")
    cluster = cluster or cluster_name
    if workspace is None or experiment is None:
        workspace = workspace or legacy(ctx, resource_group)
        experiment = experiment or legacy(ctx, resource_group, workspace)
    if config_file is None:
        raise AzError("az batchai job create: error: the following arguments are required: --config-file/-f")
    exp = ctx.ns.experiment(resource_group, workspace, experiment)
    ws = ctx.ns.batchai_workspace(resource_group, workspace)
    group = ctx.ns.group(resource_group)["name"]
    path = ctx.ns.job_file(group, ws["name"], exp["name"], check_resource_name(name, "job"))
    if path.exists():
        raise AzError("A job with given name, experiment, workspace and resource group already exists.")
    raw = _job_properties(config_file)
    if not cluster:
        cluster = ((raw.get("cluster") or {}).get("id")) or None
        if not cluster:
            raise AzError("Please provide cluster information via command line or configuration file.")
    cluster_group, cluster_ws, cluster_id_name = _cluster_ref(cluster, group, ws["name"])
    record = ctx.ns.cluster(cluster_group, cluster_ws, cluster_id_name)
    cluster_dir = ctx.ns.cluster_dir(cluster_group, cluster_ws, cluster_id_name)
    storage = StorageAccount.resolve(storage_account_name, storage_account_key, ctx.environ)
    merge: tuple[str | Path, ...] = ()
    if afs_name or bfs_name or nfs:
        merge = (
            _with_mounts(
                path.parent.parent / "fragments",
                name,
                config_file,
                storage,
                afs_name,
                afs_mount_path,
                bfs_name,
                bfs_mount_path,
                nfs,
                nfs_mount_path,
            ),
        )
    if merge:
        raw["mountVolumes"] = json.loads(Path(merge[0]).read_text(encoding="utf-8"))["properties"][
            "mountVolumes"
        ]
    key = book_experiment(group, ws["name"], exp["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    options = SourceOptions(
        cluster=cluster_file(cluster_dir, record),
        merge=merge,
        storage_account=storage_account_name,
        storage_key=storage_account_key,
        name=name,
        experiment=key,
        vm_size=record["vmSize"],
        max_nodes=node_count(record),
    )
    loaded = read(config_file, options)
    local_accounts = {
        d.account_name
        for d in loaded.plan.datastores
        if ctx.ns.has_account(d.account_name) or d.account_name == DEV_ACCOUNT
    }
    for diagnostic in loaded.diagnostics:
        if diagnostic.file and diagnostic.file.endswith("azbai-cluster.json"):
            continue  # the recorded cluster: its keys were never kept, which is not the user's problem
        if diagnostic.code == "key-from-azure" and any(
            f"'{a}'" in diagnostic.message for a in local_accounts
        ):
            continue  # an account made with `az storage account create`: its key is the local one
        ctx.note(f"{diagnostic.file}: {diagnostic}")
    plan = loaded.plan
    job = plan.job_steps[0].job
    if job.node_count > node_count(record):
        raise AzError(
            f"the job asks for {job.node_count} node(s); cluster '{record['name']}' has {node_count(record)} "
            "(Batch AI would have queued it forever): resize the cluster or lower nodeCount"
        )
    prepare_nodes(ctx, record, cluster_dir, job.node_count)
    segment = SEGMENT_TEMPLATE.format(
        subscription=SUBSCRIPTION,
        resource_group=group,
        workspace=ws["name"],
        experiment=exp["name"],
        job=name,
        job_uuid=str(uuid.uuid4()),
    )
    local = create_job(
        ctx.workspace, plan, name=name, experiment=key, secrets=secret_values(plan), segment=segment
    )
    from azbai.source.model import JobProperties

    properties = stored(JobProperties, raw)
    volumes = properties.get("mountVolumes")
    if volumes and storage.name:
        properties["mountVolumes"] = _filled(volumes, storage.name)
    az_record = {
        "name": name,
        "experiment": exp["name"],
        "bookExperiment": key,
        "cluster": {
            "id": resource_id(
                cluster_group, "Microsoft.BatchAI/workspaces", cluster_ws, "clusters", record["name"]
            ),
            "resourceGroup": cluster_group,
        },
        "properties": properties,
        "creationTime": local.creation_time,
    }
    ctx.ns.save(path, az_record)
    return Result(job_json(ctx, group, ws["name"], az_record, local))


def _job_properties(config_file: str) -> dict[str, Any]:
    from azbai.source.reader import read_text

    try:
        data = json.loads(read_text(config_file))
    except ValueError:
        return {}  # azbai's reader reports it with its line and column
    if not isinstance(data, dict):
        return {}
    props = data.get("properties", data)
    return dict(props) if isinstance(props, dict) else {}


def _cluster_ref(cluster: str, group: str, workspace: str) -> tuple[str, str, str]:
    """A cluster name, or an ARM id (a cluster of another group or workspace), as the CLI read it."""
    parts = cluster.strip("/").split("/")
    if cluster.startswith("/subscriptions/") and len(parts) >= 10:
        lowered = [p.lower() for p in parts]
        try:
            return (
                parts[lowered.index("resourcegroups") + 1],
                parts[lowered.index("workspaces") + 1],
                parts[lowered.index("clusters") + 1],
            )
        except (ValueError, IndexError):
            pass
    return group, workspace, cluster


def _with_mounts(
    directory: Path,
    name: str,
    config_file: str,
    storage: StorageAccount,
    afs_name: str | None,
    afs_mount_path: str,
    bfs_name: str | None,
    bfs_mount_path: str,
    nfs: str | None,
    nfs_mount_path: str,
) -> Path:
    """A fragment merged over job.json: its mounts plus the job-level ``--afs-name``/``--bfs-name``/``--nfs`` ones.

    A merge replaces lists, so the fragment holds the file's own mounts too, without literal keys (a local mount
    needs none; the file's secrets stay in the file, read from there).
    """
    if (afs_name or bfs_name) and not storage.name:
        raise AzError(MSG_CONFIGURE_STORAGE_ACCOUNT)
    from azbai.source.model import MountVolumes

    raw = _job_properties(config_file).get("mountVolumes")
    volumes = stored(MountVolumes, raw) or {}
    for kind in ("azureFileShares", "azureBlobFileSystems"):
        originals = (raw or {}).get(kind)
        volumes[kind] = [
            _without_literal_key(v, o) for v, o in zip(volumes.get(kind) or [], originals or [], strict=False)
        ]
    if afs_name:
        volumes["azureFileShares"].append(share_mount(storage.name or "", afs_name, afs_mount_path))
    if bfs_name:
        volumes["azureBlobFileSystems"].append(container_mount(storage.name or "", bfs_name, bfs_mount_path))
    if nfs:
        volumes.setdefault("fileServers", []).append(
            {"fileServer": {"id": nfs}, "relativeMountPath": nfs_mount_path}
        )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name.lower()}.mounts.json"
    path.write_text(
        json.dumps({"properties": {"mountVolumes": {k: v for k, v in volumes.items() if v}}}),
        encoding="utf-8",
    )
    return path


def _without_literal_key(reference: Any, original: Any) -> Any:
    """A stored mount (no keys, no SAS) for the fragment: a literal key drops its ``credentials`` (the file keeps
    it), the storage key placeholder is put back (the reader replaces it)."""
    if not isinstance(reference, dict) or not isinstance(original, dict):
        return reference
    credentials = original.get("credentials")
    key = credentials.get("accountKey") if isinstance(credentials, dict) else None
    if key and key != KEY_PLACEHOLDER:
        return {k: v for k, v in reference.items() if k != "credentials"}
    if key == KEY_PLACEHOLDER and isinstance(reference.get("credentials"), dict):
        reference["credentials"]["accountKey"] = KEY_PLACEHOLDER
    return reference


def _filled(volumes: dict[str, Any], account: str) -> dict[str, Any]:
    text = json.dumps(volumes).replace(ACCOUNT_PLACEHOLDER, account)
    filled: dict[str, Any] = json.loads(text)
    from azbai.source.storage_names import parse_file_share_url

    for share in filled.get("azureFileShares") or []:
        if not share.get("accountName"):
            parsed = parse_file_share_url(share.get("azureFileUrl") or "")
            share["accountName"] = parsed.account if parsed else None
    return filled


_TOOLKIT_KEYS = (*TOOL_TYPES, "caffe2Settings")


def job_json(ctx: Context, group: str, workspace: str, record: dict[str, Any], local: Any) -> dict[str, Any]:
    """A job as ``az batchai job show`` printed it: its job.json's properties, with the local state."""
    from azbai.az.shapes import modelled, mount_volumes
    from azbai.source.model import JobProperties

    props = stored(JobProperties, record["properties"]) or {}  # a record of an older azbai may hold more
    tool = next((TOOL_TYPES[k] for k in TOOL_TYPES if props.get(k)), local.tool_type or "custom")
    out: dict[str, Any] = modelled(JobProperties, props)
    out["mountVolumes"] = mount_volumes(props.get("mountVolumes"))
    end = local.end_time
    out.update(
        {
            "cluster": record["cluster"],
            "constraints": {
                "maxWallClockTime": (props.get("constraints") or {}).get("maxWallClockTime")
                or "7 days, 0:00:00"
            },
            "creationTime": local.creation_time,
            "executionInfo": None
            if local.start_time is None
            else {
                "endTime": end,
                "errors": [{"code": "JobFailed", "details": None, "message": local.message}]
                if local.message
                else None,
                "exitCode": local.exit_code,
                "startTime": local.start_time,
            },
            "executionState": local.state,
            "executionStateTransitionTime": end or local.start_time or local.creation_time,
            "id": resource_id(
                group,
                "Microsoft.BatchAI/workspaces",
                workspace,
                "experiments",
                record["experiment"],
                "jobs",
                record["name"],
            ),
            "jobOutputDirectoryPathSegment": local.segment,
            "name": record["name"],
            "nodeCount": local.node_count,
            "provisioningState": "succeeded",
            "provisioningStateTransitionTime": local.creation_time,
            "resourceGroup": group,
            "schedulingPriority": props.get("schedulingPriority") or "normal",
            "toolType": tool,
            "type": "Microsoft.BatchAI/workspaces/experiments/jobs",
        }
    )
    return out


def _local_record(ctx: Context, record: dict[str, Any]) -> Any:
    from azbai.local.jobs import JobBook

    return JobBook(ctx.workspace).get(record["name"], record["bookExperiment"])


def _job(
    ctx: Context, resource_group: str, workspace: str, experiment: str, name: str
) -> tuple[str, str, dict[str, Any], Any]:
    record = ctx.ns.job(resource_group, workspace, experiment, name)
    group = ctx.ns.group(resource_group)["name"]
    ws = ctx.ns.batchai_workspace(resource_group, workspace)["name"]
    return group, ws, record, _local_record(ctx, record)


def job_show(
    ctx: Context, resource_group: str, workspace: str, experiment: str, name: str, **_: Any
) -> Result:
    """``az batchai job show -n JOB -g -w -e``."""
    group, ws, record, local = _job(ctx, resource_group, workspace, experiment, name)
    return Result(job_json(ctx, group, ws, record, local))


def job_list(ctx: Context, resource_group: str, workspace: str, experiment: str, **_: Any) -> Result:
    """``az batchai job list -g -w -e``."""
    ctx.ns.experiment(resource_group, workspace, experiment)
    group = ctx.ns.group(resource_group)["name"]
    ws = ctx.ns.batchai_workspace(resource_group, workspace)["name"]
    directory = ctx.ns.experiment_dir(resource_group, workspace, experiment)
    items = []
    for record in ctx.ns.records("jobs/*.json", directory):
        items.append(job_json(ctx, group, ws, record, _local_record(ctx, record)))
    return Result(sorted(items, key=lambda j: j["creationTime"]))


def job_wait(
    ctx: Context,
    resource_group: str,
    workspace: str,
    experiment: str,
    name: str,
    interval: float | None,
    **_: Any,
) -> Result:
    """``az batchai job wait``: the job's exit code becomes the command's, as the CLI did."""
    from azbai.errors import JobFailed
    from azbai.local.service import wait_job

    _group, _ws, record, local = _job(ctx, resource_group, workspace, experiment, name)
    ctx.note(f"Job submitted at {local.creation_time}")
    try:
        local = wait_job(local, poll=min(interval or 0.5, 15.0))
    except JobFailed:
        local = local.refresh()
        ctx.note(f'The job "{record["name"]}" in resource group "{resource_group}" failed.')
        ctx.note(f"Job failed with exit code {local.exit_code} at {local.end_time}")
        return Result(printed=False, exit_code=local.exit_code if local.exit_code not in (None, 0) else 1)
    ctx.note(f"Job state: {local.state}")
    ctx.note(f"Job completed at {local.end_time}")
    return Result(printed=False)


def job_terminate(
    ctx: Context, resource_group: str, workspace: str, experiment: str, name: str, yes: bool, **_: Any
) -> Result:
    """``az batchai job terminate … [-y]``."""
    from azbai.local.service import terminate_job

    _group, _ws, _record, local = _job(ctx, resource_group, workspace, experiment, name)
    if not yes and not ctx.confirm("Are you sure you want to perform this operation?"):
        return Result(printed=False)
    terminate_job(local)
    return Result(printed=False)


def job_delete(
    ctx: Context, resource_group: str, workspace: str, experiment: str, name: str, yes: bool, **_: Any
) -> Result:
    """``az batchai job delete … [-y]``: a running job is terminated first, as Batch AI did."""
    record = ctx.ns.job(resource_group, workspace, experiment, name)
    if not yes and not ctx.confirm("Are you sure you want to perform this operation?"):
        return Result(printed=False)
    forget_job(ctx, record, ctx.ns.job_file(resource_group, workspace, experiment, name))
    return Result(printed=False)


def forget_job(ctx: Context, record: dict[str, Any], path: Path, *, settle: float = 30.0) -> None:
    """Terminate a job if it still runs, then forget it (its record and work directory)."""
    import time

    from azbai.local.service import delete_job, terminate_job

    try:
        local = _local_record(ctx, record)
    except JobError:
        local = None  # its local record is gone already
    if local is not None:
        # a runner just started has not recorded its pid yet: wait for it rather than leave it running
        deadline = time.monotonic() + settle
        while not local.finished and local.runner_pid is None and time.monotonic() < deadline:
            time.sleep(0.1)
            local = local.refresh()
        if not local.finished:
            terminate_job(local)
        delete_job(local)
    ctx.ns.remove(path)


def job_file_list(
    ctx: Context,
    resource_group: str,
    workspace: str,
    experiment: str,
    job: str,
    output_directory_id: str,
    path: str | None,
    **_: Any,
) -> Result:
    """``az batchai job file list -j JOB -g -w -e [-d ID] [-p PATH]``: the entries of one directory."""
    from azbai.local.service import list_files

    _group, _ws, record, local = _job(ctx, resource_group, workspace, experiment, job)
    declared = {
        d.get("id") for d in record["properties"].get("outputDirectories") or [] if isinstance(d, dict)
    }
    if output_directory_id.lower() != "stdouterr" and output_directory_id not in declared:
        raise AzError(f"The job has no output directory '{output_directory_id}'.")
    if not local.refresh().finished and (
        (output_directory_id.lower() == "stdouterr" and local.refresh().stdouterr_dir is None)
        or (output_directory_id.lower() != "stdouterr" and output_directory_id not in local.refresh().outputs)
    ):
        return Result([])  # the job has not set its directories up yet: nothing to list, as on Batch AI
    base = (path or ".").strip("/")
    base = "" if base in ("", ".") else base + "/"
    entries: dict[str, dict[str, Any]] = {}
    for item in list_files(local, output_directory_id):
        if not item.name.startswith(base):
            continue
        rest = item.name[len(base) :]
        head, sep, _tail = rest.partition("/")
        if sep:
            entries.setdefault(head, _file_entry(head, None, None, directory=True))
        else:
            entries[head] = _file_entry(head, item.size, item.url)
    return Result([entries[k] for k in sorted(entries)])


def _file_entry(name: str, size: int | None, url: str | None, *, directory: bool = False) -> dict[str, Any]:
    modified = None
    if url and url.startswith("file://"):
        from datetime import datetime, timezone
        from urllib.parse import unquote, urlsplit

        try:
            stamp = Path(unquote(urlsplit(url).path)).stat().st_mtime
            modified = datetime.fromtimestamp(stamp, timezone.utc).isoformat()
        except OSError:
            modified = None
    return {
        "additionalProperties": {},
        "contentLength": size,
        "downloadUrl": url,
        "fileType": "directory" if directory else "file",
        "isDirectory": directory,
        "lastModified": modified,
        "name": name,
    }


def job_file_stream(
    ctx: Context,
    resource_group: str,
    workspace: str,
    experiment: str,
    job: str,
    file_name: str,
    output_directory_id: str,
    path: str | None,
    **_: Any,
) -> Result:
    """``az batchai job file stream -j JOB -f FILE``: prints it until the job ends."""
    from azbai.local.service import stream_file

    _group, _ws, _record, local = _job(ctx, resource_group, workspace, experiment, job)
    name = file_name if (path or ".").strip("/") in ("", ".") else f"{path.strip('/')}/{file_name}"  # type: ignore[union-attr]
    ctx.note(f'Streaming "{name}" of job "{job}" ({output_directory_id}) until the job ends.')
    return Result(stream=_stream(ctx, name, stream_file(local, name, output_directory_id)))


def _stream(ctx: Context, name: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The file's bytes; a job that ended without writing it is a warning, as the CLI said it (exit code 0)."""
    try:
        yield from chunks
    except JobError as exc:
        if "has no file" not in str(exc):
            raise
        ctx.note(f'The file "{name}" not found for the completed job.')


def job_node_list(
    ctx: Context, resource_group: str, workspace: str, experiment: str, job: str, **_: Any
) -> Result:
    """``az batchai job node list``: the simulated nodes the job ran on (no SSH locally: port 0)."""
    from azbai.az.nodes import node_id

    _group, _ws, record, local = _job(ctx, resource_group, workspace, experiment, job)
    cluster = record["cluster"]["id"].rsplit("/", 1)[-1]
    return Result(
        [
            {"ipAddress": "127.0.0.1", "nodeId": node_id(cluster, i), "port": 0}
            for i in range(local.node_count)
        ]
    )
