"""The local workspace's datastores and computes, as ``az ml datastore|compute create -f`` registers them.

Kept in ``<workspace>/ml/datastores/<name>.json`` and ``<workspace>/ml/computes/<name>.json`` (with a format
number). A datastore says where its data lives locally:

==================  ============================================================================================
datastore           local store
==================  ============================================================================================
``azure_blob``      the container ``container_name`` of the Azurite account ``account_name`` (the local account,
                    ``$AZURE_BATCHAI_STORAGE_ACCOUNT`` or ``devstoreaccount1``, when the file has the placeholder
                    ``<AZURE_BATCHAI_STORAGE_ACCOUNT>``)
``azure_file``      the share directory ``file_share_name`` of that account
workspaceblobstore  always there: the workspace default, the container ``workspaceblobstore`` of ``devstoreaccount1``
==================  ============================================================================================

Credentials given with ``--set credentials.account_key=…`` are accepted and never kept: Azurite and the share
directories need none.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from azbai.errors import MlError
from azbai.local.azurite import DEV_ACCOUNT
from azbai.local.records import load_record, save_record, strict_fields
from azbai.local.stores import Store, open_store
from azbai.local.workspace import Workspace
from azbai.ml import loaders

#: the format of the registry's files
REGISTRY_FORMAT = 1
ACCOUNT_PLACEHOLDER = "<AZURE_BATCHAI_STORAGE_ACCOUNT>"
LOCAL_ACCOUNT_ENV = "AZURE_BATCHAI_STORAGE_ACCOUNT"
DEFAULT_DATASTORE = "workspaceblobstore"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$")


@dataclass(frozen=True)
class DatastoreRecord:
    """A registered datastore: its type and where it lives (never a credential)."""

    name: str
    type: str  # "azure_blob" or "azure_file"
    account: str
    container: str
    file: str = ""

    def open(self, workspace: Workspace) -> Store:
        """The local store of this datastore."""
        if self.type == "azure_file":
            return open_store(workspace, self.account, share=self.container)
        return open_store(workspace, self.account, container=self.container)


@dataclass(frozen=True)
class ComputeRecord:
    """A registered compute: what ``az ml compute show`` would say of its size and scale."""

    name: str
    type: str
    size: str | None
    min_instances: int | None
    max_instances: int | None
    tier: str | None
    file: str = ""


def local_account(name: str | None) -> str:
    """The Azurite account standing for a datastore's ``account_name``."""
    if not name or name == ACCOUNT_PLACEHOLDER:
        return os.environ.get(LOCAL_ACCOUNT_ENV) or DEV_ACCOUNT
    return name


class Registry:
    """Datastores and computes of one local workspace."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.root = workspace.root / "ml"

    # -- datastores ------------------------------------------------------------------------------------------------

    def create_datastore(self, path: Path, sets: dict[str, str] | None = None) -> DatastoreRecord:
        """``az ml datastore create -f FILE [--set k=v]``: register (or replace) the file's datastore."""
        entity = loaders.load_datastore(path, sets)
        kind = {"AzureBlobDatastore": "azure_blob", "AzureFileDatastore": "azure_file"}.get(
            type(entity).__name__
        )
        if kind == "azure_blob":
            container = entity.container_name
        elif kind == "azure_file":
            container = entity.file_share_name
        else:
            raise MlError(f"{path}: a {type(entity).__name__} has no local stand-in (azure_blob, azure_file)")
        record = DatastoreRecord(
            _check(entity.name, "datastore"),
            kind,
            local_account(entity.account_name),
            container,
            str(Path(path).resolve()),
        )
        save_record(self._file("datastores", record.name), asdict(record), REGISTRY_FORMAT)
        return record

    def register(self, record: DatastoreRecord) -> DatastoreRecord:
        """Register a datastore described in code (an SDK v1 pipeline's), not by a file."""
        save_record(
            self._file("datastores", _check(record.name, "datastore")), asdict(record), REGISTRY_FORMAT
        )
        return record

    def datastore(self, name: str) -> DatastoreRecord:
        """A datastore by name; ``workspaceblobstore`` always exists."""
        if name == DEFAULT_DATASTORE and not self._file("datastores", name).exists():
            return DatastoreRecord(DEFAULT_DATASTORE, "azure_blob", DEV_ACCOUNT, DEFAULT_DATASTORE)
        file = self._file("datastores", _check(name, "datastore"))
        if not file.exists():
            known = ", ".join(d.name for d in self.datastores()) or "none"
            raise MlError(
                f"datastore {name!r} does not exist in this workspace (known: {known}); "
                f"create it first: azbai ml datastore create -f datastores/{name}.yml"
            )
        return load_record(
            file, REGISTRY_FORMAT, "datastore record", MlError,
            lambda d: DatastoreRecord(**strict_fields(DatastoreRecord, d)),
        )  # fmt: skip

    def datastores(self) -> list[DatastoreRecord]:
        """Every registered datastore."""
        folder = self.root / "datastores"
        names = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
        return [self.datastore(n) for n in names]

    # -- computes --------------------------------------------------------------------------------------------------

    def create_compute(self, path: Path, sets: dict[str, str] | None = None) -> ComputeRecord:
        """``az ml compute create -f FILE``: record its size and instance counts."""
        entity = loaders.load_compute(path, sets)
        record = ComputeRecord(
            _check(entity.name, "compute"),
            str(getattr(entity.type, "value", entity.type)),
            getattr(entity, "size", None),
            getattr(entity, "min_instances", None),
            getattr(entity, "max_instances", None),
            getattr(entity, "tier", None),
            str(Path(path).resolve()),
        )
        save_record(self._file("computes", record.name), asdict(record), REGISTRY_FORMAT)
        return record

    def compute(self, name: str) -> ComputeRecord:
        """A compute by name (``azureml:`` prefix allowed)."""
        name = name.removeprefix("azureml:")
        file = self._file("computes", _check(name, "compute"))
        if not file.exists():
            known = ", ".join(c.name for c in self.computes()) or "none"
            raise MlError(
                f"compute {name!r} does not exist in this workspace (known: {known}); "
                f"create it first: azbai ml compute create -f computes/{name}.yml"
            )
        return load_record(
            file, REGISTRY_FORMAT, "compute record", MlError,
            lambda d: ComputeRecord(**strict_fields(ComputeRecord, d)),
        )  # fmt: skip

    def computes(self) -> list[ComputeRecord]:
        """Every registered compute."""
        folder = self.root / "computes"
        names = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
        return [self.compute(n) for n in names]

    def _file(self, kind: str, name: str) -> Path:
        return self.root / kind / f"{name}.json"


def _check(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise MlError(f"{name!r} is not a valid {what} name")
    return name
