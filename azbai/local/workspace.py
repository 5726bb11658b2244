"""The local workspace: where the embedded default keeps its state (``./.azbai/`` unless told otherwise).

Layout::

    .azbai/
      azurite/                 Azurite's blob data (``--location``)
      azurite.json             the running emulator: pid, port, accounts (no keys)
      azurite-accounts         the accounts it serves, with Azurite's public development key (read by its hook)
      azurite.log              Azurite's stdout and stderr
      azurite.lock             serialises starting and stopping the emulator
      shares/<account>/<share>/  Azure File shares (Azurite has none): plain directories
      shares/<account>/.<share>.md5.json  the shares' MD5 index (outside the share, so jobs never see it)
      cluster-mounts/<name>/   undescribed cluster mounts and NFS/unmanaged volumes: plain directories
      jobs/<experiment>/<job>/ job records, work directories, launcher state
      pipelines/               local pipeline runs and the step-reuse cache
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

WORKSPACE_ENV = "AZBAI_WORKSPACE"
DEFAULT_WORKSPACE = ".azbai"


@dataclass(frozen=True)
class Workspace:
    """Paths of one local workspace. Creating the object does no I/O; :meth:`ensure` creates the root."""

    root: Path

    @classmethod
    def resolve(cls, root: str | os.PathLike[str] | None = None) -> Workspace:
        """``root``, else ``$AZBAI_WORKSPACE``, else ``./.azbai`` — as an absolute path."""
        chosen = root or os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE
        return cls(Path(chosen).expanduser().resolve())

    def ensure(self) -> Workspace:
        """Create the root directory (and return self)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def azurite_dir(self) -> Path:
        """Azurite's data directory."""
        return self.root / "azurite"

    @property
    def azurite_state(self) -> Path:
        """The file describing the running emulator."""
        return self.root / "azurite.json"

    @property
    def azurite_accounts(self) -> Path:
        """The accounts a running emulator serves (read by azbai's Azurite hook; the public dev key only)."""
        return self.root / "azurite-accounts"

    @property
    def azurite_log(self) -> Path:
        """Where the emulator's output goes."""
        return self.root / "azurite.log"

    @property
    def azurite_lock(self) -> Path:
        """The lock file that serialises starting and stopping the emulator."""
        return self.root / "azurite.lock"

    def share_dir(self, account: str, share: str) -> Path:
        """The directory that stands for an Azure File share."""
        return self.root / "shares" / account / share

    def share_index(self, account: str, share: str) -> Path:
        """The MD5 index of a share's files (a sibling of the share directory, never inside it)."""
        return self.root / "shares" / account / f".{share}.md5.json"

    def cluster_mount_dir(self, name: str) -> Path:
        """The directory that stands for a mount Azure storage cannot provide locally."""
        return self.root / "cluster-mounts" / name

    @property
    def jobs_dir(self) -> Path:
        """Job records and work directories."""
        return self.root / "jobs"

    @property
    def pipelines_dir(self) -> Path:
        """Local pipeline runs and the step-reuse cache."""
        return self.root / "pipelines"
