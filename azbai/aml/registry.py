"""Local datastore registrations: ``<workspace>/aml/datastores.json``, with a format number and no credential.

Each registration is a name, a type (``AzureBlob``, ``AzureFile``), an account and a container or share.
``workspaceblobstore`` and ``workspacefilestore`` (on ``devstoreaccount1``) are always there and are not written.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azbai.errors import StorageError
from azbai.local.azurite import DEV_ACCOUNT, Emulator, check_account_name
from azbai.local.records import load_record, save_record
from azbai.local.stores import check_container_name

if TYPE_CHECKING:
    from azbai.aml.workspace import Workspace

log = logging.getLogger(__name__)

#: the format of ``<workspace>/aml/datastores.json``
REGISTRY_FORMAT = 1
BLOB, FILE = "AzureBlob", "AzureFile"
DEFAULT_BLOB_STORE = "workspaceblobstore"
DEFAULT_FILE_STORE = "workspacefilestore"
_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,255}")


@dataclass(frozen=True)
class Definition:
    """What a registration records: no credential."""

    datastore_type: str
    account_name: str
    container_name: str


BUILT_IN = {
    DEFAULT_BLOB_STORE: Definition(BLOB, DEV_ACCOUNT, DEFAULT_BLOB_STORE),
    DEFAULT_FILE_STORE: Definition(FILE, DEV_ACCOUNT, DEFAULT_FILE_STORE),
}


@dataclass
class Registry:
    """The registrations of a local workspace."""

    default: str = DEFAULT_BLOB_STORE
    datastores: dict[str, Definition] = field(default_factory=dict)


def _registry_file(workspace: Workspace) -> Path:
    return workspace.local_workspace().root / "aml" / "datastores.json"


def load_registry(workspace: Workspace) -> Registry:
    """The workspace's registrations (the built-in datastores included)."""
    path = _registry_file(workspace)
    registry = Registry(datastores=dict(BUILT_IN))
    if path.exists():

        def build(data: dict[str, Any]) -> Registry:
            stores = {name: Definition(**value) for name, value in data["datastores"].items()}
            return Registry(str(data["default"]), {**BUILT_IN, **stores})

        registry = load_record(
            path,
            REGISTRY_FORMAT,
            "datastore registry",
            StorageError,
            build,
            hint="remove it to register again",
        )
    return registry


def save_registry(workspace: Workspace, registry: Registry) -> None:
    """Write the registrations (without the built-in ones, and without any credential)."""
    stores = {
        name: {
            "datastore_type": d.datastore_type,
            "account_name": d.account_name,
            "container_name": d.container_name,
        }
        for name, d in sorted(registry.datastores.items())
        if BUILT_IN.get(name) != d
    }
    path = _registry_file(workspace)
    try:
        save_record(path, {"default": registry.default, "datastores": stores}, REGISTRY_FORMAT)
    except OSError as exc:
        raise StorageError(f"cannot write the datastore registry {path}: {exc.strerror or exc}") from exc


def check_datastore_name(name: str) -> str:
    """A datastore name as Azure ML allows it: letters, digits and underscores."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise StorageError(f"invalid datastore name {name!r}: use letters, digits and underscores")
    return name


def unknown_datastore(name: str, known: Iterable[str]) -> StorageError:
    """The error for a datastore the workspace does not have, with a did-you-mean."""
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return StorageError(f"the workspace has no datastore {name!r} (registered: {', '.join(names)}){hint}")


def set_default(workspace: Workspace, name: str) -> None:
    """Make ``name`` the local workspace's default datastore."""
    registry = load_registry(workspace)
    if name not in registry.datastores:
        raise unknown_datastore(name, registry.datastores)
    registry.default = name
    save_registry(workspace, registry)


def register(workspace: Workspace, datastore_type: str, arguments: dict[str, Any]) -> str:
    """Record a local registration (Azure ML's arguments); returns the datastore's name."""
    name = check_datastore_name(arguments["datastore_name"])
    container = arguments["container_name"] if datastore_type == BLOB else arguments["file_share_name"]
    check_container_name(container, "container" if datastore_type == BLOB else "share")
    account = check_account_name(arguments["account_name"])
    definition = Definition(datastore_type, account, container)
    registry = load_registry(workspace)
    existing = registry.datastores.get(name)
    if name in BUILT_IN and existing != definition:
        raise StorageError(f"{name!r} is the workspace's own datastore; register yours under another name")
    if existing is not None and existing != definition and not arguments["overwrite"]:
        raise StorageError(
            f"datastore {name!r} is already registered for {existing.account_name}/{existing.container_name}; "
            "pass overwrite=True to replace it"
        )
    for key in ("protocol", "endpoint"):
        if arguments.get(key):
            log.debug("%s=%r has no meaning locally (Azurite serves every account)", key, arguments[key])
    # account_key and sas_token are not kept: Azurite serves every local account with its development key
    if arguments["create_if_not_exists"]:
        _create(workspace, definition)
    registry.datastores[name] = definition
    save_registry(workspace, registry)
    log.info("registered datastore %s: %s %s/%s", name, datastore_type, account, container)
    return name


def _create(workspace: Workspace, definition: Definition) -> None:
    local = workspace.local_workspace()
    if definition.datastore_type == FILE:
        local.share_dir(definition.account_name, definition.container_name).mkdir(parents=True, exist_ok=True)
        return
    from azure.core.exceptions import AzureError, ResourceExistsError

    service = Emulator(local).blob_service(definition.account_name)
    try:
        service.create_container(definition.container_name)
    except ResourceExistsError:
        pass
    except AzureError as exc:
        raise StorageError(
            f"cannot create container {definition.container_name!r} in account {definition.account_name!r}: "
            f"{type(exc).__name__}"
        ) from exc
