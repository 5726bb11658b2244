"""Batch AI mounts → Azure ML datastores, volumes and data references.

Mapping table (each row is tested):

===========================================  ==========================================  =================
Batch AI                                     Azure ML v1                                 mode
===========================================  ==========================================  =================
``azureFileShares[]`` (job or cluster)       ``Datastore.register_azure_file_share``     ``as_mount()``
``azureBlobFileSystems[]`` (job or cluster)  ``Datastore.register_azure_blob_container``  ``as_mount()``
``inputDirectories[]`` on a volume           alias into the volume's mount, or            ``as_download()``
                                             (``--inputs download``) its own reference
``outputDirectories[]`` on a volume          the same datastore, at                       ``as_upload()``
                                             ``<prefix>/<segment>/outputs[/<suffix>]``
``outputDirectories[]`` on no volume         the workspace's default datastore            ``as_upload()``
``fileServers[]`` / ``unmanagedFileSystems``  nothing (a warning; a local directory)        —
a mount used but not described               nothing (a warning; ``--cluster``/``--mount``)  —
===========================================  ==========================================  =================
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from azbai.errors import PlanError
from azbai.plan.model import (
    CredentialKind,
    DataMode,
    DataReference,
    Datastore,
    MountRoot,
    Note,
    StoreKind,
    Volume,
    VolumeKind,
)
from azbai.source.model import (
    AzureBlobFileSystemReference,
    AzureFileShareReference,
    MountVolumes,
    StorageCredentials,
)
from azbai.source.storage_names import ACCOUNT_PLACEHOLDER, container_name_problem, parse_file_share_url

#: the name Azure ML gives every workspace's default blob datastore
WORKSPACE_DEFAULT_DATASTORE = "workspaceblobstore"

_ROOT_RE = re.compile(
    r"^\$(?:\{)?(AZ_BATCHAI_JOB_MOUNT_ROOT|AZ_BATCHAI_MOUNT_ROOT)(?:\})?(?:/(?P<rest>.*))?$"
)
#: the fileMode and directoryMode Batch AI mounted a file share with when a job named none
_BATCHAI_SHARE_MODE = "0777"
_ROOT_ANYWHERE_RE = re.compile(r"\$\{?(AZ_BATCHAI_JOB_MOUNT_ROOT|AZ_BATCHAI_MOUNT_ROOT)\}?/")
#: where a mount's name ends when no described mount matches: a path segment, or a shell word's end
_FIRST_SEGMENT_RE = re.compile(r"[^/\s\"';:]+")
#: what may follow a described mount's path in a field: more of the path, or the end of a shell word
_AFTER_MOUNT = frozenset("/\"';: \t\n")


@dataclass(frozen=True)
class ExtraMount:
    """A cluster-level mount described on the command line: ``NAME=afs://ACCOUNT/SHARE[/DIR]`` or ``blob://…``."""

    relative_mount_path: str
    kind: StoreKind
    account: str
    container: str
    directory: str = ""

    @classmethod
    def parse(cls, text: str) -> ExtraMount:
        """Parse ``--mount`` syntax; :class:`PlanError` with the expected form when it does not fit."""
        head, query, _ = text.partition("?")
        if query:
            # a pasted SAS URL: the token is neither kept nor repeated in the message
            raise PlanError(
                f"--mount {head!r}?…: a query string (a SAS token?) is not taken here; the account's key comes "
                "from --storage-account-key or $AZURE_BATCHAI_STORAGE_KEY, and the datastore's credentials are set "
                "in Azure ML"
            )
        match = re.match(r"^(?P<name>[^=]+)=(?P<scheme>afs|blob)://(?P<account>[^/]+)/(?P<rest>.+)$", text)
        if not match:
            raise PlanError(
                f"--mount {text!r}: expected NAME=afs://ACCOUNT/SHARE[/DIR] or NAME=blob://ACCOUNT/CONTAINER[/DIR]"
            )
        container, _, directory = match["rest"].strip("/").partition("/")
        problem = container_name_problem(container)
        if problem:
            raise PlanError(f"--mount {text!r}: '{container}': {problem}")
        name = match["name"].strip("/")
        if name.startswith("..") or "/../" in f"/{name}/":
            raise PlanError(f"--mount {text!r}: the mount path must stay under $AZ_BATCHAI_MOUNT_ROOT")
        kind = StoreKind.FILE_SHARE if match["scheme"] == "afs" else StoreKind.BLOB_CONTAINER
        return cls(name, kind, match["account"], container, directory)


