"""Local namespaces for ``azbai az``: resource groups, storage accounts, Batch AI workspaces, experiments, clusters.

Azure kept these in Resource Manager; azbai keeps one small record per object under ``<workspace>/az/``::

    az/storage-accounts/<account>.json                    name, group, location, sku (never a key)
    az/groups/<group>/group.json                          name, location
    az/groups/<group>/workspaces/<ws>/workspace.json
    az/groups/<group>/workspaces/<ws>/clusters/<c>/cluster.json     vm size, nodes, mounts (no keys), setup task
    az/groups/<group>/workspaces/<ws>/clusters/<c>/nodes/<node>/    a simulated node: its setup task's state
    az/groups/<group>/workspaces/<ws>/experiments/<e>/experiment.json
    az/groups/<group>/workspaces/<ws>/experiments/<e>/jobs/<job>.json   the job's cluster and its local record
    az/groups/<group>/workspaces/<ws>/experiments/<e>/fragments/<job>.mounts.json   a job's --afs/--bfs/--nfs mounts

Resource names compare case-insensitively, as in Azure (directories use the lower-case name; records keep the name
as given). A job runs as an ordinary local job (``azbai job``); its record lives in the workspace's job book under
an experiment key unique to ``group/workspace/experiment`` (:func:`book_experiment`), so two experiments — or two
workspaces — may hold jobs of the same name.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azbai.errors import AzError
from azbai.local import blobfuse
from azbai.local.records import load_record, save_record
from azbai.local.workspace import Workspace

#: the format of every record here
FORMAT = 1
#: the subscription every local resource id names
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"

_GROUP_RE = re.compile(r"^[-\w.()]{1,90}$")
_NAME_RE = re.compile(r"^[-\w]{1,64}$")
_ACCOUNT_RE = re.compile(r"^[a-z0-9]{3,24}$")


def not_found(kind: str, path: str, group: str) -> AzError:
    """Resource Manager's message for a missing resource."""
    return AzError(f"The Resource '{kind}/{path}' under resource group '{group}' was not found.")


def check_group_name(name: str) -> str:
    """Resource group names: letters, digits, '-', '_', '.', '(', ')', up to 90, not ending with '.'."""
    if not _GROUP_RE.match(name) or name.endswith(".") or name in (".", ".."):
        raise AzError(
            f"Resource group '{name}' is invalid: use up to 90 letters, digits, '-', '_', '.', '(' and ')', "
            "not ending with '.'"
        )
    return name


def check_resource_name(name: str, what: str) -> str:
    """Batch AI names (workspaces, clusters, experiments, jobs): letters, digits, '-' and '_', up to 64."""
    if not _NAME_RE.match(name):
        raise AzError(f"The {what} name '{name}' is invalid: use up to 64 letters, digits, '-' and '_'")
    return name


def check_account_name(name: str) -> str:
    """Storage account names: 3-24 lowercase letters and digits."""
    if not _ACCOUNT_RE.match(name):
        raise AzError(
            f"{name} is not a valid storage account name. Storage account name must be between 3 and 24 "
            "characters in length and use numbers and lower-case letters only."
        )
    return name


def book_experiment(group: str, workspace: str, experiment: str) -> str:
    """The experiment name under which the local job book keeps the jobs of ``group/workspace/experiment``."""
    digest = hashlib.sha1(f"{group}/{workspace}/{experiment}".lower().encode()).hexdigest()[:10]
    return f"{digest}-{experiment}"[:64]


