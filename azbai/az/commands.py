"""The command table of ``azbai az``: every az command the Batch AI recipes and manual use, with az's flags.

Covered: ``az group create|show|list|exists|delete``; ``az storage account create|show|list|delete|keys list|
show-connection-string``, ``share create|delete|list``, ``directory create``, ``file upload|upload-batch|download|list``,
``container create|list``, ``blob upload|upload-batch|download|list``; ``az batchai workspace|experiment
create|show|list|delete``, ``cluster create|show|list|delete|resize|auto-scale``, ``cluster node list``, ``job create|show|list|
wait|terminate|delete``, ``job file list|stream``, ``job node list``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from azbai.az import clusters, jobs, storage, tables, workspaces
from azbai.az.parser import Command, Flag, flag, ignored, switch

_LOCATION = "there is one location locally: it is recorded and shown, nothing else"
_NO_KEY = "a local account needs no key (it is never written anywhere)"

GROUP = flag("--resource-group", "-g", dest="resource_group", required=True, help="Name of resource group.")
GROUP_OPTIONAL = flag("--resource-group", "-g", dest="resource_group", help="Name of resource group.")
WORKSPACE = flag("--workspace", "-w", dest="workspace", required=True, help="Name of workspace.")
#: the 2017 CLI (API 2017-09-01-preview) had no workspaces and experiments: its commands name neither
LEGACY_WORKSPACE = flag(
    "--workspace", "-w", dest="workspace", help="Name of workspace (2017 CLI: none; 'default')."
)
LEGACY_EXPERIMENT = flag(
    "--experiment", "-e", dest="experiment", help="Name of experiment (2017 CLI: none; 'default')."
)
EXPERIMENT = flag("--experiment", "-e", dest="experiment", required=True, help="Name of experiment.")
YES = switch("--yes", "-y", help="Do not prompt for confirmation.")
NO_WAIT = ignored("--no-wait", takes_value=False, why="local commands are done when they return")
LOCATION = ignored("--location", "-l", why=_LOCATION)
STORAGE_ACCOUNT = (
    flag("--storage-account-name", help="Storage account name (else $AZURE_BATCHAI_STORAGE_ACCOUNT)."),
    flag("--storage-account-key", secret=True, help="Storage account key (never written anywhere)."),
)
MOUNTS = (
    flag("--afs-name", help="Name of an Azure File share to mount."),
    flag("--afs-mount-path", default="afs", help="Relative mount path for the Azure File share."),
    flag("--bfs-name", help="Name of a blob container to mount."),
    flag("--bfs-mount-path", default="bfs", help="Relative mount path for the container."),
    flag("--nfs", help="A Batch AI file server to mount (a local directory)."),
    flag("--nfs-mount-path", default="nfs", help="Relative mount path for the NFS."),
)
DATA_ACCOUNT = (
    flag("--account-name", help="Storage account name (else $AZURE_STORAGE_ACCOUNT)."),
    ignored("--account-key", why=_NO_KEY, secret=True),
    flag("--connection-string", secret=True, help="A connection string (only its AccountName is used)."),
    ignored("--sas-token", why=_NO_KEY, secret=True),
    ignored("--auth-mode", why="local accounts have one way in"),
    ignored("--timeout", why="local requests do not time out"),
)
NAME = flag("--name", "-n", dest="name", required=True, help="Name of the resource.")


def _c(
    path: str,
    flags: tuple[Flag, ...],
    handler: Callable[..., Any],
    summary: str,
    table: Callable[[Any], Any] | None = None,
) -> Command:
    return Command(tuple(path.split()), flags, handler, summary, table)


_JOB_FILE = (
    flag("--job", "-j", dest="job", required=True, help="Name of job."),
    GROUP,
    WORKSPACE,
    EXPERIMENT,
    flag("--output-directory-id", "-d", default="stdouterr", help="The id of the job's output directory."),
    flag("--path", "-p", default=".", help="Relative path in the given output directory."),
)

COMMANDS = [
    # -- resource groups
    _c(
        "group create",
        (
            flag("--name", "-n", "--resource-group", "-g", dest="name", required=True),
            ignored("--location", "-l", why=_LOCATION, required=True),
            ignored("--tags", why="tags are not kept"),
        ),
        storage.group_create,
        "Create a new resource group.",
    ),
    _c(
        "group show",
        (flag("--name", "-n", "--resource-group", "-g", dest="name", required=True),),
        storage.group_show,
        "Gets a resource group.",
    ),
    _c(
        "group list",
        (ignored("--tag", why="tags are not kept"),),
        storage.group_list,
        "List resource groups.",
    ),
    _c(
        "group exists",
        (flag("--name", "-n", "--resource-group", "-g", dest="name", required=True),),
        storage.group_exists,
        "Check if a resource group exists.",
    ),
    _c(
        "group delete",
        (flag("--name", "-n", "--resource-group", "-g", dest="name", required=True), YES, NO_WAIT),
        storage.group_delete,
        "Delete a resource group and everything in it.",
    ),
    # -- storage accounts
    _c(
        "storage account create",
        (
            NAME,
            GROUP,
            LOCATION,
            ignored("--sku", why="local storage has one tier"),
            ignored("--kind", why="local accounts are of one kind"),
            ignored("--https-only", why="the emulator speaks http on 127.0.0.1"),
            ignored("--access-tier", why="local storage has one tier"),
        ),
        storage.account_create,
        "Create a storage account (an Azurite account).",
    ),
    _c("storage account show", (NAME, GROUP_OPTIONAL), storage.account_show, "Show a storage account."),
    _c("storage account list", (GROUP_OPTIONAL,), storage.account_list, "List storage accounts."),
    _c(
        "storage account delete",
        (NAME, GROUP_OPTIONAL, YES),
        storage.account_delete,
        "Delete a storage account.",
    ),
    _c(
        "storage account keys list",
        (flag("--account-name", "-n", dest="account_name", required=True), GROUP_OPTIONAL),
        storage.account_keys,
        "List the access keys (the local key).",
    ),
    _c(
        "storage account show-connection-string",
        (NAME, GROUP_OPTIONAL),
        storage.account_connection_string,
        "Get the connection string (of the local emulator).",
    ),
    # -- shares, directories, files
    _c(
        "storage share create",
        (
            NAME,
            *DATA_ACCOUNT,
            ignored("--quota", why="local shares have no quota"),
            ignored("--metadata", why="metadata is not kept"),
            ignored("--fail-on-exist", takes_value=False, why="an existing share is reported as not created"),
        ),
        storage.share_create,
        "Create a file share (a local directory).",
    ),
    _c("storage share delete", (NAME, *DATA_ACCOUNT), storage.share_delete, "Delete a file share."),
    _c("storage share list", DATA_ACCOUNT, storage.share_list, "List file shares."),
    _c(
        "storage directory create",
        (
            NAME,
            flag("--share-name", "-s", dest="share_name", required=True),
            *DATA_ACCOUNT,
            ignored("--metadata", why="metadata is not kept"),
            ignored(
                "--fail-on-exist", takes_value=False, why="an existing directory is reported as not created"
            ),
        ),
        storage.directory_create,
        "Create a directory in a share.",
    ),
    _c(
        "storage file upload",
        (
            flag("--share-name", "-s", dest="share_name", required=True),
            flag("--source", required=True),
            flag("--path", "-p"),
            *DATA_ACCOUNT,
            ignored("--max-connections", why="local uploads are one copy"),
            ignored("--metadata", why="metadata is not kept"),
            ignored("--no-progress", takes_value=False, why="no progress is shown"),
            ignored("--validate-content", takes_value=False, why="every local upload is MD5-checked"),
            ignored("--content-type", why="content types are not kept for shares"),
        ),
        storage.file_upload,
        "Upload a file to a share.",
    ),
    _c(
        "storage file download",
        (
            flag("--share-name", "-s", dest="share_name", required=True),
            flag("--path", "-p", required=True),
            flag("--dest"),
            *DATA_ACCOUNT,
            ignored("--max-connections", why="local downloads are one copy"),
            ignored("--no-progress", takes_value=False, why="no progress is shown"),
        ),
        storage.file_download,
        "Download a file from a share.",
    ),
    _c(
        "storage file list",
        (flag("--share-name", "-s", dest="share_name", required=True), flag("--path", "-p"), *DATA_ACCOUNT),
        storage.file_list,
        "List the files and directories of a share's directory.",
    ),
    # -- containers and blobs
    _c(
        "storage container create",
        (
            NAME,
            *DATA_ACCOUNT,
            ignored("--public-access", why="the emulator is private to you"),
            ignored("--metadata", why="metadata is not kept"),
            ignored(
                "--fail-on-exist", takes_value=False, why="an existing container is reported as not created"
            ),
        ),
        storage.container_create,
        "Create a blob container (in Azurite).",
    ),
    _c("storage container list", DATA_ACCOUNT, storage.container_list, "List blob containers."),
    _c(
        "storage blob upload",
        (
            flag("--container-name", "-c", dest="container_name", required=True),
            flag("--file", "-f", required=True),
            flag("--name", "-n", required=True),
            *DATA_ACCOUNT,
            ignored("--type", "-t", why="every local blob is a block blob"),
            ignored("--content-type", why="content types are not kept"),
            ignored("--max-connections", why="local uploads are one copy"),
            ignored("--no-progress", takes_value=False, why="no progress is shown"),
            ignored("--validate-content", takes_value=False, why="every local upload is MD5-checked"),
        ),
        storage.blob_upload,
        "Upload a file to a blob.",
    ),
    _c(
        "storage blob upload-batch",
        (
            flag("--source", "-s", required=True),
            flag("--destination", "-d", required=True),
            flag("--destination-path"),
            flag("--pattern"),
            switch("--dryrun"),
            *DATA_ACCOUNT,
            ignored("--type", "-t", why="every local blob is a block blob"),
            ignored("--content-type", why="content types are not kept"),
            ignored("--max-connections", why="uploads run 8 at a time"),
            ignored("--no-progress", takes_value=False, why="no progress is shown"),
            ignored("--validate-content", takes_value=False, why="every local upload is MD5-checked"),
        ),
        storage.blob_upload_batch,
        "Upload the files of a local directory to a container.",
    ),
    _c(
        "storage file upload-batch",
        (
            flag("--source", "-s", required=True),
            flag("--destination", "-d", required=True),
            flag("--destination-path"),
            flag("--pattern"),
            switch("--dryrun"),
            *DATA_ACCOUNT,
            ignored("--content-type", why="content types are not kept"),
            ignored("--max-connections", why="uploads run 8 at a time"),
            ignored("--no-progress", takes_value=False, why="no progress is shown"),
            ignored("--validate-content", takes_value=False, why="every local upload is MD5-checked"),
        ),
        storage.file_upload_batch,
        "Upload the files of a local directory to a share.",
    ),
    _c(
        "storage blob download",
        (
            flag("--container-name", "-c", dest="container_name", required=True),
            flag("--name", "-n", required=True),
            flag("--file", "-f", required=True),
            *DATA_ACCOUNT,
            ignored("--max-connections", why="local downloads are one copy"),
            ignored("--no-progress", takes_value=False, why="no progress is shown"),
        ),
        storage.blob_download,
        "Download a blob to a file.",
    ),
    _c(
        "storage blob list",
        (
            flag("--container-name", "-c", dest="container_name", required=True),
            flag("--prefix"),
            *DATA_ACCOUNT,
            ignored("--num-results", why="every blob is listed"),
        ),
        storage.blob_list,
        "List the blobs of a container.",
    ),
    # -- Batch AI workspaces and experiments
    _c(
        "batchai workspace create",
        (GROUP, flag("--workspace", "-n", dest="workspace", required=True), LOCATION),
        workspaces.workspace_create,
        "Create a workspace.",
        tables.WORKSPACE,
    ),
    _c(
        "batchai workspace show",
        (GROUP, flag("--workspace", "-n", dest="workspace", required=True)),
        workspaces.workspace_show,
        "Show a workspace.",
        tables.WORKSPACE,
    ),
    _c(
        "batchai workspace list",
        (GROUP_OPTIONAL,),
        workspaces.workspace_list,
        "List workspaces.",
        tables.WORKSPACE,
    ),
    _c(
        "batchai workspace delete",
        (GROUP, flag("--workspace", "-n", dest="workspace", required=True), YES, NO_WAIT),
        workspaces.workspace_delete,
        "Delete a workspace.",
    ),
    _c(
        "batchai experiment create",
        (GROUP, WORKSPACE, NAME),
        workspaces.experiment_create,
        "Create an experiment.",
        tables.EXPERIMENT,
    ),
    _c(
        "batchai experiment show",
        (GROUP, WORKSPACE, NAME),
        workspaces.experiment_show,
        "Show an experiment.",
        tables.EXPERIMENT,
    ),
    _c(
        "batchai experiment list",
        (GROUP, WORKSPACE),
        workspaces.experiment_list,
        "List experiments.",
        tables.EXPERIMENT,
    ),
    _c(
        "batchai experiment delete",
        (GROUP, WORKSPACE, NAME, YES, NO_WAIT),
        workspaces.experiment_delete,
        "Delete an experiment.",
    ),
    # -- clusters
    _c(
        "batchai cluster create",
        (
            NAME,
            GROUP,
            LEGACY_WORKSPACE,
            flag("--config-file", "-f", help="A json file of create parameters (cluster.json / job.json)."),
            flag("--vm-size", "-s", help="VM size (recorded; the nodes are simulated)."),
            flag("--target", "-t", convert=int, help="Number of (simulated) nodes."),
            flag("--min", dest="min_nodes", convert=int),
            flag("--max", dest="max_nodes", convert=int),
            switch("--use-auto-storage"),
            *STORAGE_ACCOUNT,
            *MOUNTS,
            flag("--setup-task"),
            flag("--setup-task-output"),
            flag("--user-name", "-u"),
            ignored("--image", "-i", why="jobs run on this machine's OS"),
            ignored("--custom-image", why="jobs run on this machine's OS"),
            ignored("--vm-priority", why="local nodes are never pre-empted"),
            ignored(
                "--generate-ssh-keys", takes_value=False, why="there is no SSH to local nodes; no key is made"
            ),
            ignored("--ssh-key", "-k", why="there is no SSH to local nodes"),
            ignored(
                "--password",
                "-p",
                why="there is no admin account on local nodes (it is never written anywhere)",
                secret=True,
            ),
            ignored("--subnet", why="local nodes have no virtual network"),
            ignored("--vnet", why="local nodes have no virtual network"),
            LOCATION,
        ),
        clusters.cluster_create,
        "Create a cluster (recorded; its nodes are simulated).",
        tables.CLUSTER,
    ),
    _c(
        "batchai cluster show",
        (NAME, GROUP, WORKSPACE),
        clusters.cluster_show,
        "Show a cluster.",
        tables.CLUSTER,
    ),
    _c("batchai cluster list", (GROUP, WORKSPACE), clusters.cluster_list, "List clusters.", tables.CLUSTER),
    _c(
        "batchai cluster delete",
        (NAME, GROUP, WORKSPACE, YES, NO_WAIT),
        clusters.cluster_delete,
        "Delete a cluster.",
    ),
    _c(
        "batchai cluster resize",
        (NAME, GROUP, WORKSPACE, flag("--target", "-t", convert=int, required=True)),
        clusters.cluster_resize,
        "Resize a cluster.",
        tables.CLUSTER,
    ),
    _c(
        "batchai cluster auto-scale",
        (
            NAME,
            GROUP,
            WORKSPACE,
            flag("--min", dest="min_nodes", convert=int, required=True),
            flag("--max", dest="max_nodes", convert=int, required=True),
        ),
        clusters.cluster_auto_scale,
        "Set a cluster's auto-scale bounds.",
        tables.CLUSTER,
    ),
    _c(
        "batchai cluster node list",
        (flag("--cluster", "-c", dest="cluster", required=True), GROUP, WORKSPACE),
        clusters.cluster_node_list,
        "List a cluster's nodes.",
        tables.NODES,
    ),
    # -- jobs
    _c(
        "batchai job create",
        (
            NAME,
            GROUP,
            LEGACY_WORKSPACE,
            LEGACY_EXPERIMENT,
            flag("--config-file", "-f", help="A json file of create parameters (cluster.json / job.json)."),
            flag("--cluster", "-c", help="Name or ARM id of the cluster to run the job on."),
            flag("--cluster-name", "-r", dest="cluster_name", help="The 2017 CLI's cluster flag."),
            *STORAGE_ACCOUNT,
            *MOUNTS,
            LOCATION,
        ),
        jobs.job_create,
        "Create a job (it starts in the background).",
        tables.JOB,
    ),
    _c("batchai job show", (NAME, GROUP, WORKSPACE, EXPERIMENT), jobs.job_show, "Show a job.", tables.JOB),
    _c("batchai job list", (GROUP, WORKSPACE, EXPERIMENT), jobs.job_list, "List jobs.", tables.JOB),
    _c(
        "batchai job wait",
        (NAME, GROUP, WORKSPACE, EXPERIMENT, flag("--interval", convert=float)),
        jobs.job_wait,
        "Wait for a job to end; the exit code is the job's.",
    ),
    _c(
        "batchai job terminate",
        (NAME, GROUP, WORKSPACE, EXPERIMENT, YES, NO_WAIT),
        jobs.job_terminate,
        "Terminate a job.",
    ),
    _c(
        "batchai job delete",
        (NAME, GROUP, WORKSPACE, EXPERIMENT, YES, NO_WAIT),
        jobs.job_delete,
        "Delete a job.",
    ),
    _c(
        "batchai job file list",
        (*_JOB_FILE, ignored("--expiry", why="local URLs do not expire")),
        jobs.job_file_list,
        "List a job's output files.",
        tables.FILES,
    ),
    _c(
        "batchai job file stream",
        (*_JOB_FILE, flag("--file-name", "-f", required=True)),
        jobs.job_file_stream,
        "Stream a job file while the job runs.",
    ),
    _c(
        "batchai job node list",
        (flag("--job", "-j", dest="job", required=True), GROUP, WORKSPACE, EXPERIMENT),
        jobs.job_node_list,
        "List the nodes a job ran on.",
        tables.NODES,
    ),
]

TABLE = {c.path: c for c in COMMANDS}