@dataclass
class StorageLayout:
    """Accumulates datastores, volumes and data references while a plan is built."""

    datastores: dict[tuple[StoreKind, str, str], Datastore] = field(default_factory=dict)
    volumes: list[Volume] = field(default_factory=list)
    references: dict[str, DataReference] = field(default_factory=dict)
    #: volume name → (datastore name, directory inside it)
    volume_targets: dict[str, tuple[str, str]] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)

    # --- building -----------------------------------------------------------------------------------------------

    def add_volumes(self, volumes: MountVolumes, root: MountRoot, path_of: Callable[[object], str]) -> None:
        """Add every mount of a ``mountVolumes`` object."""
        for share in volumes.azure_file_shares:
            self._add_share(share, root, path_of(share))
        for blob in volumes.azure_blob_file_systems:
            self._add_blob(blob, root, path_of(blob))
        for server in volumes.file_servers:
            path = path_of(server)
            self._add_volume(VolumeKind.FILE_SERVER, root, server.relative_mount_path, None, "", path)
            self.notes.append(
                Note(
                    path,
                    "nfs-unsupported",
                    "Batch AI NFS file servers have no Azure ML equivalent: copy the data to an Azure Files share or "
                    "a blob container and describe it with --mount; until then the job gets an empty local "
                    "directory here",
                )
            )
        for fs in volumes.unmanaged_file_systems:
            path = path_of(fs)
            self._add_volume(VolumeKind.UNMANAGED, root, fs.relative_mount_path, None, "", path)
            self.notes.append(
                Note(
                    path,
                    "unmanaged-mount-unsupported",
                    f"Azure ML cannot run a mount command ({fs.mount_command.split()[0]} …) on its nodes: move the "
                    "data to Azure Files or blob storage and describe it with --mount; until then the job gets an "
                    "empty local directory here",
                )
            )

    def add_extra_mount(self, mount: ExtraMount) -> None:
        """Add a ``--mount`` cluster-level volume."""
        store = self._datastore(
            mount.kind, mount.account, mount.container, CredentialKind.ACCOUNT_KEY_FROM_ENV
        )
        kind = VolumeKind.AZURE_FILE_SHARE if mount.kind is StoreKind.FILE_SHARE else VolumeKind.AZURE_BLOB
        self._add_volume(
            kind, MountRoot.CLUSTER, mount.relative_mount_path, store, mount.directory, "--mount"
        )

    def add_undescribed(self, texts: Iterable[tuple[str, str]]) -> None:
        """Add a placeholder volume for each mount a path uses that no file or flag describes."""
        for path, text in texts:
            for match in _ROOT_ANYWHERE_RE.finditer(text):
                root = MountRoot(match.group(1))
                rest = text[match.end() :]
                # a described mount's path may hold spaces ("my share"): it is matched whole, before any
                # splitting into words
                if self._described_prefix(root, rest):
                    continue
                segment = _FIRST_SEGMENT_RE.match(rest)
                if segment is None:
                    continue
                first = segment.group(0)
                if self.volume_at(root, first) is not None:
                    continue
                self._add_volume(VolumeKind.UNDESCRIBED, root, first, None, "", path)
                if root is MountRoot.CLUSTER:
                    advice = (
                        f"describe it with --cluster cluster.json (nodeSetup.mountVolumes) or with "
                        f"--mount {first}=afs://ACCOUNT/SHARE (or blob://ACCOUNT/CONTAINER)"
                    )
                else:
                    advice = "add it to mountVolumes"
                self.notes.append(
                    Note(
                        path,
                        "undescribed-mount",
                        f"uses the mount '{first}' (${root.value}/{first}) that this file does not describe; "
                        f"{advice}. Until then the job gets an empty local directory there",
                    )
                )

    def _described_prefix(self, root: MountRoot, rest: str) -> bool:
        """Whether ``rest`` (what follows ``$ROOT/`` in a field) starts with the path of a mount under ``root``."""
        for volume in self.volumes:
            rel = volume.relative_mount_path.strip("/")
            if (
                volume.root is root
                and rel
                and rest.startswith(rel)
                and (len(rest) == len(rel) or rest[len(rel)] in _AFTER_MOUNT)
            ):
                return True
        return False

    # --- resolving paths ----------------------------------------------------------------------------------------

    def volume_at(self, root: MountRoot, rest: str) -> tuple[Volume, str] | None:
        """The volume under ``root`` that holds the relative path ``rest``, and the remainder inside it."""
        best: tuple[Volume, str] | None = None
        for volume in self.volumes:
            if volume.root is not root:
                continue
            rel = volume.relative_mount_path.strip("/")
            if rest == rel or rest.startswith(rel + "/"):
                remainder = rest[len(rel) :].strip("/")
                if best is None or len(rel) > len(best[0].relative_mount_path):
                    best = (volume, remainder)
        return best

    def resolve(self, text: str) -> tuple[Volume, str] | None:
        """The volume a ``$AZ_BATCHAI_(JOB_)MOUNT_ROOT/...`` path lies on, with the remainder; None otherwise."""
        match = _ROOT_RE.match(text.rstrip("/"))
        if not match:
            return None
        rest = posixpath.normpath(match["rest"]) if match["rest"] else ""
        return self.volume_at(MountRoot(match.group(1)), "" if rest == "." else rest)

    def datastore_path(self, text: str) -> tuple[str, str] | None:
        """(datastore name, path inside it) for a path on a datastore-backed volume; None otherwise."""
        resolved = self.resolve(text)
        if resolved is None:
            return None
        volume, remainder = resolved
        target = self.volume_targets.get(volume.name)
        if target is None:
            return None
        store, directory = target
        return store, posixpath.join(directory, remainder).strip("/") if (directory or remainder) else ""

    def add_reference(self, reference: DataReference) -> str:
        """Add a data reference under a unique name; returns the name used."""
        name = unique_name(reference.name, self.references)
        self.references[name] = DataReference(
            name,
            reference.datastore,
            reference.path_on_datastore,
            reference.mode,
            reference.path_on_compute,
            reference.overwrite,
        )
        return name

    def workspace_default(self) -> str:
        """The workspace's default blob datastore, added on first use."""
        key = (StoreKind.BLOB_CONTAINER, "(workspace)", WORKSPACE_DEFAULT_DATASTORE)
        if key not in self.datastores:
            self.datastores[key] = Datastore(
                WORKSPACE_DEFAULT_DATASTORE,
                StoreKind.BLOB_CONTAINER,
                "(workspace default)",
                "(workspace default)",
                CredentialKind.WORKSPACE,
                workspace_default=True,
            )
        return WORKSPACE_DEFAULT_DATASTORE

    # --- internals ----------------------------------------------------------------------------------------------

    def _add_share(self, share: AzureFileShareReference, root: MountRoot, path: str) -> None:
        parsed = parse_file_share_url(share.azure_file_url)
        assert parsed is not None  # the reader rejects unparseable URLs
        # Batch AI mounted what the URL names; accountName only chose the key (the CLI's and the service's rule)
        account = parsed.account
        store = self._datastore(
            StoreKind.FILE_SHARE,
            account,
            parsed.share,
            *_credential(share.credentials),
            parsed.endpoint_suffix,
        )
        self._add_volume(
            VolumeKind.AZURE_FILE_SHARE, root, share.relative_mount_path, store, parsed.directory, path
        )
        for key, value in (("fileMode", share.file_mode), ("directoryMode", share.directory_mode)):
            if value is not None and value != _BATCHAI_SHARE_MODE:
                self.notes.append(
                    Note(
                        f"{path}.{key}",
                        "share-mode-ignored",
                        f"{key} {value}: Azure ML sets the permissions of the file shares it mounts itself, not "
                        "per job; ignored",
                    )
                )

    def _add_blob(self, blob: AzureBlobFileSystemReference, root: MountRoot, path: str) -> None:
        store = self._datastore(
            StoreKind.BLOB_CONTAINER, blob.account_name, blob.container_name, *_credential(blob.credentials)
        )
        self._add_volume(VolumeKind.AZURE_BLOB, root, blob.relative_mount_path, store, "", path)
        if blob.mount_options:
            self.notes.append(
                Note(
                    path + ".mountOptions",
                    "mount-options-ignored",
                    "blobfuse mount options are not configurable in Azure ML v1; ignored",
                )
            )

    def _datastore(
        self,
        kind: StoreKind,
        account: str,
        container: str,
        credential: CredentialKind,
        secret_url: str | None = None,
        endpoint: str = "core.windows.net",
    ) -> str:
        key = (kind, account, container)
        existing = self.datastores.get(key)
        if existing is not None:
            return existing.name
        suffix = "share" if kind is StoreKind.FILE_SHARE else "blob"
        name = f"{sanitize(container)}_{suffix}"
        if any(d.name == name for d in self.datastores.values()):
            name = f"{name}_{sanitize(account) if account != ACCOUNT_PLACEHOLDER else 'account'}"
        name = unique_name(name, {d.name for d in self.datastores.values()})
        self.datastores[key] = Datastore(
            name,
            kind,
            account,
            container,
            credential,
            endpoint=endpoint,
            account_placeholder=account == ACCOUNT_PLACEHOLDER,
            key_secret_url=secret_url,
        )
        return name

    def _add_volume(
        self, kind: VolumeKind, root: MountRoot, rel: str, store: str | None, directory: str, path: str
    ) -> None:
        rel = posixpath.normpath(rel.replace("\\", "/")).strip("/")
        base = sanitize(rel) if root is MountRoot.JOB else f"cluster_{sanitize(rel)}"
        name = unique_name(base, {v.name for v in self.volumes})
        reference = None
        if store is not None:
            reference = self.add_reference(DataReference(name, store, directory, DataMode.MOUNT))
            self.volume_targets[name] = (store, directory)
        self.volumes.append(Volume(name, kind, root, rel, reference, path))


def _credential(credentials: StorageCredentials | None) -> tuple[CredentialKind, str | None]:
    if credentials is not None and credentials.account_key_secret_reference is not None:
        return CredentialKind.KEY_VAULT, credentials.account_key_secret_reference.secret_url
    return CredentialKind.ACCOUNT_KEY_FROM_ENV, None


def sanitize(text: str) -> str:
    """A lower-case identifier made of letters, digits and ``_``, starting with a letter."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_").lower() or "x"
    return name if name[0].isalpha() else f"x_{name}"


def unique_name(base: str, taken: Iterable[str]) -> str:
    """``base``, or ``base_2``, ``base_3``… — the first not in ``taken``."""
    taken = set(taken)
    if base not in taken:
        return base
    index = 2
    while f"{base}_{index}" in taken:
        index += 1
    return f"{base}_{index}"