@dataclass(frozen=True)
class Namespace:
    """The az records of one local workspace."""

    workspace: Workspace

    @property
    def root(self) -> Path:
        """``<workspace>/az``."""
        return self.workspace.root / "az"

    # -- paths ---------------------------------------------------------------------------------------------------

    def group_dir(self, group: str) -> Path:
        """A resource group's directory."""
        return self.root / "groups" / check_group_name(group).lower()

    def workspace_dir(self, group: str, workspace: str) -> Path:
        """A Batch AI workspace's directory."""
        return self.group_dir(group) / "workspaces" / check_resource_name(workspace, "workspace").lower()

    def cluster_dir(self, group: str, workspace: str, cluster: str) -> Path:
        """A cluster's directory (its record, its simulated nodes)."""
        return (
            self.workspace_dir(group, workspace)
            / "clusters"
            / check_resource_name(cluster, "cluster").lower()
        )

    def experiment_dir(self, group: str, workspace: str, experiment: str) -> Path:
        """An experiment's directory."""
        name = check_resource_name(experiment, "experiment").lower()
        return self.workspace_dir(group, workspace) / "experiments" / name

    def job_file(self, group: str, workspace: str, experiment: str, job: str) -> Path:
        """A job's az record (its cluster, its job.json properties without secrets, its job book key)."""
        name = check_resource_name(job, "job").lower()
        return self.experiment_dir(group, workspace, experiment) / "jobs" / f"{name}.json"

    def account_file(self, account: str) -> Path:
        """A storage account's record."""
        return self.root / "storage-accounts" / f"{check_account_name(account)}.json"

    # -- records -------------------------------------------------------------------------------------------------

    def save(self, path: Path, data: dict[str, Any]) -> None:
        """Write a record (with its format number)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        save_record(path, data, FORMAT)

    def load(self, path: Path) -> dict[str, Any]:
        """Read a record; :class:`AzError` for a damaged or foreign one."""
        return load_record(path, FORMAT, "azbai az record", AzError, dict, hint=f"remove {path}")

    def group(self, group: str) -> dict[str, Any]:
        """A resource group's record; az's message when it does not exist."""
        path = self.group_dir(group) / "group.json"
        if not path.exists():
            raise AzError(f"Resource group '{group}' could not be found.")
        return self.load(path)

    def batchai_workspace(self, group: str, workspace: str) -> dict[str, Any]:
        """A Batch AI workspace's record; Resource Manager's message when it (or its group) does not exist."""
        self.group(group)
        path = self.workspace_dir(group, workspace) / "workspace.json"
        if not path.exists():
            raise not_found("Microsoft.BatchAI/workspaces", workspace, group)
        return self.load(path)

    def experiment(self, group: str, workspace: str, experiment: str) -> dict[str, Any]:
        """An experiment's record; Resource Manager's message when it does not exist."""
        self.batchai_workspace(group, workspace)
        path = self.experiment_dir(group, workspace, experiment) / "experiment.json"
        if not path.exists():
            raise not_found("Microsoft.BatchAI/workspaces", f"{workspace}/experiments/{experiment}", group)
        return self.load(path)

    def cluster(self, group: str, workspace: str, cluster: str) -> dict[str, Any]:
        """A cluster's record; Resource Manager's message when it does not exist."""
        self.batchai_workspace(group, workspace)
        path = self.cluster_dir(group, workspace, cluster) / "cluster.json"
        if not path.exists():
            raise not_found("Microsoft.BatchAI/workspaces", f"{workspace}/clusters/{cluster}", group)
        return self.load(path)

    def job(self, group: str, workspace: str, experiment: str, job: str) -> dict[str, Any]:
        """A job's az record; Resource Manager's message when it does not exist."""
        self.experiment(group, workspace, experiment)
        path = self.job_file(group, workspace, experiment, job)
        if not path.exists():
            raise not_found(
                "Microsoft.BatchAI/workspaces", f"{workspace}/experiments/{experiment}/jobs/{job}", group
            )
        return self.load(path)

    def has_account(self, account: str) -> bool:
        """Whether ``account`` was made with ``az storage account create`` here (False for an invalid name)."""
        return bool(_ACCOUNT_RE.match(account)) and self.account_file(account).exists()

    def account(self, account: str) -> dict[str, Any] | None:
        """A storage account created with ``az storage account create`` (None: not created here)."""
        path = self.account_file(account)
        return self.load(path) if path.exists() else None

    # -- listings ------------------------------------------------------------------------------------------------

    def records(self, pattern: str, base: Path | None = None) -> Iterator[dict[str, Any]]:
        """The records matching a glob ``pattern`` under ``base`` (default: the root), sorted by path."""
        base = base or self.root
        for path in sorted(base.glob(pattern)):
            yield self.load(path)

    def accounts_of(self, group: str) -> list[dict[str, Any]]:
        """The storage accounts created in ``group``."""
        return [
            a for a in self.records("storage-accounts/*.json") if a["resourceGroup"].lower() == group.lower()
        ]

    def remove(self, path: Path) -> None:
        """Forget a record or a record directory.

        Lazy blob mounts under it are detached first: a dead one (its CLI was killed during a setup task) would
        fail the walk, and a live one would be emptied through the mount."""
        if path.is_dir():
            blobfuse.detach_under(path)
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def resource_id(group: str, *parts: str) -> str:
    """An ARM id: ``/subscriptions/…/resourceGroups/G/providers/…``."""
    base = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}"
    return base + ("/providers/" + "/".join(parts) if parts else "")
