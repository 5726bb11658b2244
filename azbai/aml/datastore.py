"""``azbai.Datastore``: Azure ML's datastore calls, on the local workspace or passed to Azure ML.

Locally a blob container datastore is a container in the Azurite emulator (its account is an Azurite account of the
same name) and a file share datastore is a directory ``<workspace>/shares/<account>/<share>/``. Registrations are
kept by :mod:`azbai.aml.registry` in ``<workspace>/aml/datastores.json`` (name, type, account, container or share;
never a key or a SAS token: Azurite needs neither, so a local registration drops them, and an Azure ML one hands them
to the SDK only).
``workspaceblobstore`` and ``workspacefilestore`` are always there, as in every Azure ML workspace.

Transfers are verified (MD5, by the stores) and parallel; ``show_progress`` draws a bar on a terminal or in Jupyter
(:mod:`azbai.aml.progress`). With an Azure ML workspace every call goes to ``azureml.core.Datastore``.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from azbai.aml import registry
from azbai.aml.data_reference import DataReference
from azbai.aml.progress import Progress, progress_bar
from azbai.aml.registry import BLOB, FILE, load_registry, unknown_datastore
from azbai.errors import AzbaiError, StorageError
from azbai.local import transfer
from azbai.local.stores import Store, check_path, iter_local_files, open_store
from azbai.plan import model

if TYPE_CHECKING:
    from azbai.aml.workspace import Workspace

log = logging.getLogger(__name__)

_WORKERS = 8


class Datastore:
    """A registered datastore: a blob container or a file share (Azure ML's ``Datastore``).

    ``Datastore(ws, name)`` is :meth:`get`; with an Azure ML workspace both return the SDK's own datastore.
    """

    def __new__(cls, workspace: Workspace, name: str | None = None) -> Datastore:
        if workspace.azureml is not None:
            from azbai.aml import remote

            return cast(Datastore, remote.get_datastore(workspace, name))
        return super().__new__(cls)

    def __init__(self, workspace: Workspace, name: str | None = None) -> None:
        registry = load_registry(workspace)
        name = registry.default if name is None else name
        definition = registry.datastores.get(name)
        if definition is None:
            raise unknown_datastore(name, registry.datastores)
        self.workspace = workspace
        self.name = name
        self.datastore_type = definition.datastore_type
        self.account_name = definition.account_name
        self.container_name = definition.container_name

    # -- registration (class methods, as Azure ML's) -------------------------------------------------------------

    @staticmethod
    def get(workspace: Workspace, datastore_name: str) -> Datastore:
        """The registered datastore ``datastore_name``; :class:`StorageError` when there is none."""
        return Datastore(workspace, datastore_name)

    @staticmethod
    def get_default(workspace: Workspace) -> Datastore:
        """The workspace's default datastore."""
        return cast(Datastore, workspace.get_default_datastore())

    @staticmethod
    def register_azure_blob_container(
        workspace: Workspace,
        datastore_name: str,
        container_name: str,
        account_name: str,
        sas_token: str | None = None,
        account_key: str | None = None,
        protocol: str | None = None,
        endpoint: str | None = None,
        overwrite: bool = False,
        create_if_not_exists: bool = False,
        skip_validation: bool = False,
        **options: Any,
    ) -> Datastore:
        """Register a blob container as ``datastore_name`` (Azure ML's arguments; keys are never written).

        Locally the container is in Azurite, under an account of the same name; ``create_if_not_exists`` creates
        it. With an Azure ML workspace this is ``azureml.core.Datastore.register_azure_blob_container``.
        """
        arguments = dict(
            datastore_name=datastore_name, container_name=container_name, account_name=account_name,
            sas_token=sas_token, account_key=account_key, protocol=protocol, endpoint=endpoint,
            overwrite=overwrite, create_if_not_exists=create_if_not_exists, skip_validation=skip_validation,
            **options,
        )  # fmt: skip
        if workspace.azureml is not None:
            from azbai.aml import remote

            return cast(Datastore, remote.register(workspace, BLOB, arguments))
        return Datastore(workspace, registry.register(workspace, BLOB, arguments))

    @staticmethod
    def register_azure_file_share(
        workspace: Workspace,
        datastore_name: str,
        file_share_name: str,
        account_name: str,
        sas_token: str | None = None,
        account_key: str | None = None,
        protocol: str | None = None,
        endpoint: str | None = None,
        overwrite: bool = False,
        create_if_not_exists: bool = False,
        skip_validation: bool = False,
        **options: Any,
    ) -> Datastore:
        """Register an Azure File share as ``datastore_name`` (Azure ML's arguments; keys are never written).

        Locally the share is the directory ``<workspace>/shares/<account>/<share>/``; ``create_if_not_exists``
        creates it. With an Azure ML workspace this is ``azureml.core.Datastore.register_azure_file_share``.
        """
        arguments = dict(
            datastore_name=datastore_name, file_share_name=file_share_name, account_name=account_name,
            sas_token=sas_token, account_key=account_key, protocol=protocol, endpoint=endpoint,
            overwrite=overwrite, create_if_not_exists=create_if_not_exists, skip_validation=skip_validation,
            **options,
        )  # fmt: skip
        if workspace.azureml is not None:
            from azbai.aml import remote

            return cast(Datastore, remote.register(workspace, FILE, arguments))
        return Datastore(workspace, registry.register(workspace, FILE, arguments))

    # -- data references -------------------------------------------------------------------------------------------

    def path(self, path: str | None = None, data_reference_name: str | None = None) -> DataReference:
        """A reference to ``path`` on this datastore (mode mount until ``as_download``/``as_upload``)."""
        return DataReference(self, data_reference_name=data_reference_name, path_on_datastore=path)

    def as_mount(self) -> DataReference:
        """The whole datastore, mounted; its data reference is named after the datastore."""
        return DataReference(self, data_reference_name=self.name).as_mount()

    def as_download(self, path_on_compute: str | None = None) -> DataReference:
        """The whole datastore, downloaded before the run."""
        return DataReference(self, data_reference_name=self.name).as_download(path_on_compute)

    def as_upload(self, path_on_compute: str | None = None) -> DataReference:
        """The whole datastore as an output, uploaded after the run."""
        return DataReference(self, data_reference_name=self.name).as_upload(path_on_compute)

    # -- transfers -------------------------------------------------------------------------------------------------

    def upload(
        self,
        src_dir: str | os.PathLike[str],
        target_path: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> DataReference:
        """Upload the files under ``src_dir`` to ``target_path``; files already there are kept unless ``overwrite``.

        Returns a reference to ``target_path``. :class:`StorageError` when ``src_dir`` is not a directory,
        :class:`~azbai.errors.TransferError` when a file does not verify.
        """
        source = Path(src_dir)
        if not source.is_dir():
            raise StorageError(f"cannot upload {source}: it is not a directory (upload_files takes files)")
        prefix = _prefix(target_path)
        pairs = [
            (path, posixpath.join(prefix, rel) if prefix else rel) for path, rel in iter_local_files(source)
        ]
        self._upload(pairs, prefix, overwrite, show_progress, directory=source)
        return self.path(target_path)

    def upload_files(
        self,
        files: Iterable[str | os.PathLike[str]],
        relative_root: str | os.PathLike[str] | None = None,
        target_path: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> DataReference:
        """Upload ``files``, each to ``target_path/<its path below relative_root>`` (default root: their common folder)."""
        paths = [Path(f).absolute() for f in files]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise StorageError(f"cannot upload {', '.join(missing)}: no such file")
        if not paths:
            raise StorageError("upload_files needs at least one file")
        root = Path(relative_root).absolute() if relative_root is not None else None
        if root is None:
            root = Path(os.path.commonpath([str(p.parent) for p in paths]))
        prefix = _prefix(target_path)
        pairs = []
        for path in paths:
            try:
                rel = path.relative_to(root).as_posix()
            except ValueError:
                raise StorageError(f"{path} is not under relative_root {root}") from None
            pairs.append((path, posixpath.join(prefix, rel) if prefix else rel))
        self._upload(pairs, prefix, overwrite, show_progress, directory=None)
        return self.path(target_path)

    def download(
        self,
        target_path: str | os.PathLike[str],
        prefix: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> int:
        """Download the files under ``prefix`` (a folder or a file) to ``target_path/<their path>``; returns how many.

        Local files already there are kept unless ``overwrite``. Every file is verified against its MD5.
        """
        target = Path(target_path)
        store = self.store()
        base = _prefix(prefix)
        entries = []
        if store.root_exists():
            entries = [
                e for e in store.list(base) if not base or e.path == base or e.path.startswith(base + "/")
            ]
        todo = [e for e in entries if overwrite or not (target / e.path).exists()]
        if not entries:
            log.warning("nothing to download under %s", store.url_for(base))
        with progress_bar(f"download {self.name}", show_progress and bool(todo)) as progress:
            if todo and len(todo) == len(entries) and not any(e.path == base for e in entries):
                report = transfer.download(store, base, target / base if base else target, progress=progress)
                return report.files_transferred

            def one(entry_path: str) -> None:
                transfer.download(store, entry_path, target / posixpath.dirname(entry_path))

            _each([(e.path, e.size) for e in todo], one, progress)
        return len(todo)

    # -- the local side --------------------------------------------------------------------------------------------

    def store(self) -> Store:
        """The local store behind this datastore."""
        workspace = self.workspace.local_workspace()
        if self.datastore_type == FILE:
            return open_store(workspace, self.account_name, share=self.container_name)
        return open_store(workspace, self.account_name, container=self.container_name)

    def plan_datastore(self) -> model.Datastore:
        """This datastore as a plan datastore (what the local runner stages data from)."""
        kind = model.StoreKind.FILE_SHARE if self.datastore_type == FILE else model.StoreKind.BLOB_CONTAINER
        return model.Datastore(
            self.name, kind, self.account_name, self.container_name, model.CredentialKind.WORKSPACE
        )

    def _upload(
        self,
        pairs: list[tuple[Path, str]],
        prefix: str,
        overwrite: bool,
        show_progress: bool,
        directory: Path | None,
    ) -> None:
        store = self.store()
        skipped: set[str] = set()
        if not overwrite and store.root_exists():
            present = {e.path for e in store.list(prefix + "/" if prefix else "")}
            skipped = {remote for _, remote in pairs if remote in present}
            if skipped:
                log.info(
                    "%d file(s) already at %s are kept (overwrite=False)", len(skipped), store.url_for(prefix)
                )
        todo = [(local, remote) for local, remote in pairs if remote not in skipped]
        with progress_bar(f"upload {self.name}", show_progress and bool(todo)) as progress:
            if directory is not None and not skipped:
                transfer.upload(directory, store, prefix, progress=progress)
                return
            destinations = {str(local): remote for local, remote in todo}

            def one(item: str) -> None:
                transfer.upload(Path(item), store, posixpath.dirname(destinations[item]))

            _each([(str(local), local.stat().st_size) for local, _ in todo], one, progress)

    def __repr__(self) -> str:
        return (
            f"Datastore(name={self.name!r}, datastore_type={self.datastore_type!r}, "
            f"account_name={self.account_name!r}, container_name={self.container_name!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Datastore) and (
            self.name,
            self.datastore_type,
            self.account_name,
            self.container_name,
        ) == (other.name, other.datastore_type, other.account_name, other.container_name)

    def __hash__(self) -> int:
        return hash((self.name, self.datastore_type, self.account_name, self.container_name))


# -- the workspace's side ------------------------------------------------------------------------------------------


def datastores(workspace: Workspace) -> dict[str, Datastore]:
    """Every registered datastore of a local workspace, by name."""
    return {name: Datastore(workspace, name) for name in sorted(load_registry(workspace).datastores)}


def default_datastore(workspace: Workspace) -> Datastore:
    """The local workspace's default datastore."""
    return Datastore(workspace, None)


def set_default_datastore(workspace: Workspace, name: str) -> None:
    """Make ``name`` the local workspace's default datastore."""
    registry.set_default(workspace, name)


def _prefix(path: str | None) -> str:
    """A datastore path as a store prefix: no leading or trailing '/'; None and '' are the root."""
    prefix = (path or "").strip("/")
    if prefix:
        check_path(prefix)
    return prefix


def _each(items: list[tuple[str, int]], run: Callable[[str], None], progress: Progress | None) -> None:
    """Run ``run`` for every item in parallel, reporting progress by size; the first failure stops the rest."""
    total = sum(size for _, size in items)
    done = {"bytes": 0, "files": 0}
    if progress is not None:
        progress(0, total, 0, len(items))
    if not items:
        return
    with ThreadPoolExecutor(max_workers=min(_WORKERS, len(items)), thread_name_prefix="azbai-aml") as pool:
        futures = [(pool.submit(run, key), size) for key, size in items]
        try:
            for future, size in futures:
                future.result()
                done["bytes"] += size
                done["files"] += 1
                if progress is not None:
                    progress(done["bytes"], total, done["files"], len(items))
        except AzbaiError:
            for future, _ in futures:
                future.cancel()
            raise
